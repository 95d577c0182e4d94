"""Tests for the `rotated_digits` builder (real scikit-learn digits, 16 px to stay fast)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from sklearn.datasets import load_digits

from yiplearn.data import registry
from yiplearn.data import rotated_digits as rd

S = 16


@pytest.fixture(scope='module')
def by_angle(data_dir):
  return {
    a: {
      s: registry.load_arrays('rotated_digits', s, data_dir=data_dir, angle=a, image_size=S)
      for s in ('train', 'test')
    }
    for a in (0, 30, 75)
  }


def test_shapes_dtypes_sizes(by_angle):
  for a, splits in by_angle.items():
    tr, te = splits['train'], splits['test']
    assert len(tr['label']) + len(te['label']) == 1797
    assert abs(len(te['label']) / 1797 - 0.2) < 0.01
    assert tr['image'].shape == (len(tr['label']), S, S, 1) and tr['image'].dtype == np.uint8
    assert tr['label'].dtype == np.int64 and tr['angle'].dtype == np.int32
    assert set(tr['domain']) == {f'rot{a}'} and set(tr['angle']) == {a}
    assert tr['image'].max() == 255 or tr['image'].max() > 200
    border = np.concatenate(
      [tr['image'][:, 0], tr['image'][:, -1], tr['image'][:, :, 0], tr['image'][:, :, -1]]
    )
    assert border.mean() < 3 and tr['image'].mean() > 20  # the digit stays inside the frame


def test_labels_match_sklearn_and_are_balanced(by_angle):
  target = load_digits().target
  for s in ('train', 'test'):
    arr = by_angle[0][s]
    src_idx = np.array([int(i.split('-')[1]) for i in arr['id']])
    np.testing.assert_array_equal(arr['label'], target[src_idx])
    counts = np.bincount(arr['label'], minlength=10) / len(arr['label'])
    assert counts.min() > 0.08 and counts.max() < 0.12


def test_identical_split_across_angles(by_angle):
  suffix = lambda ids: [i.split('-')[1] for i in ids]  # noqa: E731
  for s in ('train', 'test'):
    ref = suffix(by_angle[0][s]['id'])
    for a in (30, 75):
      assert suffix(by_angle[a][s]['id']) == ref
      np.testing.assert_array_equal(by_angle[a][s]['label'], by_angle[0][s]['label'])
  assert not set(by_angle[0]['train']['id']) & set(by_angle[0]['test']['id'])


def test_angle_zero_is_the_upsampled_digit():
  digit = load_digits().images[5]
  img = rd.render(digit, 0, 28)[..., 0].astype(np.float64)
  # Block-average the inner 20 px back to ~8x8 via PIL and compare with the original digit.
  inner = Image.fromarray(img[4:24, 4:24].astype(np.uint8)).resize((8, 8), Image.BILINEAR)
  assert np.corrcoef(np.asarray(inner, np.float64).ravel(), digit.ravel())[0, 1] > 0.9


@pytest.mark.parametrize('angle', [30, 75])
def test_domain_is_rotation_of_domain_zero(by_angle, angle):
  """PIL (independent implementation) rotating the angle-0 image reproduces the domain image."""
  base_imgs, rot_imgs = (
    by_angle[0]['test']['image'][:40, ..., 0],
    by_angle[angle]['test']['image'][:40, ..., 0],
  )
  good, wrong_dir = [], []
  for b, r in zip(base_imgs, rot_imgs):
    ref = np.asarray(Image.fromarray(b).rotate(angle, resample=Image.BILINEAR), np.float64)
    opp = np.asarray(Image.fromarray(b).rotate(-angle, resample=Image.BILINEAR), np.float64)
    good.append(np.corrcoef(ref.ravel(), r.astype(np.float64).ravel())[0, 1])
    wrong_dir.append(np.corrcoef(opp.ravel(), r.astype(np.float64).ravel())[0, 1])
  assert np.mean(good) > 0.9
  assert np.mean(good) > np.mean(wrong_dir) + 0.2
  # Rotation really changes the image.
  same = [
    np.corrcoef(b.ravel().astype(float), r.ravel().astype(float))[0, 1]
    for b, r in zip(base_imgs, rot_imgs)
  ]
  assert np.mean(same) < np.mean(good) - 0.1


def test_deterministic(by_angle, tmp_path):
  again = registry.load_arrays(
    'rotated_digits', 'test[:20]', data_dir=str(tmp_path), angle=30, image_size=S
  )
  np.testing.assert_array_equal(again['image'], by_angle[30]['test']['image'][:20])


def test_make_config():
  assert rd.RotatedDigits.make_config(angle=45, image_size=32).name == 'rot45-s32'
  assert rd.RotatedDigits.make_config().name == 'rot0-s28'
  with pytest.raises(
    ValueError, match=r'rotated_digits.angle=20: expected.*\[0, 15, 30, 45, 60, 75\]'
  ):
    rd.RotatedDigits.make_config(angle=20)
  with pytest.raises(ValueError, match=r"config key='domain': expected a key of this builder"):
    rd.RotatedDigits.make_config(domain='rot30')
