"""The fixed-model click evaluator: perfect and empty predictors, batching equals per-image runs."""

import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from yiplearn.interactive import evaluation

CLICKS = ml_collections.ConfigDict(
  {'encoding': 'gaussian', 'sigma': 2.0, 'radius': 2.0, 'policy': 'random_in_largest'}
)


def _gts(n=3, size=16, seed=0):
  rng = np.random.default_rng(seed)
  gts = np.zeros((n, size, size), np.int32)
  for i in range(n):
    r, c = rng.integers(2, size - 8, 2)
    gts[i, r : r + 6, c : c + 5] = 1
    gts[i, r + 2 : r + 4, c + 1 : c + 3] = 2
  return gts


def test_perfect_predictor_scores_one_and_empty_scores_zero():
  gts = _gts()
  # "params" is the ground truth itself: logits = 10 * one_hot(gt), whatever the input.
  perfect = lambda params, x: 10.0 * jax.nn.one_hot(params, 3)[None]
  empty = lambda params, x: jnp.zeros(x.shape[:3] + (3,)).at[..., 0].set(1.0)
  img = jnp.zeros((16, 16, 1))
  run = lambda model, params, gt, key, report: jax.jit(
    functools.partial(
      evaluation.interact, model, num_classes=3, num_clicks=4, click_cfg=CLICKS, report=report
    )
  )(params, img, gt, key)
  gt = jnp.asarray(gts[0])
  out = run(perfect, gt, gt, jax.random.PRNGKey(0), {'disc': (1, 2), 'cup': (2,)})
  np.testing.assert_allclose(out['disc'], 1.0)
  np.testing.assert_allclose(out['cup'], 1.0)
  out = run(empty, None, gt, jax.random.PRNGKey(0), {'disc': (1, 2)})
  np.testing.assert_allclose(out['disc'], 0.0)


def test_clicks_reach_the_model_and_batching_matches_single_runs():
  gts = _gts(5)

  # A model that predicts class 1 within 2 px of each click of any class: Dice grows with clicks.
  def near_clicks(params, x):
    guidance = x[..., 1:].max(axis=-1)
    return jnp.stack(
      [jnp.zeros_like(guidance), 10.0 * (guidance > 0.5) - 5.0, -10.0 * jnp.ones_like(guidance)], -1
    )

  images = np.zeros((5, 16, 16, 1), np.float32)
  ev = evaluation.make_evaluator(
    near_clicks,
    num_classes=3,
    num_clicks=5,
    click_cfg=CLICKS,
    report={'disc': (1, 2)},
    batch_size=2,
  )
  key = jax.random.PRNGKey(3)
  scores = ev(None, images, gts, key)
  assert set(scores) == {'disc@1', 'disc@5', 'disc_auc', 'dice@1', 'dice@5'}
  keys = jax.random.split(key, 5)
  single = jax.jit(
    functools.partial(
      evaluation.interact,
      near_clicks,
      None,
      num_classes=3,
      num_clicks=5,
      click_cfg=CLICKS,
      report={'disc': (1, 2)},
    )
  )
  singles = [single(jnp.asarray(images[i]), jnp.asarray(gts[i]), keys[i])['disc'] for i in range(5)]
  np.testing.assert_allclose(scores['disc@5'], np.mean([s[4] for s in singles]), rtol=1e-6)
  np.testing.assert_allclose(scores['disc@1'], np.mean([s[0] for s in singles]), rtol=1e-6)
  assert scores['disc@5'] > scores['disc@1'] > 0.0
