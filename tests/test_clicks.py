"""Tests for yiplearn.clicks: the Clicks pytree and guidance-map encodings."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.ndimage as ndi

from yiplearn import clicks as C


def ref_gaussian(coords, labels, shape, k, sigma, truncate=3.0):
  """Independent reference: impulses -> scipy gaussian_filter -> min-max per channel."""
  imp = np.zeros(shape + (k,), np.float64)
  for (r, c), lab in zip(coords, labels):
    imp[r, c, lab] = 1.0
  out = np.zeros_like(imp)
  for ch in range(k):
    if imp[..., ch].any():
      g = ndi.gaussian_filter(imp[..., ch], sigma, mode='constant', truncate=truncate)
      out[..., ch] = (g - g.min()) / (g.max() - g.min())
  return out


def ref_disk(coords, labels, shape, k, radius):
  rr, cc = np.mgrid[: shape[0], : shape[1]]
  out = np.zeros(shape + (k,), np.float32)
  for (r, c), lab in zip(coords, labels):
    out[..., lab] = np.maximum(out[..., lab], ((rr - r) ** 2 + (cc - c) ** 2 <= radius**2))
  return out


def test_empty_add_select_numvalid():
  c = C.empty_clicks(4)
  assert c.coords.shape == (4, 2) and c.coords.dtype == jnp.int32
  assert c.labels.shape == (4,) and c.valid.dtype == jnp.bool_
  assert int(C.num_valid(c)) == 0 and c.capacity == 4

  @jax.jit
  def add(c, i):  # traced index
    return C.add_click(c, i, jnp.array([3, 5]), 2)

  c = add(c, jnp.int32(1))
  c = add(c, jnp.int32(3))
  assert int(C.num_valid(c)) == 2
  np.testing.assert_array_equal(np.asarray(c.valid), [False, True, False, True])
  np.testing.assert_array_equal(np.asarray(c.coords[1]), [3, 5])
  assert int(c.labels[3]) == 2
  newest = C.select(c, jnp.arange(4) == 3)
  np.testing.assert_array_equal(np.asarray(newest.valid), [False, False, False, True])
  # An invalid write (user had nothing to click) leaves the slot invalid.
  c2 = C.add_click(c, 0, jnp.array([1, 1]), 1, valid=False)
  assert not bool(c2.valid[0])
  # Pytree: works through tree_map / vmap.
  assert len(jax.tree_util.tree_leaves(c)) == 3


def test_from_lists_and_validation():
  c = C.from_lists([(1, 2), (3, 4)], [0, 1], 5, shape=(8, 8), num_classes=2)
  np.testing.assert_array_equal(np.asarray(c.valid), [1, 1, 0, 0, 0])
  np.testing.assert_array_equal(np.asarray(c.coords[:2]), [[1, 2], [3, 4]])
  assert C.from_lists([], [], 3).valid.sum() == 0
  with pytest.raises(ValueError, match='capacity'):
    C.from_lists([(1, 2), (3, 4)], [0, 1], 1)
  with pytest.raises(ValueError, match=r'len\(labels\)=2: expected len\(coords\) = 1'):
    C.from_lists([(1, 2)], [0, 1], 3)
  with pytest.raises(ValueError, match='inside the image'):
    C.from_lists([(8, 2)], [0], 3, shape=(8, 8))
  with pytest.raises(ValueError, match='labels'):
    C.from_lists([(1, 2)], [3], 3, num_classes=3)
  with pytest.raises(ValueError, match='capacity'):
    C.empty_clicks(0)


@pytest.mark.parametrize('sigma', [5.0, 2.0, 1.5])
def test_gaussian_maps_equal_scipy(sigma):
  shape, k = (40, 33), 3
  coords = [(5, 7), (20, 20), (39, 0), (12, 30), (25, 3)]
  labels = [1, 1, 2, 1, 2]
  c = C.from_lists(coords, labels, 8)
  got = np.asarray(jax.jit(lambda c: C.guidance_maps(c, shape, k, sigma=sigma))(c))
  assert got.shape == shape + (k,) and got.dtype == np.float32
  ref = ref_gaussian(coords, labels, shape, k, sigma)
  np.testing.assert_allclose(got, ref, atol=2e-6)
  assert (got[..., 0] == 0).all()  # class without clicks
  assert got[..., 1].max() == pytest.approx(1.0) and got[..., 1].min() == 0.0


def test_gaussian_kernel_extent():
  # sigma 5 -> kernel 6*sigma+1 = 31 taps: support is exactly +-15 px.
  c = C.from_lists([(32, 32)], [0], 2)
  m = np.asarray(C.guidance_maps(c, (64, 64), 1, sigma=5.0))
  rows = np.nonzero(m[:, 32, 0] > 0)[0]
  assert rows.min() == 32 - 15 and rows.max() == 32 + 15
  assert np.argmax(m[..., 0]) == 32 * 64 + 32
  # Peak value of one click: impulse response normalised to 1 at the centre.
  assert m[32, 32, 0] == pytest.approx(1.0)
  # Ratio at distance 5 px = exp(-1/2) (Gaussian with sigma 5).
  assert m[32, 37, 0] == pytest.approx(np.exp(-0.5), rel=1e-5)


def test_invalid_out_of_range_and_duplicate_clicks_ignored():
  shape, k = (20, 20), 2
  base = C.from_lists([(4, 4), (10, 12)], [1, 1], 6)
  ref = np.asarray(C.guidance_maps(base, shape, k, sigma=2.0))
  c = C.add_click(base, 2, jnp.array([15, 15]), 0, valid=False)  # invalid
  c = C.add_click(c, 3, jnp.array([25, 1]), 0)  # outside the image
  c = C.add_click(c, 4, jnp.array([4, 4]), 1)  # duplicate
  c = C.add_click(c, 5, jnp.array([3, 3]), 7)  # label out of range
  got = np.asarray(C.guidance_maps(c, shape, k, sigma=2.0))
  np.testing.assert_allclose(got, ref, atol=1e-7)
  assert (got[..., 0] == 0).all()


def test_no_clicks_all_zero():
  for enc in ('gaussian', 'disk'):
    m = np.asarray(C.guidance_maps(C.empty_clicks(3), (9, 11), 3, encoding=enc))
    assert m.shape == (9, 11, 3) and (m == 0).all()


@pytest.mark.parametrize('radius', [0.0, 2.0, 3.5, 5.0])
def test_disk_maps_equal_numpy(radius):
  shape, k = (24, 30), 2
  coords = [(0, 0), (12, 15), (20, 28), (5, 20)]
  labels = [0, 1, 1, 0]
  c = C.from_lists(coords, labels, 5)
  got = np.asarray(C.guidance_maps(c, shape, k, encoding='disk', radius=radius))
  np.testing.assert_array_equal(got, ref_disk(coords, labels, shape, k, radius))


def test_model_input_layout():
  img = jnp.asarray(np.random.default_rng(0).random((16, 16, 3)), jnp.float32)
  c = C.from_lists([(8, 8)], [1], 4)
  x = C.model_input(img, c, 2, sigma=2.0)
  assert x.shape == (16, 16, 5) and x.dtype == jnp.float32
  np.testing.assert_array_equal(np.asarray(x[..., :3]), np.asarray(img))
  np.testing.assert_allclose(
    np.asarray(x[..., 3:]), np.asarray(C.guidance_maps(c, (16, 16), 2, sigma=2.0))
  )
  prev = jnp.ones((16, 16), jnp.int32)
  x2 = C.model_input(img, c, 2, sigma=2.0, prev_mask=prev)
  assert x2.shape == (16, 16, 6) and float(x2[..., 5].min()) == 1.0
  with pytest.raises(ValueError, match='prev_mask'):
    C.model_input(img, c, 2, prev_mask=jnp.ones((8, 8)))
  with pytest.raises(ValueError, match='image'):
    C.model_input(img[None], c, 2)


def test_guidance_validation():
  c = C.empty_clicks(2)
  with pytest.raises(ValueError, match='encoding'):
    C.guidance_maps(c, (8, 8), 2, encoding='square')
  with pytest.raises(ValueError, match='sigma'):
    C.guidance_maps(c, (8, 8), 2, sigma=0.0)
  with pytest.raises(ValueError, match='num_classes'):
    C.guidance_maps(c, (8, 8), 0)
  batched = jax.tree_util.tree_map(lambda a: a[None], c)
  with pytest.raises(ValueError, match='vmap'):
    C.guidance_maps(batched, (8, 8), 2)


def test_jit_vmap_no_recompile():
  traces = {'n': 0}

  def f(img, c):
    traces['n'] += 1
    return C.model_input(img, c, 3, sigma=3.0)

  fj = jax.jit(jax.vmap(f))
  rng = np.random.default_rng(1)
  for _ in range(3):
    img = jnp.asarray(rng.random((2, 16, 16, 1)), jnp.float32)
    cs = [
      C.from_lists(rng.integers(0, 16, (3, 2)).tolist(), rng.integers(0, 3, 3).tolist(), 4)
      for _ in range(2)
    ]
    batch = jax.tree_util.tree_map(lambda *a: jnp.stack(a), *cs)
    out = fj(img, batch)
    assert out.shape == (2, 16, 16, 4)
    for b in range(2):
      np.testing.assert_allclose(
        np.asarray(out[b]), np.asarray(C.model_input(img[b], cs[b], 3, sigma=3.0)), atol=1e-6
      )
  assert traces['n'] == 1


@pytest.mark.parametrize('encoding', C.ENCODINGS)
def test_reverse_classes_orders_channels_k_minus_1_to_0(encoding):
  c = C.from_lists([(2, 3), (9, 9), (12, 4)], [0, 2, 1], 4)
  fwd = np.asarray(C.guidance_maps(c, (16, 16), 3, encoding=encoding, sigma=2.0))
  rev = np.asarray(
    C.guidance_maps(c, (16, 16), 3, encoding=encoding, sigma=2.0, reverse_classes=True)
  )
  np.testing.assert_array_equal(rev, fwd[..., [2, 1, 0]])
  assert rev[9, 9, 0] == 1.0 and rev[2, 3, 2] == 1.0  # [cup, rim, bg]: cup click in channel 0
  img = jnp.zeros((16, 16, 1))
  x = C.model_input(img, c, 3, encoding=encoding, sigma=2.0, reverse_classes=True)
  np.testing.assert_array_equal(np.asarray(x[..., 1:]), rev)
