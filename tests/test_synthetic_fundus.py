"""Tests for the `synthetic_fundus` builder (tiny sizes: 32 px, 16 + 8 records per domain)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from yiplearn.data import registry
from yiplearn.data import synthetic_fundus as sf

S, NTR, NTE = 32, 16, 8


@pytest.fixture(scope='module')
def arrays(data_dir):
  """{domain: train arrays} for every domain, built once."""
  return {
    d: registry.load_arrays(
      'synthetic_fundus',
      'train',
      data_dir=data_dir,
      domain=d,
      image_size=S,
      num_train=NTR,
      num_test=NTE,
    )
    for d in sf.DOMAINS
  }


def _shifted(a: np.ndarray, b: np.ndarray, k: float = 3.0) -> bool:
  """Means differ by more than k standard errors."""
  se = np.sqrt(a.var(ddof=1) / len(a) + b.var(ddof=1) / len(b))
  return abs(a.mean() - b.mean()) > k * se


def test_shapes_dtypes_ranges(arrays):
  for d, a in arrays.items():
    assert a['image'].shape == (NTR, S, S, 3) and a['image'].dtype == np.uint8
    assert a['mask'].shape == (NTR, S, S) and a['mask'].dtype == np.uint8
    assert a['cup_to_disc'].dtype == np.float32 and a['cup_to_disc'].shape == (NTR,)
    assert a['domain'].dtype.kind == 'U' and set(a['domain']) == {d}
    assert len(set(a['id'])) == NTR
    assert set(np.unique(a['mask'])) <= {0, 1, 2}
    assert a['image'].min() < 60 and a['image'].max() > 180  # uses the dynamic range


def test_every_mask_has_all_classes_and_cup_inside_disc(arrays):
  for d, a in arrays.items():
    for m in a['mask']:
      assert set(np.unique(m)) == {0, 1, 2}
      assert ndimage.label(m > 0)[1] == 1  # the disc is one connected region
      if d != 'pathology':  # normal rims are >= 2 px wide even at 32 px
        assert np.all(m[ndimage.binary_dilation(m == 2)] > 0)  # cup never touches background


def test_thin_glaucomatous_rim_still_surrounds_cup_at_high_resolution():
  for i in range(8):
    m = sf.make_example(0, 'pathology', 'train', i, 256)['mask']
    assert np.all(m[ndimage.binary_dilation(m == 2)] > 0)


def test_split_sizes(data_dir):
  src_tr = registry.load_source(
    'synthetic_fundus', 'train', data_dir=data_dir, image_size=S, num_train=NTR, num_test=NTE
  )
  src_te = registry.load_source(
    'synthetic_fundus', 'test', data_dir=data_dir, image_size=S, num_train=NTR, num_test=NTE
  )
  assert (len(src_tr), len(src_te)) == (NTR, NTE)
  ids_tr = {src_tr[i]['id'] for i in range(NTR)}
  ids_te = {src_te[i]['id'] for i in range(NTE)}
  assert not ids_tr & ids_te
  # Train and test images differ.
  assert not np.array_equal(src_tr[0]['image'], src_te[0]['image'])


def test_deterministic_and_seed_dependent(arrays, tmp_path):
  again = registry.load_arrays(
    'synthetic_fundus',
    'train',
    data_dir=str(tmp_path),
    domain='camera_c',
    image_size=S,
    num_train=NTR,
    num_test=NTE,
  )
  for k in ('image', 'mask', 'cup_to_disc', 'id'):
    np.testing.assert_array_equal(again[k], arrays['camera_c'][k])
  other = sf.make_example(1, 'camera_c', 'train', 0, S)
  assert not np.array_equal(other['image'], arrays['camera_c']['image'][0])
  # Independent of generation order: example 5 alone equals record 5.
  np.testing.assert_array_equal(
    sf.make_example(0, 'camera_c', 'train', 5, S)['image'], arrays['camera_c']['image'][5]
  )


def _disc_contrast(a):
  lum = a['image'].astype(np.float64).mean(-1)
  return np.array([l[m > 0].mean() - l[m == 0].mean() for l, m in zip(lum, a['mask'])])


def _blue_red(a):
  img = a['image'].astype(np.float64)
  return img[..., 2].mean((1, 2)) / (img[..., 0].mean((1, 2)) + 1.0)


def _noise(a):
  """Energy of the residual from a 3x3 median filter (sensor noise)."""
  img = a['image'].astype(np.float64).mean(-1)
  return np.array([np.abs(x - ndimage.median_filter(x, 3)).mean() for x in img])


def _sharpness(a):
  img = a['image'].astype(np.float64).mean(-1)
  return np.array([np.abs(ndimage.laplace(x)).mean() for x in img])


def test_domain_shifts_are_real(arrays):
  src = arrays['source']
  # camera_b: colour balance shifted towards blue.
  assert _blue_red(arrays['camera_b']).mean() > _blue_red(src).mean()
  assert _shifted(_blue_red(arrays['camera_b']), _blue_red(src))
  # camera_c: blurred / lower resolution.
  assert _sharpness(arrays['camera_c']).mean() < _sharpness(src).mean()
  assert _shifted(_sharpness(arrays['camera_c']), _sharpness(src))
  # noisy: more pixel noise, lower disc contrast.
  assert _noise(arrays['noisy']).mean() > _noise(src).mean()
  assert _shifted(_noise(arrays['noisy']), _noise(src))
  assert _disc_contrast(arrays['noisy']).mean() < _disc_contrast(src).mean()
  assert _shifted(_disc_contrast(arrays['noisy']), _disc_contrast(src))
  # The disc is brighter than the background in every domain.
  for a in arrays.values():
    assert np.all(_disc_contrast(a) > 0)


def test_pathology_has_larger_cup_to_disc(arrays):
  cdr_p, cdr_s = arrays['pathology']['cup_to_disc'], arrays['source']['cup_to_disc']
  assert cdr_s.min() >= 0.28 and cdr_s.max() <= 0.58
  assert cdr_p.min() >= 0.57 and cdr_p.max() <= 0.88
  assert cdr_p.mean() > cdr_s.mean() + 0.15
  area = lambda a: np.array([(m == 2).sum() / (m > 0).sum() for m in a['mask']])  # noqa: E731
  assert area(arrays['pathology']).mean() > area(arrays['source']).mean()


def test_cup_to_disc_matches_mask_vertical_extent():
  for i in range(6):
    ex = sf.make_example(3, 'pathology' if i % 2 else 'source', 'test', i, 128)
    rows = lambda b: np.flatnonzero(b.any(1))  # noqa: E731
    cup, disc = rows(ex['mask'] == 2), rows(ex['mask'] > 0)
    measured = (cup[-1] - cup[0] + 1) / (disc[-1] - disc[0] + 1)
    assert abs(measured - float(ex['cup_to_disc'])) < 0.05


def test_make_config_validation_and_names():
  c = sf.SyntheticFundus.make_config(domain='camera_b', image_size=64, num_train=200, num_test=50)
  assert c.name == 'camera_b-s64-n200x50-seed0' and str(c.version) == '1.0.0'
  assert sf.SyntheticFundus.make_config().name == 'source-s128-n200x50-seed0'
  with pytest.raises(
    ValueError, match=r"synthetic_fundus.domain='camera_z': expected one of.*camera_b"
  ):
    sf.SyntheticFundus.make_config(domain='camera_z')
  with pytest.raises(ValueError, match=r'synthetic_fundus.image_size=8: expected an integer'):
    sf.SyntheticFundus.make_config(image_size=8)
  with pytest.raises(ValueError, match=r'synthetic_fundus.num_train=0: expected'):
    sf.SyntheticFundus.make_config(num_train=0)
  with pytest.raises(
    ValueError, match=r"config key='size': expected a key of this builder, one of"
  ):
    sf.SyntheticFundus.make_config(size=32)
