"""The fixed-model click evaluator: perfect and empty predictors, batching equals per-image runs, the
session's click step (frozen rule) and the previous-mask channel."""

import jax
import jax.numpy as jnp
import numpy as np

from yiplearn.interactive import evaluation, rules
from yiplearn.interactive import session as S
from yiplearn.interactive.spec import SessionSpec

SPEC = SessionSpec(num_classes=3, num_clicks=4, sigma=2.0, radius=2.0)


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
  gt = jnp.asarray(gts[0])
  spec = SPEC._replace(report=(('disc', (1, 2)), ('cup', (2,))))
  out = jax.jit(evaluation.make_interact(perfect, spec))(gt, img, gt, jax.random.PRNGKey(0))
  np.testing.assert_allclose(out['disc'], 1.0)
  np.testing.assert_allclose(out['cup'], 1.0)
  spec = SPEC._replace(report=(('disc', (1, 2)),))
  out = jax.jit(evaluation.make_interact(empty, spec))(
    jnp.zeros(()), img, gt, jax.random.PRNGKey(0)
  )
  np.testing.assert_allclose(out['disc'], 0.0)


def _near_clicks(params, x):
  """Class 1 within 2 px of each click of any class (channels 1..3 are the guidance maps)."""
  guidance = x[..., 1:4].max(axis=-1)
  fg = 10.0 * (guidance > 0.5) - 5.0 + params * x[..., -1]
  return jnp.stack([jnp.zeros_like(guidance), fg, -10.0 * jnp.ones_like(guidance)], -1)


def test_batching_matches_single_runs_and_the_frozen_session():
  gts = _gts(5)
  images = np.zeros((5, 16, 16, 1), np.float32)
  spec = SPEC._replace(num_clicks=5, report=(('disc', (1, 2)),))
  ev = evaluation.make_evaluator(_near_clicks, spec, batch_size=2)
  key = jax.random.PRNGKey(3)
  scores = ev(jnp.zeros(()), images, gts, key)
  assert set(scores) == {'disc@1', 'disc@5', 'disc_auc', 'dice@1', 'dice@5'}
  keys = jax.random.split(key, 5)
  session = S.make_session(_near_clicks, spec, rules.frozen(), jit=False)
  state = evaluation.frozen_state(jnp.zeros(()))
  single = jax.jit(lambda im, gt, k: session(state, im, gt, k)[1].union_dice[:, 0])
  singles = [single(jnp.asarray(images[i]), jnp.asarray(gts[i]), keys[i]) for i in range(5)]
  np.testing.assert_allclose(scores['disc@5'], np.mean([s[4] for s in singles]), rtol=1e-6)
  np.testing.assert_allclose(scores['disc@1'], np.mean([s[0] for s in singles]), rtol=1e-6)
  assert scores['disc@5'] > scores['disc@1'] > 0.0


def test_validation_feeds_the_previous_mask_channel():
  """With prev_mask the model sees the previous prediction's foreground: a model that predicts it
  everywhere once it is shown scores higher from click 2 on than without the channel."""
  gts = _gts(2)
  images = np.zeros((2, 16, 16, 1), np.float32)
  spec = SPEC._replace(report=(('disc', (1, 2)),), prev_mask=True)
  ev = evaluation.make_evaluator(_near_clicks, spec)
  with_mask = ev(jnp.float32(20.0), images, gts, jax.random.PRNGKey(0))  # mask channel x 20
  without = ev(jnp.float32(0.0), images, gts, jax.random.PRNGKey(0))
  assert with_mask['disc@1'] == without['disc@1']  # click 1: the mask channel is all zeros
  assert with_mask['disc@4'] != without['disc@4']
