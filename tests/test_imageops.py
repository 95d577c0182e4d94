"""Tests for yiplearn.imageops against scipy.ndimage references."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.ndimage as ndi

from yiplearn import imageops

EIGHT = np.ones((3, 3), dtype=int)


def spiral(n: int) -> np.ndarray:
  """A single 1-px-wide square spiral path (one 8-connected component)."""
  m = np.zeros((n, n), bool)
  r = c = 0
  m[r, c] = True
  dirs = [(0, 1), (1, 0), (0, -1), (-1, 0)]
  lengths = [n - 1] * 3
  length = n - 1
  while length - 2 > 0:
    length -= 2
    lengths += [length, length]
  for k, steps in enumerate(lengths):
    dr, dc = dirs[k % 4]
    for _ in range(steps):
      r, c = r + dr, c + dc
      m[r, c] = True
  return m


def snake(n: int) -> np.ndarray:
  """Boustrophedon snake: rows joined alternately at the right and left ends."""
  m = np.zeros((n, n), bool)
  for r in range(0, n, 2):
    m[r, :] = True
    if r + 1 < n:
      m[r + 1, n - 1 if (r // 2) % 2 == 0 else 0] = True
  return m


def blobs(rng: np.random.Generator, shape, n: int) -> np.ndarray:
  rr, cc = np.mgrid[: shape[0], : shape[1]]
  m = np.zeros(shape, bool)
  for _ in range(n):
    r0, c0 = rng.integers(0, shape[0]), rng.integers(0, shape[1])
    rad = rng.uniform(1.0, shape[0] / 5)
    m |= (rr - r0) ** 2 + (cc - c0) ** 2 <= rad**2
  return m


def random_masks():
  rng = np.random.default_rng(1234)
  masks = []
  for density in (0.05, 0.3, 0.45, 0.6, 0.9):
    masks.append(rng.random((32, 32)) < density)
  masks.append(rng.random((17, 41)) < 0.5)  # non-square, odd sizes
  for _ in range(4):
    masks.append(blobs(rng, (32, 32), int(rng.integers(1, 6))))
  masks.append(spiral(32))
  masks.append(snake(33))
  masks.append(np.zeros((8, 8), bool))
  masks.append(np.ones((8, 8), bool))
  masks.append(np.eye(16, dtype=bool)[::-1])  # anti-diagonal: 8- but not 4-connected
  return masks


cc_jit = jax.jit(imageops.connected_components)
sizes_jit = jax.jit(imageops.component_sizes)
largest_jit = jax.jit(imageops.largest_component)
edt_jit = jax.jit(imageops.distance_transform_edt)
sq_edt_jit = jax.jit(imageops.squared_distance_transform)


@pytest.mark.parametrize('idx', range(len(random_masks())))
def test_connected_components_equals_scipy(idx):
  m = random_masks()[idx]
  ref, _ = ndi.label(m, structure=EIGHT)
  got = np.asarray(cc_jit(jnp.asarray(m)))
  # Same numbering convention (raster order of first pixel) -> identical arrays.
  np.testing.assert_array_equal(got, ref)


def test_connected_components_few_sweeps_on_long_paths():
  for m in (spiral(128), snake(128)):
    ref, n = ndi.label(m, structure=EIGHT)
    assert n == 1
    lab, sweeps = jax.jit(imageops._label_regions_with_count)(
      jnp.zeros(m.shape, jnp.int32), jnp.asarray(m)
    )
    np.testing.assert_array_equal(np.asarray(lab), ref)
    # The path is ~8000 px long; plain min-propagation would need thousands
    # of sweeps. Hooking + pointer jumping needs O(log).
    assert int(sweeps) <= 20, int(sweeps)


def test_label_regions_splits_by_value():
  values = np.array(
    [
      [1, 1, 2, 2],
      [1, 1, 2, 2],
      [3, 3, 3, 0],
      [0, 0, 3, 0],
    ]
  )
  mask = values > 0
  got = np.asarray(imageops.label_regions(jnp.asarray(values), jnp.asarray(mask)))
  ref = np.zeros_like(values)
  nxt = 0
  for v in (1, 2, 3):
    lab, n = ndi.label(values == v, structure=EIGHT)
    ref = np.where(lab > 0, lab + nxt, ref)
    nxt += n
  # Same partition up to relabelling.
  pairs = set(zip(got[mask].tolist(), ref[mask].tolist()))
  assert len(pairs) == len(set(got[mask].tolist())) == len(set(ref[mask].tolist())) == 3
  assert (got[~mask] == 0).all()
  # Raster order numbering.
  assert got[0, 0] == 1 and got[0, 2] == 2 and got[2, 0] == 3


def test_component_sizes_and_largest():
  rng = np.random.default_rng(7)
  for _ in range(5):
    m = rng.random((24, 24)) < 0.5
    ref, n = ndi.label(m, structure=EIGHT)
    labels = cc_jit(jnp.asarray(m))
    sizes = np.asarray(sizes_jit(labels))
    assert sizes.shape == (24 * 24 + 1,)
    assert sizes[0] == 0
    ref_sizes = np.bincount(ref.ravel(), minlength=24 * 24 + 1)
    ref_sizes[0] = 0
    np.testing.assert_array_equal(sizes, ref_sizes)
    largest = np.asarray(largest_jit(jnp.asarray(m)))
    best = int(np.argmax(ref_sizes))  # first id among ties
    np.testing.assert_array_equal(largest, ref == best)
  assert not np.asarray(imageops.largest_component(jnp.zeros((5, 5), bool))).any()


def test_edt_equals_scipy():
  masks = random_masks()
  for m in masks:
    if m.all():
      continue
    ref = ndi.distance_transform_edt(m)
    got = np.asarray(edt_jit(jnp.asarray(m)))
    np.testing.assert_allclose(got, ref, rtol=1e-6, atol=1e-6)
    d2 = np.asarray(sq_edt_jit(jnp.asarray(m)))
    np.testing.assert_array_equal(d2, np.rint(ref**2).astype(np.int64))


def test_edt_all_foreground_is_inf():
  d = np.asarray(imageops.distance_transform_edt(jnp.ones((4, 5), bool)))
  assert np.isinf(d).all()


def test_edt_chunked_row_pass_matches(monkeypatch):
  monkeypatch.setattr(imageops, '_EDT_CHUNK_ELEMENTS', 3 * 40 * 40)  # 3 rows per chunk
  rng = np.random.default_rng(3)
  m = blobs(rng, (37, 40), 4) | (rng.random((37, 40)) < 0.2)
  got = np.asarray(imageops.distance_transform_edt(jnp.asarray(m)))
  np.testing.assert_allclose(got, ndi.distance_transform_edt(m), rtol=1e-6, atol=1e-6)


def test_no_recompilation_same_shape():
  traces = {'n': 0}

  def f(m):
    traces['n'] += 1
    return imageops.connected_components(m), imageops.distance_transform_edt(m)

  fj = jax.jit(f)
  rng = np.random.default_rng(0)
  for _ in range(3):
    fj(jnp.asarray(rng.random((20, 20)) < 0.4))
  assert traces['n'] == 1


def test_vmap_batch():
  rng = np.random.default_rng(5)
  batch = rng.random((3, 16, 16)) < 0.4
  got = np.asarray(jax.jit(jax.vmap(imageops.connected_components))(jnp.asarray(batch)))
  for b in range(3):
    np.testing.assert_array_equal(got[b], ndi.label(batch[b], structure=EIGHT)[0])


@pytest.mark.parametrize('sigma', [1.0, 2.5, 5.0])
def test_gaussian_blur_equals_scipy(sigma):
  rng = np.random.default_rng(11)
  x = rng.random((40, 36, 2)).astype(np.float32)
  got = np.asarray(imageops.gaussian_blur(jnp.asarray(x), sigma))
  ref = np.stack(
    [
      ndi.gaussian_filter(x[..., c].astype(np.float64), sigma, mode='constant', truncate=3.0)
      for c in range(2)
    ],
    -1,
  )
  np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6)
  # 2-D input works too.
  got2 = np.asarray(imageops.gaussian_blur(jnp.asarray(x[..., 0]), sigma))
  np.testing.assert_allclose(got2, ref[..., 0], rtol=1e-5, atol=1e-6)


def test_gaussian_kernel_size():
  assert imageops.gaussian_kernel1d(5.0).shape == (31,)  # 6 * sigma + 1
  assert imageops.gaussian_kernel1d(3.0).shape == (19,)
  np.testing.assert_allclose(imageops.gaussian_kernel1d(2.0).sum(), 1.0)
  with pytest.raises(ValueError, match='sigma'):
    imageops.gaussian_kernel1d(0.0)


def test_resize_bilinear():
  x = np.arange(16, dtype=np.float32).reshape(4, 4)
  up = np.asarray(imageops.resize_bilinear(jnp.asarray(x), (8, 8)))
  assert up.shape == (8, 8)
  # Same-size resize is the identity; a constant stays constant.
  np.testing.assert_allclose(
    np.asarray(imageops.resize_bilinear(jnp.asarray(x), (4, 4))), x, atol=1e-6
  )
  c = np.asarray(imageops.resize_bilinear(jnp.full((5, 7, 3), 2.0), (9, 3)))
  np.testing.assert_allclose(c, 2.0, atol=1e-6)
  # Downsampling by 2 with half-pixel centres averages 2x2 blocks.
  down = np.asarray(imageops.resize_bilinear(jnp.asarray(x), (2, 2)))
  np.testing.assert_allclose(down, x.reshape(2, 2, 2, 2).mean(axis=(1, 3)), atol=1e-5)


def test_input_validation():
  with pytest.raises(ValueError, match='mask'):
    imageops.connected_components(jnp.zeros((2, 3, 4), bool))
  with pytest.raises(ValueError, match='mask'):
    imageops.distance_transform_edt(jnp.zeros((4,), bool))
  with pytest.raises(ValueError, match='shape'):
    imageops.resize_bilinear(jnp.zeros((4, 4)), (0, 3))
