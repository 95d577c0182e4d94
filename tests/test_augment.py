"""Tests for numpy segmentation/classification augmentation."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from yiplearn.data import pipeline
from yiplearn.data.augment import SegAugment, classification_augment, warp

OFF = dict(flip_lr=0.0, flip_ud=0.0, rot90=0.0, affine=0.0, p_intensity=0.0, p_noise=0.0)


def record(h=32, w=32, seed=0):
  rng = np.random.default_rng(seed)
  mask = np.zeros((h, w), np.uint8)
  mask[6:20, 8:24] = 1
  mask[10:15, 12:18] = 2
  image = np.stack(
    [mask * 100 + 20, rng.integers(0, 256, (h, w)), np.full((h, w), 128)], -1
  ).astype(np.uint8)
  return {'image': image, 'mask': mask, 'id': 'r0', 'label': np.int64(3)}


def test_all_off_is_identity():
  rec = record()
  out = SegAugment(**OFF)(rec, np.random.default_rng(0))
  for k in rec:
    np.testing.assert_array_equal(out[k], rec[k])
  assert out['image'].dtype == np.uint8 and out['mask'].dtype == np.uint8


def test_flips_and_rot90_are_exact_and_consistent():
  rec = record()
  out = SegAugment(**(OFF | dict(flip_lr=1.0)))(rec, np.random.default_rng(0))
  np.testing.assert_array_equal(out['image'], rec['image'][:, ::-1])
  np.testing.assert_array_equal(out['mask'], rec['mask'][:, ::-1])
  out = SegAugment(**(OFF | dict(flip_ud=1.0)))(rec, np.random.default_rng(0))
  np.testing.assert_array_equal(out['mask'], rec['mask'][::-1])
  for seed in range(6):
    out = SegAugment(**(OFF | dict(rot90=1.0)))(rec, np.random.default_rng(seed))
    ks = [k for k in (1, 2, 3) if np.array_equal(out['mask'], np.rot90(rec['mask'], k))]
    assert len(ks) == 1
    np.testing.assert_array_equal(out['image'], np.rot90(rec['image'], ks[0]))


def test_warp_matches_rot90_and_integer_shift():
  x = np.random.default_rng(1).integers(0, 256, (9, 9, 3)).astype(np.uint8)
  np.testing.assert_array_equal(warp(x, 90, 1.0, (0, 0), order=0), np.rot90(x, 1))
  np.testing.assert_array_equal(warp(x, 180, 1.0, (0, 0), order=1), np.rot90(x, 2))
  shifted = warp(x[..., 0], 0, 1.0, (2, -1), order=0)
  np.testing.assert_array_equal(
    shifted, ndimage.shift(x[..., 0], (2, -1), order=0, mode='constant')
  )
  # Scale 2 about the centre: the centre pixel stays, a pixel at distance 1 moves to distance 2.
  m = np.zeros((9, 9))
  m[4, 5] = 1.0
  z = warp(m, 0, 2.0, (0, 0), order=1)
  np.testing.assert_allclose(ndimage.center_of_mass(z), (4.0, 6.0), atol=1e-9)
  np.testing.assert_allclose(z.sum(), 4.0)  # area scales by 2 * 2


def test_affine_keeps_labels_and_image_mask_alignment():
  rec = record()
  aug = SegAugment(
    **(OFF | dict(affine=1.0, max_rotate=30.0, scale_range=(0.8, 1.2), max_translate=0.1))
  )
  changed = 0
  for seed in range(8):
    out = aug(rec, np.random.default_rng(seed))
    assert set(np.unique(out['mask'])) <= {0, 1, 2}
    changed += not np.array_equal(out['mask'], rec['mask'])
    # Channel 0 encodes the mask (20 + 100 * class): warped bilinearly it still agrees with the
    # nearest-warped mask away from class boundaries.
    decoded = np.clip(np.round((out['image'][..., 0].astype(float) - 20) / 100), 0, 2)
    interior = ndimage.binary_erosion(out['mask'] == ndimage.maximum_filter(out['mask'], 3))
    interior &= out['mask'] == ndimage.minimum_filter(out['mask'], 3)
    inside = out['image'][..., 2] > 0  # pixels that came from inside the frame
    sel = interior & inside & (ndimage.minimum_filter(inside.astype(np.uint8), 3) > 0)
    assert sel.sum() > 200
    assert np.mean(decoded[sel] == out['mask'][sel]) > 0.99
  assert changed >= 6


def test_intensity_effects():
  rec = record()
  out = SegAugment(
    **(
      OFF | dict(p_intensity=1.0, brightness=0.2, contrast_range=(1.0, 1.0), gamma_range=(1.0, 1.0))
    )
  )(rec, np.random.default_rng(3))
  d = out['image'].astype(float) - rec['image'].astype(float)
  unclipped = (rec['image'] > 60) & (rec['image'] < 190)
  assert np.ptp(d[unclipped]) <= 1.0 and abs(d[unclipped].mean()) > 1  # a uniform shift
  np.testing.assert_array_equal(out['mask'], rec['mask'])
  g = SegAugment(
    **(
      OFF | dict(p_intensity=1.0, brightness=0.0, contrast_range=(1.0, 1.0), gamma_range=(2.0, 2.0))
    )
  )(rec, np.random.default_rng(0))
  expect = np.round((rec['image'] / 255.0) ** 2 * 255)
  np.testing.assert_array_equal(g['image'], expect)
  c = SegAugment(
    **(
      OFF | dict(p_intensity=1.0, brightness=0.0, contrast_range=(0.5, 0.5), gamma_range=(1.0, 1.0))
    )
  )(rec, np.random.default_rng(0))
  x = rec['image'].astype(float)
  np.testing.assert_allclose(
    c['image'], np.round(x.mean((0, 1)) + 0.5 * (x - x.mean((0, 1)))), atol=1
  )


def test_noise_level_and_float_images():
  img = np.full((64, 64), 0.5, np.float32)
  aug = SegAugment(**(OFF | dict(p_noise=1.0, noise_std=0.1)))
  stds = [aug({'image': img}, np.random.default_rng(s))['image'].std() for s in range(20)]
  assert 0.03 < np.mean(stds) < 0.07  # std ~ U(0, 0.1): mean 0.05
  assert aug({'image': img}, np.random.default_rng(0))['image'].dtype == np.float32


def test_deterministic_given_rng_and_works_in_loader():
  rec = record()
  aug = SegAugment(rot90=0.5, flip_ud=0.5)
  a, b = aug(rec, np.random.default_rng(7)), aug(rec, np.random.default_rng(7))
  c = aug(rec, np.random.default_rng(8))
  np.testing.assert_array_equal(a['image'], b['image'])
  assert not np.array_equal(a['image'], c['image'])
  arrays = {k: np.stack([record(seed=i)[k] for i in range(5)]) for k in ('image', 'mask')}
  l1 = [x['image'] for x in pipeline.iterate_arrays(arrays, 2, seed=0, transform=aug)]
  l2 = [x['image'] for x in pipeline.iterate_arrays(arrays, 2, seed=0, transform=aug)]
  assert all(np.array_equal(x, y) for x, y in zip(l1, l2))


def test_classification_variant_has_no_mask_and_no_flip():
  aug = classification_augment(affine=1.0, p_intensity=0.0, p_noise=0.0)
  img = np.zeros((16, 16, 1), np.uint8)
  img[4:12, 6:8] = 255
  out = aug({'image': img, 'label': np.int64(1)}, np.random.default_rng(0))
  assert out['image'].shape == (16, 16, 1) and out['label'] == 1 and 'mask' not in out
  assert aug.flip_lr == 0.0


@pytest.mark.parametrize(
  'kw, word',
  [
    (dict(flip_lr=1.5), 'flip_lr'),
    (dict(scale_range=(1.2, 0.8)), 'scale_range'),
    (dict(noise_std=-1.0), 'noise_std'),
    (dict(gamma_range=(0.0, 1.0)), 'gamma_range'),
  ],
)
def test_validation(kw, word):
  with pytest.raises(ValueError, match=word):
    SegAugment(**kw)


def test_bad_records():
  with pytest.raises(ValueError, match='image'):
    SegAugment()({'x': np.zeros(3)}, np.random.default_rng(0))
  with pytest.raises(ValueError, match='mask'):
    SegAugment()({'image': np.zeros((4, 4)), 'mask': np.zeros((3, 3))}, np.random.default_rng(0))
