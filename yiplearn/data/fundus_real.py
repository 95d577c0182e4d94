"""TFDS builders for official fundus releases: ``rimone_dl`` (RIM-ONE DL) and ``drishti_gs1``.

Both read the release from a manual directory, locating files by NAME anywhere below it (users
unpack archives in different layouts), and produce disc-centred crops:

  1. disc := disc mask >= 128, cup := (cup mask >= 128) & disc (the cup lies inside the disc);
  2. the crop is a square of side ``round(crop_scale * d)`` centred on the centre of the disc's
     bounding box, d = the larger side of that box; parts outside the image are zero-padded;
  3. the crop is resized to ``image_size`` (bilinear, antialiased for images; nearest for masks).

Record fields common to both (S = image_size):
  image        uint8 (S, S, 3)
  mask         uint8 (S, S): 0 background, 1 rim (disc minus cup), 2 cup
  id           str (file stem), domain str, label int32 (glaucoma 1, normal 0, unknown -1)
  partition    str: 'train' / 'test' (official partition) or '' if none
  cup_to_disc  float32: vertical cup-to-disc ratio from the full-resolution masks
  crop_box     int32 (3,): (row0, col0, side) of the square crop in original pixel coordinates
  original_size int32 (2,): (H, W) of the original image

``rimone_dl`` adds ``hospital`` str and ``release`` str ('r1'/'r2'/'r3'); ``drishti_gs1`` has no
diagnosis label in machine-readable form (label is -1).

RIM-ONE DL ships two official train/test assignments of the same images,
``partitioned_by_hospital`` and ``partitioned_randomly``; the builder config field ``partition``
('auto' [default], 'by_hospital', 'random') says which one becomes the ``train`` / ``test`` splits
('auto': by hospital when that folder is present, else random; the build log says which).
"""

from __future__ import annotations

import dataclasses
import pathlib
import re
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import tensorflow_datasets as tfds
from absl import logging

from yiplearn.data import manual
from yiplearn.data.fundus_crop import (  # noqa: F401  (re-exported: the builders' crop)
  crop_padded,
  disc_centred_crop,
  disc_crop_box,
  three_class_mask,
  vertical_cup_to_disc,
)

tfds.disable_progress_bar()

DEFAULT_IMAGE_SIZE = 256
DEFAULT_CROP_SCALE = 2.0
IMAGE_SIZE_RANGE = (16, 2048)
CROP_SCALE_RANGE = (1.0, 8.0)


PARTITIONS = ('auto', 'by_hospital', 'random')


@dataclasses.dataclass
class FundusConfig(tfds.core.BuilderConfig):
  """Builder config of the fundus builders; see ``make_config``."""

  image_size: int = DEFAULT_IMAGE_SIZE
  crop_scale: float = DEFAULT_CROP_SCALE
  partition: str = 'auto'


def _make(
  image_size: int = DEFAULT_IMAGE_SIZE, crop_scale: float = DEFAULT_CROP_SCALE, partition='auto'
) -> FundusConfig:
  suffix = '' if partition == 'auto' else f'_{partition}'
  return FundusConfig(
    name=f'size{image_size}_crop{round(crop_scale * 100):d}{suffix}',
    version=tfds.core.Version('1.0.0'),
    description=f'disc-centred crops of {crop_scale} disc diameters, resized to {image_size}'
    + ('' if partition == 'auto' else f', train/test = the {partition} partition'),
    image_size=image_size,
    crop_scale=crop_scale,
    partition=partition,
  )


# ---------------------------------------------------------------------------------------------
# Pure numpy geometry (tested directly).


def _read_binary(path: pathlib.Path) -> np.ndarray:
  """Gray or colour mask file -> bool (H, W) by majority threshold >= 128."""
  return manual.read_image(path, mode='L') >= 128


def _has_part(path: pathlib.Path, *names: str) -> str | None:
  """The one of ``names`` that is the innermost folder name of ``path`` (case-insensitive).

  Returns that name as given in ``names``, or None if no folder of the path matches.
  """
  lookup = {n.lower(): n for n in names}
  for part in reversed(path.parent.parts):
    if part.lower() in lookup:
      return lookup[part.lower()]
  return None


