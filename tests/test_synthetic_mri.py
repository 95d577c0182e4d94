"""Tests for the `synthetic_mri` builder (32 px, 40 + 8 records per site)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from yiplearn.data import registry
from yiplearn.data import synthetic_mri as sm

S, NTR, NTE = 32, 40, 8


@pytest.fixture(scope='module')
def arrays(data_dir):
  return {
    d: registry.load_arrays(
      'synthetic_mri',
      'train',
      data_dir=data_dir,
      domain=d,
      image_size=S,
      num_train=NTR,
      num_test=NTE,
    )
    for d in sm.DOMAINS
  }


def _shifted(a, b, k=3.0):
  se = np.sqrt(a.var(ddof=1) / len(a) + b.var(ddof=1) / len(b))
  return abs(a.mean() - b.mean()) > k * se


def test_shapes_dtypes_and_areas(arrays):
  for d, a in arrays.items():
    assert a['image'].shape == (NTR, S, S, 3) and a['image'].dtype == np.uint8
    assert a['mask'].shape == (NTR, S, S) and a['mask'].dtype == np.uint8
    assert set(np.unique(a['mask'])) == {0, 1}
    assert a['lesion_area'].dtype == np.int32
    np.testing.assert_array_equal(a['lesion_area'], a['mask'].sum((1, 2)))
    assert set(a['domain']) == {d} and len(set(a['id'])) == NTR
    # Head in the middle, background dark at the corners.
    assert a['image'][:, :2, :2].mean() < (30 if d == 'site_c' else 12)
    assert a['image'][:, S // 2 - 2 : S // 2 + 2].mean() > 40


def test_some_slices_are_lesion_free(arrays):
  frac = np.mean(np.concatenate([a['lesion_area'] for a in arrays.values()]) == 0)
  assert 0.05 <= frac <= 0.45


def test_split_sizes_and_determinism(data_dir, arrays, tmp_path):
  te = registry.load_arrays(
    'synthetic_mri',
    'test',
    data_dir=data_dir,
    domain='site_b',
    image_size=S,
    num_train=NTR,
    num_test=NTE,
  )
  assert len(te['id']) == NTE and not set(te['id']) & set(arrays['site_b']['id'])
  again = registry.load_arrays(
    'synthetic_mri',
    'train[:5]',
    data_dir=str(tmp_path),
    domain='site_b',
    image_size=S,
    num_train=NTR,
    num_test=NTE,
  )
  np.testing.assert_array_equal(again['image'], arrays['site_b']['image'][:5])
  np.testing.assert_array_equal(
    sm.make_example(0, 'site_b', 'train', 7, S)['mask'], arrays['site_b']['mask'][7]
  )
  assert not np.array_equal(
    sm.make_example(1, 'site_b', 'train', 7, S)['image'], arrays['site_b']['image'][7]
  )


def test_sequences_have_mri_like_contrasts():
  """FLAIR: lesion bright; T1/T1c: lesion faint; T1 and T1c similar, FLAIR different."""
  flair_c, t1_c, corr_t1c, corr_flair = [], [], [], []
  for i in range(24):
    ex = sm.make_example(0, 'site_a', 'test', i, 64)
    img, m = ex['image'].astype(np.float64), ex['mask'].astype(bool)
    corr_t1c.append(np.corrcoef(img[..., 0].ravel(), img[..., 2].ravel())[0, 1])
    corr_flair.append(np.corrcoef(img[..., 0].ravel(), img[..., 1].ravel())[0, 1])
    if m.sum() < 10:
      continue
    ring = ndimage.binary_dilation(m, iterations=3) & ~m
    flair_c.append(img[..., 1][m].mean() - img[..., 1][ring].mean())
    t1_c.append(abs(img[..., 0][m].mean() - img[..., 0][ring].mean()))
  assert len(flair_c) >= 10
  assert np.all(np.array(flair_c) > 40)
  assert np.mean(t1_c) < 0.5 * np.mean(flair_c)
  assert np.mean(corr_t1c) > np.mean(corr_flair) + 0.05


def _head(img):
  return img.astype(np.float64).mean(-1) > 20


def _mean_head(a):
  return np.array([x.astype(np.float64).mean(-1)[_head(x)].mean() for x in a['image']])


def _noise(a):
  """Background (corner) noise level: pure noise outside the head."""
  img = a['image'].astype(np.float64)
  return np.concatenate([img[:, :3, :3], img[:, -3:, -3:]], axis=1).mean((1, 2, 3))


def _sharpness(a):
  return np.array(
    [np.abs(ndimage.laplace(x)).mean() for x in a['image'][..., 0].astype(np.float64)]
  )


def _inhomogeneity(a):
  """Spread of the mean intensity of the head over its four quadrants, relative to the mean."""
  out = []
  for x in a['image'].astype(np.float64).mean(-1):
    h = _head(x[..., None])
    q = [
      x[sl][h[sl]].mean()
      for sl in (
        np.s_[: S // 2, : S // 2],
        np.s_[: S // 2, S // 2 :],
        np.s_[S // 2 :, : S // 2],
        np.s_[S // 2 :, S // 2 :],
      )
    ]
    out.append(np.std(q) / np.mean(q))
  return np.array(out)


def test_site_shifts_are_real(arrays):
  ref = arrays['site_a']
  assert _mean_head(arrays['site_b']).mean() < _mean_head(ref).mean()
  assert _shifted(_mean_head(arrays['site_b']), _mean_head(ref))
  assert _noise(arrays['site_c']).mean() > _noise(ref).mean() and _shifted(
    _noise(arrays['site_c']), _noise(ref)
  )
  assert _sharpness(arrays['site_d']).mean() < _sharpness(ref).mean()
  assert _shifted(_sharpness(arrays['site_d']), _sharpness(ref))
  assert _inhomogeneity(arrays['site_d']).mean() > _inhomogeneity(ref).mean()
  assert _shifted(_inhomogeneity(arrays['site_d']), _inhomogeneity(ref))


def test_make_config():
  assert (
    sm.SyntheticMri.make_config(domain='site_c', image_size=64).name == 'site_c-s64-n200x50-seed0'
  )
  with pytest.raises(ValueError, match=r"synthetic_mri.domain='site_z': expected one of.*site_a"):
    sm.SyntheticMri.make_config(domain='site_z')
  with pytest.raises(ValueError, match=r"config key='angle': expected a key of this builder"):
    sm.SyntheticMri.make_config(angle=3)
