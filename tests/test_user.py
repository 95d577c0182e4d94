"""Tests for yiplearn.interactive.user (simulated user) against scipy references."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.ndimage as ndi

from yiplearn.interactive import user

EIGHT = np.ones((3, 3), dtype=int)


def ref_error_components(target, pred, k):
  """All (a, b != a) error components via scipy: list of (size, first_flat_index, mask)."""
  comps = []
  for a in range(k):
    for b in range(k):
      if a == b:
        continue
      lab, n = ndi.label((target == a) & (pred == b), structure=EIGHT)
      for i in range(1, n + 1):
        m = lab == i
        comps.append((int(m.sum()), int(np.flatnonzero(m)[0]), m))
  # Largest first; ties: first pixel in raster order.
  comps.sort(key=lambda t: (-t[0], t[1]))
  return comps


def ref_deepest(mask):
  d = ndi.distance_transform_edt(np.pad(mask, 1))[1:-1, 1:-1]
  d = np.where(mask, d, -1)
  return d, np.unravel_index(np.argmax(d), mask.shape)


def random_maps(rng, shape, k, n_blobs=6):
  """Blobby class maps: a target and a perturbed prediction."""
  rr, cc = np.mgrid[: shape[0], : shape[1]]
  target = np.zeros(shape, np.int32)
  for _ in range(n_blobs):
    r0, c0 = rng.integers(0, shape[0]), rng.integers(0, shape[1])
    rad = rng.uniform(2, shape[0] / 4)
    target[(rr - r0) ** 2 + (cc - c0) ** 2 <= rad**2] = rng.integers(1, k)
  pred = target.copy()
  for _ in range(n_blobs):
    r0, c0 = rng.integers(0, shape[0]), rng.integers(0, shape[1])
    rad = rng.uniform(1, shape[0] / 5)
    pred[(rr - r0) ** 2 + (cc - c0) ** 2 <= rad**2] = rng.integers(0, k)
  noise = rng.random(shape) < 0.03
  pred[noise] = rng.integers(0, k, size=int(noise.sum()))
  return target, pred


corr_rand = jax.jit(
  lambda key, t, p: user.correction_click(key, t, p, 3, policy='random_in_largest')
)
corr_deep = jax.jit(lambda key, t, p: user.correction_click(key, t, p, 3, policy='deepest'))


def test_correction_click_in_largest_component_random():
  rng = np.random.default_rng(0)
  for trial in range(8):
    target, pred = random_maps(rng, (32, 32), 3)
    comps = ref_error_components(target, pred, 3)
    assert comps, 'test maps should contain errors'
    largest = comps[0][2]
    for s in range(3):
      coord, label, valid = corr_rand(
        jax.random.PRNGKey(trial * 10 + s), jnp.asarray(target), jnp.asarray(pred)
      )
      r, c = np.asarray(coord)
      assert bool(valid)
      assert largest[r, c], (trial, s)
      assert int(label) == target[r, c]


def test_correction_click_deepest_is_edt_max():
  rng = np.random.default_rng(1)
  for _ in range(6):
    target, pred = random_maps(rng, (32, 32), 3)
    largest = ref_error_components(target, pred, 3)[0][2]
    d, (r0, c0) = ref_deepest(largest)
    coord, label, valid = corr_deep(jax.random.PRNGKey(0), jnp.asarray(target), jnp.asarray(pred))
    r, c = np.asarray(coord)
    assert bool(valid) and largest[r, c]
    assert d[r, c] == pytest.approx(d.max())
    assert (r, c) == (r0, c0)  # ties -> first in raster order
    assert int(label) == target[r, c]


def test_deepest_hand_example():
  # A 5x7 error rectangle at the image corner: the border counts as boundary,
  # so the deepest point is the centre row, first of the tied centre columns.
  target = np.zeros((10, 10), np.int32)
  target[0:5, 0:7] = 1
  coord, label, valid = jax.jit(
    lambda k, t, p: user.correction_click(k, t, p, 2, policy='deepest')
  )(jax.random.PRNGKey(0), jnp.asarray(target), jnp.zeros((10, 10), jnp.int32))
  assert bool(valid) and int(label) == 1
  assert tuple(np.asarray(coord)) == (2, 2)


def test_random_click_is_uniform_over_component():
  target = np.zeros((12, 12), np.int32)
  target[2:4, 3:6] = 1  # 6-pixel component, the largest
  target[8, 8] = 1
  t, p = jnp.asarray(target), jnp.zeros((12, 12), jnp.int32)
  f = jax.jit(jax.vmap(lambda k: user.correction_click(k, t, p, 2)[0]))
  coords = np.asarray(f(jax.random.split(jax.random.PRNGKey(3), 1200)))
  flat = coords[:, 0] * 12 + coords[:, 1]
  allowed = np.flatnonzero(target[:, :] * (np.arange(144).reshape(12, 12) < 100))
  assert set(flat.tolist()) == set(allowed.tolist())
  counts = np.bincount(flat, minlength=144)[allowed]
  assert counts.min() > 120 and counts.max() < 280  # ~200 each


def test_perfect_prediction_no_click():
  rng = np.random.default_rng(2)
  target, _ = random_maps(rng, (32, 32), 3)
  t = jnp.asarray(target)
  for pol, corr in (('random_in_largest', corr_rand), ('deepest', corr_deep)):
    coord, label, valid = corr(jax.random.PRNGKey(0), t, t)
    assert not bool(valid) and int(label) == 0
    clicks = jax.jit(lambda k, a, b: user.simulate_clicks(k, a, b, 3, 4, policy=pol))(
      jax.random.PRNGKey(0), t, t
    )
    assert not np.asarray(clicks.valid).any()
  coord, label, valid = jax.jit(user.first_click)(
    jax.random.PRNGKey(0), jnp.zeros((8, 8), jnp.int32)
  )
  assert not bool(valid)


def test_exclude_removes_pixels():
  target = np.zeros((16, 16), np.int32)
  target[0:6, 0:6] = 1  # 36 px, largest
  target[10:13, 10:13] = 2  # 9 px
  t, p = jnp.asarray(target), jnp.zeros((16, 16), jnp.int32)
  coord, label, valid = jax.jit(lambda k, a, b, e: user.correction_click(k, a, b, 3, exclude=e))(
    jax.random.PRNGKey(0), t, p, jnp.asarray(target == 1)
  )
  assert bool(valid) and int(label) == 2
  assert 10 <= int(coord[0]) < 13 and 10 <= int(coord[1]) < 13


def ref_first_click_region(gt):
  """The largest single-class foreground component (ties: first pixel in raster order)."""
  comps = []
  for k in range(1, int(gt.max()) + 1):
    lab, n = ndi.label(gt == k, structure=EIGHT)
    for i in range(1, n + 1):
      m = lab == i
      comps.append((-int(m.sum()), int(np.flatnonzero(m)[0]), m))
  return min(comps, key=lambda t: t[:2])[2]


def test_first_click_in_largest_single_class_component():
  rng = np.random.default_rng(4)
  fc = jax.jit(lambda k, g: user.first_click(k, g))
  fcd = jax.jit(lambda k, g: user.first_click(k, g, policy='deepest'))
  for trial in range(6):
    gt, _ = random_maps(rng, (32, 32), 3)
    largest = ref_first_click_region(gt)
    coord, label, valid = fc(jax.random.PRNGKey(trial), jnp.asarray(gt))
    r, c = np.asarray(coord)
    assert bool(valid) and largest[r, c] and int(label) == gt[r, c] > 0
    coord, label, valid = fcd(jax.random.PRNGKey(trial), jnp.asarray(gt))
    assert tuple(np.asarray(coord)) == ref_deepest(largest)[1]


def fundus_mask(size, disc, cup, cup_shift=(0, 0)):
  """Background 0, rim 1 (disc minus cup), cup 2: discs of radius `disc` and `cup`."""
  rr, cc = np.mgrid[:size, :size] - size // 2
  gt = np.zeros((size, size), np.int32)
  gt[rr**2 + cc**2 <= disc**2] = 1
  gt[(rr - cup_shift[0]) ** 2 + (cc - cup_shift[1]) ** 2 <= cup**2] = 2
  return gt


@pytest.mark.parametrize('policy', user.POLICIES)
def test_fundus_first_click_is_the_larger_of_rim_and_cup(policy):
  """Against an empty prediction: the rim when its component is the larger, else the cup."""
  fc = jax.jit(lambda k, g: user.first_click(k, g, policy=policy))
  cases = [(12, 5, (0, 0)), (12, 7, (1, -1)), (12, 9, (0, 0)), (12, 10, (0, 1)), (10, 6, (2, 0))]
  seen = set()
  for i, (disc, cup, shift) in enumerate(cases):
    gt = fundus_mask(32, disc, cup, shift)
    rim, cupm = gt == 1, gt == 2
    assert ndi.label(rim, structure=EIGHT)[1] == 1  # the rim is one component here
    want = 1 if rim.sum() > cupm.sum() else 2
    seen.add(want)
    for s in range(3):
      coord, label, valid = fc(jax.random.PRNGKey(10 * i + s), jnp.asarray(gt))
      r, c = np.asarray(coord)
      assert bool(valid) and int(label) == want == gt[r, c], (disc, cup, rim.sum(), cupm.sum())
  assert seen == {1, 2}  # both outcomes are exercised


@pytest.mark.parametrize('policy', user.POLICIES)
def test_simulate_clicks_distinct_components_by_size(policy):
  rng = np.random.default_rng(5)
  sim = jax.jit(lambda k, t, p: user.simulate_clicks(k, t, p, 3, 6, policy=policy))
  for trial in range(4):
    target, pred = random_maps(rng, (32, 32), 3)
    comps = ref_error_components(target, pred, 3)
    clicks = sim(jax.random.PRNGKey(trial), jnp.asarray(target), jnp.asarray(pred))
    coords = np.asarray(clicks.coords)
    valid = np.asarray(clicks.valid)
    n_expect = min(6, len(comps))
    assert valid.sum() == n_expect and valid[:n_expect].all()
    for i in range(n_expect):
      r, c = coords[i]
      assert comps[i][2][r, c], (trial, i)  # i-th largest component, distinct
      assert int(clicks.labels[i]) == target[r, c]
      if policy == 'deepest':
        assert (r, c) == ref_deepest(comps[i][2])[1]


def test_simulate_clicks_matches_repeated_correction_with_exclusion():
  rng = np.random.default_rng(6)
  target, pred = random_maps(rng, (24, 24), 3)
  t, p = jnp.asarray(target), jnp.asarray(pred)
  clicks = jax.jit(lambda k, a, b: user.simulate_clicks(k, a, b, 3, 4, policy='deepest'))(
    jax.random.PRNGKey(0), t, p
  )
  excl = np.zeros((24, 24), bool)
  comps = ref_error_components(target, pred, 3)
  corr = jax.jit(lambda k, a, b, e: user.correction_click(k, a, b, 3, policy='deepest', exclude=e))
  for i in range(4):
    coord, label, valid = corr(jax.random.PRNGKey(0), t, p, jnp.asarray(excl))
    assert bool(valid) == bool(clicks.valid[i])
    np.testing.assert_array_equal(np.asarray(coord), np.asarray(clicks.coords[i]))
    excl |= comps[i][2]


def test_simulate_clicks_more_slots_than_pixels():
  t = jnp.asarray(np.eye(2, dtype=np.int32))
  clicks = jax.jit(lambda k, a, b: user.simulate_clicks(k, a, b, 2, 8))(
    jax.random.PRNGKey(0), t, jnp.zeros((2, 2), jnp.int32)
  )
  assert clicks.coords.shape == (8, 2) and np.asarray(clicks.valid).sum() == 1


def test_determinism_and_no_recompile():
  traces = {'n': 0}

  def f(key, t, p):
    traces['n'] += 1
    return user.simulate_clicks(key, t, p, 3, 3)

  fj = jax.jit(f)
  rng = np.random.default_rng(7)
  target, pred = random_maps(rng, (20, 20), 3)
  a = fj(jax.random.PRNGKey(1), jnp.asarray(target), jnp.asarray(pred))
  b = fj(jax.random.PRNGKey(1), jnp.asarray(target), jnp.asarray(pred))
  target2, pred2 = random_maps(rng, (20, 20), 3)
  fj(jax.random.PRNGKey(2), jnp.asarray(target2), jnp.asarray(pred2))
  jax.tree_util.tree_map(
    lambda x, y: np.testing.assert_array_equal(np.asarray(x), np.asarray(y)), a, b
  )
  assert traces['n'] == 1


def test_validation():
  t = jnp.zeros((8, 8), jnp.int32)
  key = jax.random.PRNGKey(0)
  with pytest.raises(ValueError, match='policy'):
    user.correction_click(key, t, t, 2, policy='center')
  with pytest.raises(ValueError, match='pred'):
    user.correction_click(key, t, jnp.zeros((8, 9), jnp.int32), 2)
  with pytest.raises(ValueError, match='integer dtype'):
    user.first_click(key, jnp.zeros((8, 8), jnp.float32))
  with pytest.raises(ValueError, match='n=0: expected'):
    user.simulate_clicks(key, t, t, 2, 0)
  with pytest.raises(ValueError, match='num_classes'):
    user.simulate_clicks(key, t, t, 1, 3)


def _lgg_dir():
  import os
  from pathlib import Path

  default = Path(__file__).resolve().parents[1].parent / 'shared' / 'data' / 'lgg_kaggle_3m'
  return Path(os.environ.get('YIPLEARN_LGG_DIR', default))


def test_real_lgg_masks():
  """Real 256x256 lesion masks: first click and correction clicks vs scipy."""
  root = _lgg_dir()
  files = sorted(root.glob('TCGA_CS_4941_*/*_mask.tif'))
  if not files:
    pytest.skip(f'LGG data not found at {root} (set YIPLEARN_LGG_DIR)')
  from PIL import Image

  gts = [(np.asarray(Image.open(f)) > 0).astype(np.int32) for f in files[:4]]
  assert any(g.sum() == 0 for g in gts) and any(g.sum() > 0 for g in gts)

  @jax.jit
  def run(key, gt, pred):
    first = user.first_click(key, gt, policy='deepest')
    sim = user.simulate_clicks(key, gt, pred, 2, 5)
    return first, sim

  for i, gt in enumerate(gts):
    pred = np.roll(gt, (6, -4), axis=(0, 1))
    pred[100:110, 100:140] = 1  # a false-positive bar
    (coord, label, valid), sim = run(jax.random.PRNGKey(i), jnp.asarray(gt), jnp.asarray(pred))
    if gt.sum() == 0:
      assert not bool(valid)
    else:
      lab, _ = ndi.label(gt > 0, structure=EIGHT)
      sizes = np.bincount(lab.ravel())
      sizes[0] = 0
      largest = lab == np.argmax(sizes)
      assert bool(valid) and int(label) == 1
      assert tuple(np.asarray(coord)) == ref_deepest(largest)[1]
    comps = ref_error_components(gt, pred, 2)
    n_expect = min(5, len(comps))
    assert int(np.asarray(sim.valid).sum()) == n_expect
    for j in range(n_expect):
      r, c = np.asarray(sim.coords[j])
      assert comps[j][2][r, c] and int(sim.labels[j]) == gt[r, c]


def test_vmap_over_images_matches_per_image():
  rng = np.random.default_rng(8)
  pairs = [random_maps(rng, (20, 20), 3) for _ in range(3)]
  t = jnp.asarray(np.stack([a for a, _ in pairs]))
  p = jnp.asarray(np.stack([b for _, b in pairs]))
  keys = jax.random.split(jax.random.PRNGKey(9), 3)
  f = lambda k, a, b: user.simulate_clicks(k, a, b, 3, 3)  # noqa: E731
  batched = jax.jit(jax.vmap(f))(keys, t, p)
  single = jax.jit(f)
  for i in range(3):
    one = single(keys[i], t[i], p[i])
    for x, y in zip(batched, one):
      np.testing.assert_array_equal(np.asarray(x[i]), np.asarray(y))
