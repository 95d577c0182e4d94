"""The stream sweep: S = seeds x learning rates streams in one vmapped session per image, each equal to
the standalone online stream with that seed and learning rate (sharded runs: tests/test_parallel.py)."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import sweep_interactive as sweep_config
from yiplearn.experiments import adapt_interactive, interactive_setup, seg_common, sweep_interactive
from yiplearn.interactive import rules
from yiplearn.interactive import session as session_lib
from yiplearn.io import checkpoints


def _tiny(tmp_path):
  """A quick sweep from a saved (randomly initialised) model: no pre-training in the test."""
  c = sweep_config.get_config('quick,seeds=0;1,lrs=1e-4;1e-2,clicks=3,n=2')
  model = seg_common.make_unet(c.model, 3)
  params = jax.jit(model.init)(jax.random.PRNGKey(3), jnp.zeros((1, 32, 32, 6)))
  checkpoints.Checkpointer(tmp_path / 'model', max_to_keep=1).save(0, params)
  c.checkpoint_dir = str(tmp_path / 'model')
  return c


def test_sweep_streams_equal_standalone_streams(tmp_path):
  c = _tiny(tmp_path)
  out = sweep_interactive.run(c, str(tmp_path))
  rows = out['rows']
  assert [(r['seed'], r['lr']) for r in rows] == [(0, 1e-4), (0, 1e-2), (1, 1e-4), (1, 1e-2)]
  for r in rows:
    assert 0 <= r['cup_dice@1'] <= 1 and 1 <= r['disc_noc@90'] <= 3 and r['skipped'] == 0
    assert (
      2 * 2 <= r['updates'] <= 2 * (2 + 2)
    )  # per image: PI's 2 updates + up to T - 1 = 2 MI updates
  table = json.loads((tmp_path / 'results' / 'sweep_camera_c.json').read_text())
  assert len(table['rows']) == 4
  by_lr = json.loads((tmp_path / 'results' / 'sweep_camera_c_by_lr.json').read_text())['rows']
  assert [r['lr'] for r in by_lr] == [1e-4, 1e-2] and all(r['seeds'] == 2 for r in by_lr)
  np.testing.assert_allclose(
    by_lr[1]['disc_auc'], np.mean([rows[1]['disc_auc'], rows[3]['disc_auc']])
  )

  # Stream (seed 1, lr 1e-2) is the standalone online stream (adapt_interactive's session) with that seed and lr.
  data = seg_common.load_segmentation(c.targets['camera_c'], str(tmp_path))
  adapt_cfg = c.copy_and_resolve_references()
  adapt_cfg.optim.lr = 1e-2
  model, params = adapt_interactive.load_pretrained(adapt_cfg, 3, 3, data['images'].shape[1])
  spec = interactive_setup.spec_from_config(adapt_cfg)
  rule = interactive_setup.rule_from_config(adapt_cfg, 'pi_mi')
  tx = rules.make_optimizer(1e-2)
  single = session_lib.make_session(model, spec, rule, tx=tx)
  _, res = session_lib.run_stream(
    single,
    rules.init_state(rule, params, tx),
    data['images'],
    data['masks'],
    jax.random.fold_in(jax.random.PRNGKey(1), 0),
  )
  curves = {
    n: np.stack([r['union_dice'][:, i] for r in res]) for i, (n, _) in enumerate(spec.report_unions)
  }
  ref = adapt_interactive.summarize(curves, 3)
  for k, v in ref.items():
    np.testing.assert_allclose(rows[3][k], v, atol=1e-5, err_msg=k)
  assert rows[3]['updates'] == sum(int(r['updates']) for r in res)
  # The learning rate matters (stream 2 is the same seed with lr 1e-4): the comparison is not vacuous.
  assert (rows[2]['disc_auc'], rows[2]['cup_auc']) != (rows[3]['disc_auc'], rows[3]['cup_auc'])


def test_sweep_validation(tmp_path):
  good = _tiny(tmp_path)
  c = good.copy_and_resolve_references()
  c.lrs = (1e-4, -1.0)
  with pytest.raises(ValueError, match=r'lrs=\(0.0001, -1.0\)'):
    sweep_interactive.run(c, str(tmp_path))
  c = good.copy_and_resolve_references()
  c.method = 'magic'
  with pytest.raises(ValueError, match='magic'):
    sweep_interactive.run(c, str(tmp_path))
