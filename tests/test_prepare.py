"""Host-side preparation of segmentation arrays."""

import numpy as np
import pytest
from scipy import ndimage

from yiplearn.data import prepare


def _arrays(n=3, h=16, c=3, seed=0):
  rng = np.random.default_rng(seed)
  img = rng.integers(0, 256, (n, h, h, c), dtype=np.uint8)
  mask = (rng.random((n, h, h)) > 0.7).astype(np.uint8)
  return {
    'image': img,
    'mask': mask,
    'pre_is_flair_copy': np.array([True, False, False]),
    'post_is_flair_copy': np.array([False, False, True]),
  }


def test_unit_and_channels_and_resize():
  a = _arrays()
  x, m = prepare.prepare_segmentation(a, channels=[1], image_size=8, norm='unit', num_classes=2)
  assert (
    x.shape == (3, 8, 8, 1)
    and x.dtype == np.float32
    and m.shape == (3, 8, 8)
    and m.dtype == np.int32
  )
  assert 0.0 <= x.min() and x.max() <= 1.0
  # A constant image stays constant after resizing; nearest masks keep their class set.
  const = {'image': np.full((1, 16, 16, 1), 200, np.uint8), 'mask': np.ones((1, 16, 16), np.uint8)}
  xc, mc = prepare.prepare_segmentation(const, image_size=5)
  np.testing.assert_allclose(xc, 200 / 255.0, atol=1e-6)
  assert set(np.unique(mc)) == {1}


def test_zscore_against_numpy():
  a = _arrays()
  x, _ = prepare.prepare_segmentation(a, norm='zscore')
  img = a['image'][1, ..., 2].astype(np.float64) / 255
  fg = img > 0
  ref = (img - img[fg].mean()) / np.sqrt(img[fg].var() + 1e-6) * fg
  np.testing.assert_allclose(x[1, ..., 2], ref, atol=1e-4)


def test_nearest_mask_resize_matches_scipy_on_integer_factor():
  m = (np.random.default_rng(1).random((1, 8, 8)) > 0.5).astype(np.uint8)
  up = prepare.resize_masks(m, 16)
  np.testing.assert_array_equal(up[0], ndimage.zoom(m[0], 2, order=0))


def test_lgg_filters_and_errors():
  a = _arrays()
  np.testing.assert_array_equal(prepare.lgg_channel_filter(a, 't1'), [False, True, True])
  np.testing.assert_array_equal(prepare.lgg_channel_filter(a, 't1c'), [True, True, False])
  np.testing.assert_array_equal(prepare.lgg_channel_filter(a, 'flair'), [True, True, True])
  with pytest.raises(ValueError, match="sequence='t2'"):
    prepare.lgg_channel('t2')
  with pytest.raises(ValueError, match='channels=\\[5\\]'):
    prepare.prepare_segmentation(a, channels=[5])
  with pytest.raises(ValueError, match="normalize='x'"):
    prepare.normalize(a['image'], 'x')
  with pytest.raises(ValueError, match='mask class=1: expected classes in'):
    prepare.prepare_segmentation(a, num_classes=1)
