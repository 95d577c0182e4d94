"""Every jitted update skips a non-finite loss/gradient/update and counts it, and the count reaches the
results: the interactive session, pre-training's step, Tent and AdaMerging on merged models, the
expert-training step, a merge_online stream. Loading never unpickles."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import interactive_fundus
from yiplearn import optim
from yiplearn.experiments import merge_online, pretrain, train_experts
from yiplearn.interactive import rules
from yiplearn.interactive import session as session_lib
from yiplearn.interactive.spec import SessionSpec
from yiplearn.io import files
from yiplearn.merging import adamerging, tent
from yiplearn.merging import tree as tr
from yiplearn.models.resnet import resnet_classifier

K, H, W = 3, 12, 12


def toy_apply(params, x):  # (N, H, W, Cin) -> (N, H, W, K): a per-pixel linear map
  return jnp.einsum('nhwc,ck->nhwk', x, params['w']) + params['b']


def toy_params(cin):
  rng = np.random.default_rng(0)
  return {
    'w': jnp.asarray(rng.normal(size=(cin, K)) * 0.3, jnp.float32),
    'b': jnp.zeros((K,), jnp.float32),
  }


def _gt():
  gt = np.zeros((H, W), np.int32)
  gt[3:9, 2:8] = 1
  gt[4:7, 4:6] = 2
  return gt


def test_session_skips_and_counts_updates_of_a_nan_image():
  spec, rule, tx = (
    SessionSpec(num_classes=K, num_clicks=3),
    rules.make('pi_mi'),
    rules.make_optimizer(),
  )
  params = toy_params(1 + K)
  session = session_lib.make_session(toy_apply, spec, rule, tx=tx)
  image = np.full((H, W, 1), np.nan, np.float32)
  state, out = session(rules.init_state(rule, params, tx), image, _gt(), jax.random.PRNGKey(0))
  assert int(out.updates) >= 2 and int(out.skipped) == int(
    out.updates
  )  # every attempt skipped, counted
  np.testing.assert_array_equal(
    np.asarray(state.params['w']), np.asarray(params['w'])
  )  # params untouched
  state, out = session(
    state, np.ones((H, W, 1), np.float32) * (_gt()[..., None] > 0), _gt(), jax.random.PRNGKey(1)
  )
  assert (
    int(out.skipped) == 0 and int(state.skipped) >= 2
  )  # a finite image updates; the total is kept


def test_pretrain_step_skips_a_nan_batch():
  config = interactive_fundus.get_config('quick,stage=pretrain')
  config.clicks.max_clicks = 2
  tx = pretrain.make_optimizer(config.optim)
  params = toy_params(3 + K)
  w0 = np.asarray(params['w'])  # the step donates its state
  state = optim.init_train_state(params, tx)
  step = pretrain.make_train_step(toy_apply, tx, config)
  masks = jnp.asarray(np.stack([_gt(), _gt()]))
  state, metrics = step(state, jnp.full((2, H, W, 3), jnp.nan), masks, jax.random.PRNGKey(0))
  assert (
    not np.isfinite(float(metrics['loss'])) and int(state.skipped) == 1 and int(state.step) == 1
  )
  np.testing.assert_array_equal(np.asarray(state.params['w']), w0)
  state, _ = step(state, jnp.ones((2, H, W, 3)), masks, jax.random.PRNGKey(0))
  assert int(state.skipped) == 1 and not np.array_equal(np.asarray(state.params['w']), w0)


@pytest.fixture(scope='module')
def family():
  model = resnet_classifier(4, stage_sizes=(1,), widths=(4,))
  x = jnp.asarray(np.random.default_rng(0).normal(size=(4, 8, 8, 1)), jnp.float32)
  base = model.init(jax.random.PRNGKey(0), x)
  experts = [jax.tree.map(lambda a, i=i: a + 0.01 * (i + 1), base) for i in range(2)]
  return model, base, experts, x


def test_tent_and_adamerging_count_skipped_updates(family):
  model, base, experts, x = family
  stacked = tr.stack(experts)
  nan_x = jnp.full_like(x, jnp.nan)
  for method, steps in (
    (tent.tent(model, learning_rate=1e-2), 1),
    (adamerging.adamerging(model, 2, learning_rate=1e-2, steps=2), 2),
  ):
    state = method.init(stacked, base)
    update = jax.jit(method.update)
    state, _, _ = update(state, nan_x)
    assert int(state.skipped) == steps
    state, _, _ = update(state, x)
    assert int(state.skipped) == steps  # finite batches are not counted


def test_expert_training_counts_skipped_steps(family):
  model, base, _, x = family
  y = np.array([0, 1, 2, 3])
  stats = {}
  out = train_experts.train(
    model, base, np.asarray(x), y, steps=2, batch_size=4, lr=float('nan'), seed=0, stats=stats
  )
  assert stats == {'skipped': 2}  # a NaN learning rate makes every update non-finite
  for a, b in zip(jax.tree.leaves(out), jax.tree.leaves(base)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  train_experts.train(
    model, base, np.asarray(x), y, steps=2, batch_size=4, lr=1e-3, seed=0, stats=stats
  )
  assert stats == {'skipped': 0}


def test_merge_stream_result_reports_skipped(family, tmp_path):
  model, base, experts, x = family
  method = adamerging.adamerging(model, 2, learning_rate=1e-2, steps=1)
  batches = [
    {
      'image': np.full((4, 8, 8, 1), np.nan, np.float32),
      'label': np.zeros(4, np.int64),
      'domain': np.array(['a'] * 4),
    }
    for _ in range(3)
  ]
  res, _ = merge_online.run_stream_resumable(
    jax.jit(method.update),
    lambda: method.init(tr.stack(experts), base),
    batches,
    stream_dir=str(tmp_path),
    name='ada__nan',
    meta={'method': 'ada'},
    checkpoint_every=2,
  )
  assert res['skipped'] == 3 and res['n'] == 12
  assert files.read_json(tmp_path / 'ada__nan.json')['skipped'] == 3


def test_loading_an_npz_never_unpickles(tmp_path):
  path = tmp_path / 'stream.npz'
  np.savez(path, union=np.zeros((2, 3)), evil=np.array([{'a': 1}], dtype=object))
  with pytest.raises(ValueError, match=r'stream.npz.*Object arrays cannot be loaded.*never loaded'):
    files.read_npz(path)
  np.savez(path, union=np.ones((2, 3), np.float32), names=np.asarray(['disc', 'cup']))
  z = files.read_npz(path)
  assert z['names'].tolist() == ['disc', 'cup'] and z['union'].sum() == 6