# ---------------------------------------------------------------------------------------------
# Shared builder machinery.


@dataclasses.dataclass
class _Item:
  """One image to build: paths plus dataset-specific string/int fields."""

  id: str
  image: pathlib.Path
  disc: pathlib.Path
  cup: pathlib.Path
  fields: dict[str, Any]


class _FundusBuilder(tfds.core.GeneratorBasedBuilder):
  """Common config validation, features and example generation (abstract)."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Initial release.'}
  BUILDER_CONFIGS = [_make()]
  EXTRA_TEXT: tuple[str, ...] = ()
  EXTRA_KEYS: tuple[str, ...] = ()  # further make_config keys (RIM-ONE DL: 'partition')
  DESCRIPTION = ''
  HOMEPAGE = ''
  CITATION = ''

  @classmethod
  def make_config(cls, **kwargs: Any) -> FundusConfig:
    """Validated config. Keys: image_size (int in [16, 2048], default 256), crop_scale
    (float in [1, 8] disc diameters, default 2.0). Raises ValueError naming key, value, choices.
    """
    valid = ('image_size', 'crop_scale') + cls.EXTRA_KEYS
    for key in kwargs:
      if key not in valid:
        raise ValueError(
          f'{cls.name}: unknown config key {key!r} (value {kwargs[key]!r}); valid keys are {valid}'
        )
    size = kwargs.get('image_size', DEFAULT_IMAGE_SIZE)
    lo, hi = IMAGE_SIZE_RANGE
    if (
      isinstance(size, (bool, np.bool_))
      or not isinstance(size, (int, np.integer))
      or not lo <= size <= hi
    ):
      raise ValueError(
        f'{cls.name}: image_size={size!r} is not valid; expected an integer in [{lo}, {hi}]'
      )
    scale = kwargs.get('crop_scale', DEFAULT_CROP_SCALE)
    lo, hi = CROP_SCALE_RANGE
    if (
      isinstance(scale, (bool, np.bool_))
      or not isinstance(scale, (int, float, np.number))
      or not lo <= float(scale) <= hi
    ):
      raise ValueError(
        f'{cls.name}: crop_scale={scale!r} is not valid; expected a number in '
        f'[{lo}, {hi}] (disc diameters)'
      )
    partition = kwargs.get('partition', 'auto')
    if partition not in PARTITIONS:
      raise ValueError(
        f'{cls.name}: partition={partition!r} is not valid; expected one of {PARTITIONS}'
      )
    cfg = _make(int(size), round(float(scale), 2), partition)
    return cls.builder_configs.get(cfg.name, cfg)

  def _info(self) -> tfds.core.DatasetInfo:
    s = self.builder_config.image_size
    feats = {
      'image': tfds.features.Tensor(shape=(s, s, 3), dtype=np.uint8, encoding='zlib'),
      'mask': tfds.features.Tensor(shape=(s, s), dtype=np.uint8, encoding='zlib'),
      'id': tfds.features.Text(),
      'domain': tfds.features.Text(),
      'label': np.int32,
      'partition': tfds.features.Text(),
      'cup_to_disc': np.float32,
      'crop_box': tfds.features.Tensor(shape=(3,), dtype=np.int32),
      'original_size': tfds.features.Tensor(shape=(2,), dtype=np.int32),
    }
    feats.update({k: tfds.features.Text() for k in self.EXTRA_TEXT})
    return tfds.core.DatasetInfo(
      builder=self,
      features=tfds.features.FeaturesDict(feats),
      description=self.DESCRIPTION,
      homepage=self.HOMEPAGE,
      citation=self.CITATION,
    )

  def _splits_from_items(
    self, items: Sequence[_Item], split_of: dict[str, Sequence[str]]
  ) -> dict[str, Iterator]:
    """split name -> generator; empty splits are left out (TFDS cannot write them)."""
    out = {}
    for split, ids in split_of.items():
      chosen = [it for it in items if it.id in set(ids)]
      if chosen:
        out[split] = self._generate_examples(chosen)
      else:
        logging.warning('%s: split %r is empty and is left out', self.name, split)
    return out

  def _generate_examples(self, items: Sequence[_Item]) -> Iterator[tuple[str, dict]]:
    cfg = self.builder_config
    for it in items:
      image = manual.read_image(it.image, mode='RGB')
      disc, cup = _read_binary(it.disc), _read_binary(it.cup)
      if disc.shape != image.shape[:2] or cup.shape != image.shape[:2]:
        raise ValueError(
          f'{self.name}: {it.id}: image shape {image.shape[:2]} but disc mask '
          f'{disc.shape} and cup mask {cup.shape}; expected equal sizes'
        )
      if not disc.any():
        logging.warning('%s: %s has an empty disc mask; skipped', self.name, it.id)
        continue
      img, mask, box = disc_centred_crop(image, disc, cup, cfg.image_size, cfg.crop_scale)
      rec = dict(
        image=img,
        mask=mask,
        id=it.id,
        label=np.int32(-1),
        partition='',
        cup_to_disc=np.float32(vertical_cup_to_disc(disc, cup)),
        crop_box=np.asarray(box, np.int32),
        original_size=np.asarray(image.shape[:2], np.int32),
      )
      rec.update(it.fields)
      yield it.id, rec


# ---------------------------------------------------------------------------------------------
# RIM-ONE DL.

RIMONE_DOWNLOAD = (
  'RIM-ONE DL (RIM-ONE_DL_images and RIM-ONE_DL_reference_segmentations, '
  'https://github.com/miag-ull/rim-one-dl)'
)
_RIMONE_MASK_RE = re.compile(r'^(.+)-(\d+)-(disc|cup)-t\.png$', re.IGNORECASE)
RIMONE_TRAIN_HOSPITAL = 'HUC'
RIMONE_TEST_HOSPITAL = 'HUMS_HCSC'


def _label_from(*paths: pathlib.Path) -> int:
  for p in paths:
    part = _has_part(p, 'glaucoma', 'normal')
    if part is not None:
      return 1 if part == 'glaucoma' else 0
  return -1


class RimOneDl(_FundusBuilder):
  """RIM-ONE DL: 485 fundus images (HUC, HUMS, HCSC), glaucoma/normal, disc/cup masks.

  Splits (``partition='by_hospital'``): ``train`` (``partitioned_by_hospital/training_set``: HUC),
  ``test`` (``partitioned_by_hospital/test_set``: HUMS and HCSC, not separable by file name,
  recorded as hospital 'HUMS_HCSC'), ``unpartitioned`` (images found only outside the hospital
  partition; their ``domain`` falls back to the sub-release prefix r1/r2/r3). With
  ``partition='random'`` ``train`` / ``test`` are ``partitioned_randomly/{training,test}_set`` (the
  ``hospital`` field still comes from a hospital copy where there is one); 'auto' [default] takes
  the hospital partition when present, else the random one. Empty splits are left out.
  TFDS's reserved split name ``'all'`` reads every image (``as_data_source('all')``).
  An image present in several copies is read once, preferring the hospital partition.
  """

  name = 'rimone_dl'
  code_path = manual.code_path_property(__file__)
  EXTRA_TEXT = ('hospital', 'release')
  EXTRA_KEYS = ('partition',)
  DESCRIPTION = 'RIM-ONE DL fundus images with optic disc and cup reference segmentations.'
  HOMEPAGE = 'https://github.com/miag-ull/rim-one-dl'
  CITATION = (
    'Batista, Diaz-Aleman, Sigut, Alayon, Arnay, Angel-Pereira. RIM-ONE DL: A '
    'unified retinal image database for assessing glaucoma using Deep Learning. '
    'Image Analysis & Stereology 39(3), 2020.'
  )
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
    f'Download {RIMONE_DOWNLOAD} and unpack both archives anywhere below manual_dir; files '
    'are found by name (<stem>.png, <stem>-1-Disc-T.png, <stem>-1-Cup-T.png).'
  )

  def _split_generators(self, dl_manager: Any) -> dict[str, Iterator]:
    root = manual.resolve_manual_dir(
      dl_manager, dataset=self.name, download=RIMONE_DOWNLOAD, pattern='*-1-Disc-T.png'
    )
    items = self.scan(root, self.builder_config.partition)
    split_of = {'train': [], 'test': [], 'unpartitioned': []}
    for it in items:
      split_of[it.fields['partition'] or 'unpartitioned'].append(it.id)
    return self._splits_from_items(items, split_of)

  @classmethod
  def scan(cls, root: pathlib.Path, partition: str = 'auto') -> list[_Item]:
    """Finds every RIM-ONE DL image with both masks below ``root`` (sorted by stem); each item's
    ``partition`` field is its split in the chosen official partition (see the module docstring)."""
    files = manual.list_files(root)
    masks: dict[str, dict[str, tuple[int, pathlib.Path]]] = {}
    for f in files:
      m = _RIMONE_MASK_RE.match(f.name)
      if m:
        stem, expert, kind = m.group(1), int(m.group(2)), m.group(3).lower()
        prev = masks.setdefault(stem, {}).get(kind)
        if prev is None or expert < prev[0]:  # prefer the lowest expert number
          masks[stem][kind] = (expert, f)
    if not masks:
      raise manual.missing_error(
        dataset=cls.name, download=RIMONE_DOWNLOAD, manual_dir=root, pattern='*-1-Disc-T.png'
      )
    images: dict[str, tuple[int, pathlib.Path]] = {}
    randomly: dict[str, str] = {}  # stem -> 'train' / 'test' in partitioned_randomly
    for f in files:
      stem = f.name[:-4] if f.name.lower().endswith('.png') else None
      if stem not in masks:
        continue
      if _has_part(f, 'partitioned_randomly'):
        part = _has_part(f, 'training_set', 'test_set')
        if part:
          randomly[stem] = 'train' if part == 'training_set' else 'test'
      rank = (
        0
        if _has_part(f, 'partitioned_by_hospital')
        else 1
        if _has_part(f, 'partitioned_randomly')
        else 2
      )
      if stem not in images or rank < images[stem][0]:
        images[stem] = (rank, f)
    if not images:
      raise manual.missing_error(
        dataset=cls.name,
        download=RIMONE_DOWNLOAD,
        manual_dir=root,
        pattern='<stem>.png (e.g. r1_Im001.png)',
        detail='(reference segmentations found, images missing)',
      )
    has_hospital = any(rank == 0 for rank, _ in images.values())
    if partition == 'auto':
      partition = 'by_hospital' if has_hospital or not randomly else 'random'
      logging.info('%s: train/test = the official %s partition', cls.name, partition)
    items = []
    for stem in sorted(masks):
      kinds = masks[stem]
      if stem not in images or 'disc' not in kinds or 'cup' not in kinds:
        logging.warning('%s: %s lacks its image or a mask; skipped', cls.name, stem)
        continue
      rank, img = images[stem]
      by_hospital = hospital = ''
      if rank == 0:
        part = _has_part(img, 'training_set', 'test_set')
        if part == 'training_set':
          by_hospital, hospital = 'train', RIMONE_TRAIN_HOSPITAL
        elif part == 'test_set':
          by_hospital, hospital = 'test', RIMONE_TEST_HOSPITAL
      split = randomly.get(stem, '') if partition == 'random' else by_hospital
      release = stem.split('_', 1)[0].lower() if re.match(r'^r\d_', stem, re.I) else ''
      items.append(
        _Item(
          id=stem,
          image=img,
          disc=kinds['disc'][1],
          cup=kinds['cup'][1],
          fields=dict(
            label=np.int32(_label_from(kinds['disc'][1], img)),
            partition=split,
            hospital=hospital,
            release=release,
            domain=hospital or release or 'rimone_dl',
          ),
        )
      )
    return items
