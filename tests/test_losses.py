"""Losses against direct numpy evaluations of their formulas (DESIGN.md 1.1)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from yiplearn import losses
from yiplearn.clicks import Clicks


def _clicks(coords, labels, valid):
  return Clicks(
    jnp.asarray(coords, jnp.int32), jnp.asarray(labels, jnp.int32), jnp.asarray(valid, bool)
  )


def _np_softmax(x):
  x = x.astype(np.float64)
  e = np.exp(x - x.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


def _rand(seed, h=20, w=24, k=3, scale=2.0):
  rng = np.random.default_rng(seed)
  logits = rng.normal(size=(h, w, k)).astype(np.float32) * scale
  target = rng.integers(0, k, size=(h, w)).astype(np.int32)
  return logits, target


def _np_ccg(logits, target, coords, labels, valid, sigma, variant):
  """Direct double loop over clicks and explicit windows."""
  h, w, k = logits.shape
  p = _np_softmax(logits)
  window = 3 * sigma if variant == 'paper' else 10
  total = 0.0
  n = 0
  for (ci, cj), lab, v in zip(coords, labels, valid):
    if not v:
      continue
    n += 1
    for i in range(h):
      for j in range(w):
        if abs(i - ci) > window or abs(j - cj) > window or target[i, j] != lab:
          continue
        g = np.exp(-((i - ci) ** 2 + (j - cj) ** 2) / (2 * sigma**2))
        pt = p[i, j, target[i, j]]
        total += g * (-np.log(pt) if variant == 'paper' else np.log(np.e + k - 1) - pt)
  if variant == 'paper':
    return total / (max(n, 1) * h * w)
  return total / (h * w)


CLICK_SETS = [
  # (coords, labels, valid)
  ([[5, 6]], [1], [True]),
  (
    [[0, 0], [19, 23], [10, 12]],
    [0, 2, 1],
    [True, True, True],
  ),  # corners: windows cut by the border
  (
    [[2, 21], [17, 1], [9, 9], [3, 3]],
    [2, 1, 0, 2],
    [True, False, True, False],
  ),  # invalid clicks ignored
  ([[4, 4], [4, 5]], [1, 1], [False, False]),  # no valid click -> 0
]


@pytest.mark.parametrize('variant', ['paper', 'released'])
@pytest.mark.parametrize('case', range(len(CLICK_SETS)))
@pytest.mark.parametrize('sigma', [3.0, 2.0])
def test_ccg_matches_direct_formula(variant, case, sigma):
  logits, target = _rand(case)
  coords, labels, valid = CLICK_SETS[case]
  got = losses.ccg_loss(
    jnp.asarray(logits),
    jnp.asarray(target),
    _clicks(coords, labels, valid),
    sigma=sigma,
    variant=variant,
  )
  want = _np_ccg(logits, target, np.array(coords), labels, valid, sigma, variant)
  np.testing.assert_allclose(float(got), want, rtol=2e-5, atol=1e-9)
  if not any(valid):
    assert float(got) == 0.0


def test_ccg_window_is_inclusive_and_variant_windows_differ():
  h = w = 31
  logits = jnp.zeros((h, w, 2))
  target = jnp.ones((h, w), jnp.int32)
  c = _clicks([[15, 15]], [1], [True])
  wts = np.asarray(losses.ccg_weights(c, target, 2, sigma=3.0, window=9.0))
  assert wts[15, 15] == pytest.approx(1.0)
  assert wts[15, 24] > 0 and wts[15, 25] == 0 and wts[6, 6] > 0 and wts[5, 15] == 0
  # Released: +-10 px window -> one more ring of pixels counts.
  paper = float(losses.ccg_loss(logits, target, c, sigma=3.0, variant='paper'))
  released = float(losses.ccg_loss(logits, target, c, sigma=3.0, variant='released'))
  g1 = np.exp(-(np.arange(-9, 10) ** 2) / 18.0).sum() ** 2
  g2 = np.exp(-(np.arange(-10, 11) ** 2) / 18.0).sum() ** 2
  np.testing.assert_allclose(paper, g1 * np.log(2) / (h * w), rtol=1e-5)
  np.testing.assert_allclose(released, g2 * (np.log(np.e + 1) - 0.5) / (h * w), rtol=1e-5)


def test_ccg_only_counts_pixels_of_the_click_class():
  logits, _ = _rand(7, 16, 16, 2)
  target = np.zeros((16, 16), np.int32)
  c = _clicks([[8, 8]], [1], [True])  # click of class 1, no pixel of class 1 in the target
  assert float(losses.ccg_loss(jnp.asarray(logits), jnp.asarray(target), c)) == 0.0


def test_ccg_rejects_unknown_variant():
  with pytest.raises(ValueError, match='variant'):
    losses.ccg_loss(
      jnp.zeros((4, 4, 2)),
      jnp.zeros((4, 4), jnp.int32),
      _clicks([[0, 0]], [0], [True]),
      variant='nope',
    )


def _np_dice(logits, target, k, exclude_background=True, eps=1e-5):
  p = _np_softmax(logits)
  g = np.eye(k)[target]
  per = [
    1 - (2 * (p[..., c] * g[..., c]).sum() + eps) / (p[..., c].sum() + g[..., c].sum() + eps)
    for c in range(k)
  ]
  return np.mean(per[1:] if exclude_background else per)


@pytest.mark.parametrize('k', [2, 3])
@pytest.mark.parametrize('exclude', [True, False])
def test_dice_loss_matches_numpy(k, exclude):
  logits, target = _rand(k, k=k)
  got = losses.dice_loss(jnp.asarray(logits), jnp.asarray(target), k, exclude_background=exclude)
  np.testing.assert_allclose(float(got), _np_dice(logits, target, k, exclude), rtol=1e-5)


def test_dice_loss_batch_is_mean_of_images():
  l1, t1 = _rand(1)
  l2, t2 = _rand(2)
  batch = losses.dice_loss(jnp.stack([l1, l2]), jnp.stack([t1, t2]), 3)
  np.testing.assert_allclose(
    float(batch), (_np_dice(l1, t1, 3) + _np_dice(l2, t2, 3)) / 2, rtol=1e-5
  )


def test_perfect_logits_give_zero_dice_and_focal():
  _, target = _rand(3)
  logits = jax.nn.one_hot(target, 3) * 50.0
  assert float(losses.dice_loss(logits, jnp.asarray(target), 3)) < 1e-6
  assert float(losses.focal_loss(logits, jnp.asarray(target))) < 1e-12
  assert float(losses.dice_focal(logits, jnp.asarray(target), 3)) < 1e-6
  # Empty foreground classes predicted empty: Dice loss (eps-smoothed) is 0, not 1.
  zeros = jnp.zeros((8, 8), jnp.int32)
  assert float(losses.dice_loss(jax.nn.one_hot(zeros, 3) * 50.0, zeros, 3)) < 1e-6


@pytest.mark.parametrize('gamma', [0.0, 0.5, 2.0])
def test_focal_matches_numpy(gamma):
  logits, target = _rand(11)
  p = _np_softmax(logits)
  pt = np.take_along_axis(p, target[..., None], -1)[..., 0]
  want = np.mean(-((1 - pt) ** gamma) * np.log(pt))
  got = losses.focal_loss(jnp.asarray(logits), jnp.asarray(target), gamma=gamma)
  np.testing.assert_allclose(float(got), want, rtol=1e-5)


def test_focal_gamma0_is_cross_entropy():
  logits, target = _rand(12)
  ce = jnp.mean(losses.cross_entropy(jnp.asarray(logits), jnp.asarray(target)))
  np.testing.assert_allclose(
    float(losses.focal_loss(jnp.asarray(logits), jnp.asarray(target), gamma=0.0)),
    float(ce),
    rtol=1e-6,
  )


def test_dice_focal_combination():
  logits, target = _rand(13)
  lg, tg = jnp.asarray(logits), jnp.asarray(target)
  want = 0.3 * losses.dice_loss(lg, tg, 3) + 0.7 * losses.focal_loss(lg, tg)
  np.testing.assert_allclose(float(losses.dice_focal(lg, tg, 3)), float(want), rtol=1e-6)
  want = 0.5 * losses.dice_loss(lg, tg, 3) + 0.5 * losses.focal_loss(lg, tg, gamma=1.0)
  np.testing.assert_allclose(
    float(losses.dice_focal(lg, tg, 3, alpha=0.5, gamma=1.0)), float(want), rtol=1e-6
  )


def test_entropy_and_clicked_ce_and_soft_ce():
  logits, _ = _rand(14)
  p = _np_softmax(logits)
  np.testing.assert_allclose(
    float(losses.entropy_loss(jnp.asarray(logits))), np.mean(-(p * np.log(p)).sum(-1)), rtol=1e-5
  )
  coords, labels, valid = [[0, 0], [5, 7], [19, 23]], [2, 0, 1], [True, True, False]
  want = -(np.log(p[0, 0, 2]) + np.log(p[5, 7, 0])) / 2
  got = losses.clicked_pixel_ce(jnp.asarray(logits), _clicks(coords, labels, valid))
  np.testing.assert_allclose(float(got), want, rtol=1e-5)
  assert (
    float(losses.clicked_pixel_ce(jnp.asarray(logits), _clicks(coords, labels, [False] * 3))) == 0.0
  )
  ref, _ = _rand(15)
  q = _np_softmax(ref)
  np.testing.assert_allclose(
    float(losses.soft_cross_entropy(jnp.asarray(logits), jnp.asarray(ref))),
    np.mean(-(q * np.log(p)).sum(-1)),
    rtol=1e-5,
  )


def test_gradients_finite_for_saturated_logits():
  _, target = _rand(16)
  tg = jnp.asarray(target)
  logits = jax.nn.one_hot(tg, 3) * 1e4  # p_t == 1 exactly in float32
  c = _clicks([[3, 3], [10, 10]], [1, 2], [True, True])

  def total(lg):
    return (
      losses.dice_focal(lg, tg, 3)
      + 200 * losses.ccg_loss(lg, tg, c)
      + losses.ccg_loss(lg, tg, c, variant='released')
      + losses.focal_loss(lg, tg, gamma=0.5)
      + losses.entropy_loss(lg)
      + losses.clicked_pixel_ce(lg, c)
    )

  val, grad = jax.value_and_grad(total)(logits)
  assert np.isfinite(float(val)) and np.all(np.isfinite(np.asarray(grad)))
  wrong = jax.nn.one_hot((tg + 1) % 3, 3) * 1e4
  val, grad = jax.value_and_grad(total)(wrong)
  assert np.isfinite(float(val)) and np.all(np.isfinite(np.asarray(grad)))


def test_shape_validation():
  with pytest.raises(ValueError, match='target.shape=.4, 5.: expected'):
    losses.dice_loss(jnp.zeros((4, 4, 2)), jnp.zeros((4, 5), jnp.int32), 2)
  with pytest.raises(ValueError, match='num_classes'):
    losses.dice_loss(jnp.zeros((4, 4, 2)), jnp.zeros((4, 4), jnp.int32), 3)
