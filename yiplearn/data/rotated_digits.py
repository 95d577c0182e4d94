"""`rotated_digits`: scikit-learn's 1,797 real 8x8 handwritten digits, upsampled and rotated.

The rotated-MNIST domain-generalisation protocol on a dataset that ships with scikit-learn (no
download): the same digits appear in every domain, rotated by the domain's angle (0, 15, 30,
45, 60 or 75 degrees, counter-clockwise as displayed, i.e. `scipy.ndimage.rotate` /
`PIL.Image.rotate` convention).

Processing: the 8x8 digit (values 0..16) is upsampled with cubic interpolation to
``round(image_size * 20 / 28)`` pixels, padded with zeros to `image_size` (like MNIST's 20-px
digit in a 28-px frame, so rotations never cut it), rotated with bilinear interpolation, and
scaled to uint8 0..255.

Splits: `train` / `test` = a fixed 80 / 20 split, stratified by label with a seeded
permutation, identical for every angle and size. Records are in source order within a split,
so record i of every angle is the same digit.

Records: ``image`` uint8 (S, S, 1), ``label`` int64 0..9, ``domain`` str ``'rot<angle>'``,
``angle`` int32, ``id`` str ``'rot<angle>-<source index>'``.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import numpy as np
import tensorflow_datasets as tfds
from scipy import ndimage

from yiplearn.data import base, manual

ANGLES: tuple[int, ...] = (0, 15, 30, 45, 60, 75)
NUM_CLASSES = 10
SPLIT_SEED = 20240601  # fixed: the split is part of the benchmark definition
TEST_FRACTION = 0.2


@dataclasses.dataclass(eq=False)
class RotatedDigitsConfig(tfds.core.BuilderConfig):
  angle: int = 0
  image_size: int = 28


@functools.lru_cache(maxsize=1)
def _digits() -> tuple[np.ndarray, np.ndarray]:
  """(images float64 (1797, 8, 8) in [0, 16], labels int64 (1797,)) from scikit-learn."""
  from sklearn.datasets import load_digits  # noqa: PLC0415

  d = load_digits()
  return d.images.astype(np.float64), d.target.astype(np.int64)


def split_indices() -> dict[str, np.ndarray]:
  """Source indices of each split (sorted), stratified 80/20 by label; fixed for all angles."""
  _, labels = _digits()
  rng = np.random.default_rng(SPLIT_SEED)
  test = []
  for c in range(NUM_CLASSES):
    idx = np.flatnonzero(labels == c)
    test.extend(rng.permutation(idx)[: int(round(TEST_FRACTION * len(idx)))])
  test = np.sort(np.array(test, np.int64))
  train = np.setdiff1d(np.arange(len(labels)), test)
  return {'train': train, 'test': test}


def render(digit: np.ndarray, angle: float, image_size: int) -> np.ndarray:
  """8x8 digit in [0, 16] -> uint8 (image_size, image_size, 1), upsampled, padded, rotated."""
  inner = max(8, int(round(image_size * 20 / 28)))
  up = ndimage.zoom(digit, inner / 8.0, order=3, mode='grid-constant', cval=0.0, grid_mode=True)
  up = np.clip(up, 0.0, 16.0)
  canvas = np.zeros((image_size, image_size))
  o = (image_size - inner) // 2
  canvas[o : o + inner, o : o + inner] = up[:inner, :inner]
  if angle:
    canvas = ndimage.rotate(canvas, angle, reshape=False, order=1, mode='constant', cval=0.0)
  return base.to_uint8(canvas / 16.0)[..., None]


class RotatedDigits(tfds.core.GeneratorBasedBuilder):
  """Rotated real handwritten digits (scikit-learn `load_digits`), one angle per config."""

  VERSION = base.VERSION
  RELEASE_NOTES = {'1.0.0': 'Initial release.'}
  BUILDER_CONFIG_CLASS = RotatedDigitsConfig
  code_path = manual.code_path_property(__file__)

  @classmethod
  def make_config(cls, **kwargs: Any) -> RotatedDigitsConfig:
    """kwargs: angle (one of ANGLES, default 0), image_size (8..256, default 28)."""
    spec = {
      'angle': base.Param(
        0, choices=ANGLES, convert=base.strict_int, expected=f'one of {list(ANGLES)}'
      ),
      'image_size': base.int_param(28, 8, 256),
    }
    v = base.validate_kwargs('rotated_digits', kwargs, spec)
    return RotatedDigitsConfig(
      name=f'rot{v["angle"]}-s{v["image_size"]}',
      version=base.VERSION,
      description=f'Digits rotated by {v["angle"]} degrees.',
      **v,
    )

  def _info(self) -> tfds.core.DatasetInfo:
    s = self.builder_config.image_size
    return tfds.core.DatasetInfo(
      builder=self,
      description=__doc__,
      features=tfds.features.FeaturesDict(
        {
          'image': base.image_feature(s, 1),
          'label': tfds.features.ClassLabel(num_classes=NUM_CLASSES),
          'domain': tfds.features.Text(),
          'angle': np.int32,
          'id': tfds.features.Text(),
        }
      ),
      supervised_keys=('image', 'label'),
      homepage='https://scikit-learn.org/stable/modules/generated/sklearn.datasets.load_digits.html',
      disable_shuffling=True,  # records in source order: record i is the same digit at every angle
      citation=(
        'E. Alpaydin, C. Kaynak. Optical Recognition of Handwritten Digits. '
        'UCI Machine Learning Repository, 1998.'
      ),
    )

  def _split_generators(self, dl_manager: Any) -> dict[str, Any]:
    idx = split_indices()
    return {s: self._generate_examples(idx[s]) for s in ('train', 'test')}

  def _generate_examples(self, indices: np.ndarray):
    c = self.builder_config
    images, labels = _digits()
    domain = f'rot{c.angle}'
    for i in indices:
      key = f'{domain}-{int(i):04d}'
      yield (
        key,
        {
          'image': render(images[i], c.angle, c.image_size),
          'label': int(labels[i]),
          'domain': domain,
          'angle': np.int32(c.angle),
          'id': key,
        },
      )
