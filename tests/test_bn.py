"""BatchNorm statistics of merged models (yiplearn.merging.bn) and their use by the merge methods."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from yiplearn import errors
from yiplearn.merging import adamerging, bn, online, static
from yiplearn.merging import tree as tr
from yiplearn.models.resnet import resnet_classifier

MODEL = resnet_classifier(3, (1,), (4,))


@functools.lru_cache(maxsize=1)
def _family(k=2):
  rng = np.random.default_rng(0)
  calib = jnp.asarray(rng.normal(size=(12, 8, 8, 1)), jnp.float32)
  base = MODEL.init(jax.random.key(0), calib[:2])
  leaves, treedef = jax.tree.flatten(base)
  experts = [
    jax.tree.unflatten(
      treedef,
      [
        a + 0.3 * jax.random.uniform(jax.random.fold_in(jax.random.key(10 + j), i), a.shape)
        for i, a in enumerate(leaves)
      ],
    )
    for j in range(k)
  ]
  return base, experts, calib


def _stem_conv_output(variables, x):
  """The stem convolution's output (the first BatchNorm's input), captured from the forward pass."""
  enc = {
    'params': variables['params']['encoder'],
    'batch_stats': variables['batch_stats']['encoder'],
  }
  _, state = MODEL.encoder.apply(
    enc,
    x,
    train=True,
    mutable=['batch_stats', 'intermediates'],
    capture_intermediates=lambda mdl, _: mdl.name == 'stem',
  )
  return np.asarray(state['intermediates']['stem']['__call__'][0], np.float64)


def _check_own_statistics(v, calib):
  # numpy reference for the first BatchNorm: mean and (biased) variance of its input over N, H, W.
  h = _stem_conv_output(v, calib)
  stats = v['batch_stats']['encoder']['BatchNorm_stem']
  np.testing.assert_allclose(stats['mean'], h.mean((0, 1, 2)), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(stats['var'], h.var((0, 1, 2)), rtol=1e-4, atol=1e-6)
  # Every layer: eval mode with the stored statistics = training mode on the calibration batch.
  np.testing.assert_allclose(
    MODEL.apply(v, calib, train=False), MODEL.apply(v, calib, train=True), rtol=1e-4, atol=1e-4
  )


def test_static_merge_recomputed_statistics_are_its_own_on_the_calibration_set():
  base, experts, calib = _family()
  method = online.fixed_model(
    MODEL, lambda ex, b: static.mean_merge(ex), bn_mode='recompute', calibration=calib
  )
  v = method.init(tr.stack(experts), base).variables
  np.testing.assert_allclose(  # parameters: the plain mean merge
    v['params']['encoder']['stem']['kernel'],
    np.mean([e['params']['encoder']['stem']['kernel'] for e in experts], 0),
    rtol=1e-6,
  )
  _check_own_statistics(v, calib)
  # The experts' averaged statistics are not those statistics (the test can fail).
  merged = static.mean_merge(tr.stack(experts))
  assert not np.allclose(
    merged['batch_stats']['encoder']['BatchNorm_stem']['var'],
    v['batch_stats']['encoder']['BatchNorm_stem']['var'],
    rtol=1e-3,
  )


def test_recompute_without_a_known_momentum_equals_with_it():
  base, _, calib = _family()

  class NoMomentum:  # the Classifier interface without `encoder.bn_momentum`
    encoder = None
    encode_with_updates = staticmethod(MODEL.encode_with_updates)

  a = bn.recompute(MODEL, base, calib)
  b = bn.recompute(NoMomentum(), base, calib)
  for x, y in zip(jax.tree.leaves(a['batch_stats']), jax.tree.leaves(b['batch_stats'])):
    np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-6)
  _check_own_statistics(a, calib)


def test_merge_coefficients_normalise_statistics_rows_only():
  tree = {'params': {'w': jnp.zeros(2)}, 'batch_stats': {'var': jnp.zeros(2)}}
  c = bn.merge_coefficients(tree, jnp.asarray([1.0, 3.0]))
  # Flattening order: batch_stats before params.
  np.testing.assert_allclose(c, [[0.25, 0.75], [1.0, 3.0]])
  np.testing.assert_allclose(bn.normalised(jnp.asarray([-1.0, 0.0])), [0.5, 0.5])
  np.testing.assert_allclose(bn.normalised(jnp.asarray([2.0, -1.0, 2.0])), [0.5, 0.0, 0.5])


@pytest.mark.parametrize('layerwise', [False, True])
def test_adamerging_variances_stay_positive_up_to_the_clip_bound(layerwise):
  """Coefficients at clip_max = 1 for every expert (sum K = 2): merging the running variances with
  them, as parameters, makes them negative; AdaMerging merges them with the normalised coefficients
  (the experts' mean), so its forward pass equals the model with averaged statistics."""
  base, experts, calib = _family()
  big = lambda v, s: dict(v, batch_stats=jax.tree.map(lambda a: a * 0 + s, v['batch_stats']))
  base = big(base, 4.0)  # the base's variances exceed both experts'
  experts = [big(experts[0], 1.0), big(experts[1], 0.5)]
  stacked = tr.stack(experts)
  raw = tr.merge(base, tr.task_vectors(stacked, base), jnp.ones(2))
  assert np.min(jax.tree.leaves(raw['batch_stats'])) < 0  # 4 + (1 - 4) + (0.5 - 4) = -2.5
  method = adamerging.adamerging(
    MODEL, 2, layerwise=layerwise, init_value=1.0, clip_max=1.0, learning_rate=1e-9
  )
  state, logits, _ = jax.jit(method.update)(method.init(stacked, base), calib)
  assert int(state.skipped) == 0 and np.all(np.isfinite(logits))
  ref = dict(
    tr.merge(base, tr.task_vectors(stacked, base), jnp.ones(2)),
    batch_stats=static.mean_merge(stacked['batch_stats']),
  )
  np.testing.assert_allclose(logits, MODEL.apply(ref, calib), rtol=1e-4, atol=1e-4)


def test_modes_are_checked():
  with pytest.raises(errors.UserError, match='bn_mode'):
    online.fixed_model(MODEL, static.mean_merge, bn_mode='running')
  with pytest.raises(errors.UserError, match='calibration'):
    online.fixed_model(MODEL, static.mean_merge, bn_mode='recompute')
  with pytest.raises(errors.UserError, match='calibration'):
    adamerging.adamerging(MODEL, 2, bn_mode='recompute')


def test_entropy_adaptive_candidates_with_recomputed_statistics():
  """bn_mode='recompute' scores each candidate with statistics re-estimated for its own merge."""
  base, experts, calib = _family()
  stacked = tr.stack(experts)
  tau = tr.task_vectors(stacked, base)
  x = calib[:4] + 0.5
  cands = jnp.asarray([[1.0, 0.0], [0.5, 0.5], [0.2, 0.8]])
  got = online.score_candidates(
    MODEL, base, tau, x, cands, bn_mode='recompute', calibration=calib, chunk_size=2
  )
  ref = [
    online.entropy_score(MODEL.apply(bn.recompute(MODEL, tr.merge(base, tau, lam), calib), x))
    for lam in cands
  ]
  np.testing.assert_allclose(got, np.asarray(ref), rtol=1e-4, atol=1e-5)
  merged_stats = [online.entropy_score(MODEL.apply(tr.merge(base, tau, lam), x)) for lam in cands]
  assert not np.allclose(np.asarray(ref), np.asarray(merged_stats), rtol=1e-3)
