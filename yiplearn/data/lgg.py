"""TFDS builder ``lgg_kaggle_3m``: the LGG brain-MRI segmentation release (kaggle_3m layout).

Reads the official release ("LGG Segmentation Dataset", Buda et al. 2019, distributed on Kaggle
as ``mateuszbuda/lgg-mri-segmentation``; folder ``kaggle_3m``) from a manual directory. Files are
found by NAME anywhere below the manual dir: ``TCGA_<site>_<patient>_<date>_<slice>.tif`` and
``..._<slice>_mask.tif``. Files duplicated in several copies of the tree (the Kaggle archive holds
``kaggle_3m`` twice) are read once.

Record (one per slice):
  image              uint8 (256, 256, 3): channels (pre-contrast T1, FLAIR, post-contrast T1c)
  mask               uint8 (256, 256): 0/1 (release mask 0/255 thresholded at 128)
  patient            str, e.g. ``TCGA_CS_4941_19960909`` (the patient folder name)
  site               str, the TCGA institution code (second field), e.g. ``CS``
  slice_index        int32, from the file name
  lesion_area        int32, number of mask pixels == 1
  pre_is_flair_copy  bool, the patient's pre-contrast channel equals FLAIR on all its slices
  post_is_flair_copy bool, the same for post-contrast
  id                 str, ``<patient>_<slice_index>``
  domain             str, ``lgg_<site>``

Configs (``LggKaggle3m.make_config(variant=..., split_fractions=..., stratify_by_site=...)``):
  variant ``all_slices`` (every slice found) or ``largest_lesion`` (one slice per patient: the
  largest lesion area, ties -> lowest slice index; the paper's 2-D protocol; a patient without
  any lesion pixel still contributes its lowest slice, with lesion_area 0).

Splits ``train`` / ``validation`` / ``test`` are BY PATIENT: patients are ordered by
``sha256(patient)`` and, within each site (``stratify_by_site=True``, default) or globally,
the first ``round(n * f_train)`` go to train, the next up to ``round(n * (f_train + f_val))`` to
validation, the rest to test. A split that receives no patient (tiny folders, a zero fraction)
is left out. TFDS's reserved split name ``'all'`` (or ``'train+validation+test'``) reads every
record.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import math
import pathlib
import re
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import tensorflow_datasets as tfds
from absl import logging

from yiplearn.data import manual

tfds.disable_progress_bar()

NAME = 'lgg_kaggle_3m'
VARIANTS = ('all_slices', 'largest_lesion')
DEFAULT_FRACTIONS = (0.6, 0.2, 0.2)
SPLITS = ('train', 'validation', 'test')
IMAGE_SHAPE = (256, 256, 3)
DOWNLOAD = (
  'the "LGG Segmentation Dataset" (Buda et al. 2019; kaggle_3m folder, '
  'https://www.kaggle.com/datasets/mateuszbuda/lgg-mri-segmentation)'
)
MASK_PATTERN = 'TCGA_*_mask.tif'
_FILE_RE = re.compile(
  r'^(TCGA_([A-Za-z0-9]+)_([A-Za-z0-9]+)_(\d+))_(\d+)(_mask)?\.tif$', re.IGNORECASE
)


@dataclasses.dataclass
class LggConfig(tfds.core.BuilderConfig):
  """Builder config; see ``LggKaggle3m.make_config``."""

  variant: str = 'all_slices'
  split_fractions: tuple[float, float, float] = DEFAULT_FRACTIONS
  stratify_by_site: bool = True


def _config_name(variant: str, fractions: Sequence[float], stratify: bool) -> str:
  name = variant
  if tuple(fractions) != DEFAULT_FRACTIONS:
    name += '_split' + '-'.join(f'{round(f * 1000):d}' for f in fractions)
  if not stratify:
    name += '_nostrat'
  return name


def _make(
  variant: str = 'all_slices',
  split_fractions: Sequence[float] = DEFAULT_FRACTIONS,
  stratify_by_site: bool = True,
) -> LggConfig:
  fr = tuple(round(float(f), 3) for f in split_fractions)
  return LggConfig(
    name=_config_name(variant, fr, stratify_by_site),
    version=tfds.core.Version('1.0.0'),
    description=(
      f'LGG kaggle_3m, {variant}, patient split fractions {fr} '
      f'(stratified by site: {stratify_by_site})'
    ),
    variant=variant,
    split_fractions=fr,
    stratify_by_site=stratify_by_site,
  )


def _stable_hash(text: str) -> int:
  return int.from_bytes(hashlib.sha256(text.encode('utf-8')).digest()[:8], 'big')


def assign_splits(
  patients: Sequence[str],
  sites: Sequence[str],
  fractions: Sequence[float] = DEFAULT_FRACTIONS,
  stratify: bool = True,
) -> dict[str, str]:
  """Deterministic patient -> split assignment (``'train'|'validation'|'test'``).

  Args:
    patients: patient ids (unique).
    sites: site code of each patient (same length).
    fractions: (train, validation, test) fractions summing to 1.
    stratify: assign within each site separately (each site spread over the splits).

  Returns:
    Dict patient -> split name. Depends only on the ids (sha256 order), not on input order.
  """
  groups: dict[str, list[str]] = collections.defaultdict(list)
  for p, s in zip(patients, sites):
    groups[s if stratify else ''].append(p)
  out: dict[str, str] = {}
  for key in sorted(groups):
    members = sorted(groups[key], key=lambda p: (_stable_hash(p), p))
    n = len(members)
    n_train = int(math.floor(n * fractions[0] + 0.5))
    n_trval = max(n_train, int(math.floor(n * (fractions[0] + fractions[1]) + 0.5)))
    for i, p in enumerate(members):
      out[p] = 'train' if i < n_train else ('validation' if i < n_trval else 'test')
  return out


def scan_release(
  manual_dir: pathlib.Path,
) -> dict[str, dict[int, tuple[pathlib.Path, pathlib.Path]]]:
  """Finds slices below ``manual_dir``: patient -> {slice_index: (image_path, mask_path)}.

  Duplicated copies are read once (first path in sorted order); unpaired files are skipped with
  a warning. Raises ``FileNotFoundError`` (what to download, where) if no pair is found.
  """
  files = manual.list_files(manual_dir)
  masks: dict[str, pathlib.Path] = {}
  images: dict[str, pathlib.Path] = {}
  for f in files:
    m = _FILE_RE.match(f.name)
    if not m:
      continue
    key = f'{m.group(1)}_{int(m.group(5))}'
    (masks if m.group(6) else images).setdefault(key, f)
  if not masks:
    raise manual.missing_error(
      dataset=NAME, download=DOWNLOAD, manual_dir=manual_dir, pattern=MASK_PATTERN
    )
  out: dict[str, dict[int, tuple[pathlib.Path, pathlib.Path]]] = collections.defaultdict(dict)
  unpaired = sorted(set(masks) ^ set(images))
  if unpaired:
    logging.warning(
      '%s: %d slices without an image/mask partner skipped (e.g. %s)',
      NAME,
      len(unpaired),
      unpaired[:3],
    )
  for key in sorted(set(masks) & set(images)):
    m = _FILE_RE.match(images[key].name)
    out[m.group(1)][int(m.group(5))] = (images[key], masks[key])
  if not out:
    raise manual.missing_error(
      dataset=NAME,
      download=DOWNLOAD,
      manual_dir=manual_dir,
      pattern='TCGA_*_<slice>.tif',
      detail='(masks were found but none has its image)',
    )
  return dict(out)


def _load_patient(
  patient: str, slices: dict[int, tuple[pathlib.Path, pathlib.Path]]
) -> list[dict[str, Any]]:
  """Reads all slices of one patient and returns their records (sorted by slice index)."""
  site = patient.split('_')[1]
  recs = []
  for idx in sorted(slices):
    img_path, mask_path = slices[idx]
    image = manual.read_image(img_path, mode='RGB')
    raw = manual.read_image(mask_path)
    if raw.ndim == 3:
      raw = raw[..., 0]
    if image.shape != IMAGE_SHAPE or raw.shape != IMAGE_SHAPE[:2]:
      raise ValueError(
        f'{NAME}: slice {str(img_path)!r} has image shape {image.shape} and mask '
        f'shape {raw.shape}; expected {IMAGE_SHAPE} and {IMAGE_SHAPE[:2]}'
      )
    mask = (raw >= 128).astype(np.uint8)
    recs.append(
      dict(
        image=image,
        mask=mask,
        patient=patient,
        site=site,
        slice_index=np.int32(idx),
        lesion_area=np.int32(mask.sum()),
        id=f'{patient}_{idx}',
        domain=f'lgg_{site}',
      )
    )
  pre = all(np.array_equal(r['image'][..., 0], r['image'][..., 1]) for r in recs)
  post = all(np.array_equal(r['image'][..., 2], r['image'][..., 1]) for r in recs)
  for r in recs:
    r['pre_is_flair_copy'] = bool(pre)
    r['post_is_flair_copy'] = bool(post)
  return recs


def select_largest(recs: Sequence[dict[str, Any]]) -> dict[str, Any]:
  """The record with the largest ``lesion_area`` (ties -> lowest ``slice_index``)."""
  return min(recs, key=lambda r: (-int(r['lesion_area']), int(r['slice_index'])))


class LggKaggle3m(tfds.core.GeneratorBasedBuilder):
  """LGG brain MRI (TCGA-LGG, kaggle_3m release) with FLAIR-abnormality masks."""

  name = NAME
  code_path = manual.code_path_property(__file__)
  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Initial release.'}
  BUILDER_CONFIGS = [_make(v) for v in VARIANTS]
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
    f'Download {DOWNLOAD} and unpack it anywhere below manual_dir (the folder itself or any '
    'parent of it): the builder finds TCGA_<site>_<patient>_<date>_<slice>.tif and '
    '..._mask.tif files by name.'
  )

  @classmethod
  def make_config(cls, **kwargs: Any) -> LggConfig:
    """Validated config. Keys: variant (``'all_slices'`` | ``'largest_lesion'``),
    split_fractions (3 floats >= 0 summing to 1), stratify_by_site (bool).

    Returns the registered config object for default settings (TFDS requires it).
    Raises ValueError naming the key, the value and the valid choices.
    """
    valid = ('variant', 'split_fractions', 'stratify_by_site')
    for key in kwargs:
      if key not in valid:
        raise ValueError(
          f'{NAME}: unknown config key {key!r} (value {kwargs[key]!r}); valid keys are {valid}'
        )
    variant = kwargs.get('variant', 'all_slices')
    if variant not in VARIANTS:
      raise ValueError(f'{NAME}: variant={variant!r} is not valid; expected one of {VARIANTS}')
    fr = kwargs.get('split_fractions', DEFAULT_FRACTIONS)
    try:
      fr = tuple(float(f) for f in fr)
    except (TypeError, ValueError):
      fr = None
    if (
      fr is None
      or len(fr) != 3
      or any(not 0.0 <= f <= 1.0 for f in fr)
      or abs(sum(fr) - 1.0) > 1e-6
    ):
      raise ValueError(
        f'{NAME}: split_fractions={kwargs.get("split_fractions")!r} is not '
        'valid; expected 3 fractions (train, validation, test) in [0, 1] '
        'summing to 1'
      )
    strat = kwargs.get('stratify_by_site', True)
    if not isinstance(strat, (bool, np.bool_)):
      raise ValueError(f'{NAME}: stratify_by_site={strat!r} is not valid; expected True or False')
    cfg = _make(variant, fr, bool(strat))
    return cls.builder_configs.get(cfg.name, cfg)

  def _info(self) -> tfds.core.DatasetInfo:
    feats = tfds.features.FeaturesDict(
      {
        'image': tfds.features.Tensor(shape=IMAGE_SHAPE, dtype=np.uint8, encoding='zlib'),
        'mask': tfds.features.Tensor(shape=IMAGE_SHAPE[:2], dtype=np.uint8, encoding='zlib'),
        'patient': tfds.features.Text(),
        'site': tfds.features.Text(),
        'slice_index': np.int32,
        'lesion_area': np.int32,
        'pre_is_flair_copy': np.bool_,
        'post_is_flair_copy': np.bool_,
        'id': tfds.features.Text(),
        'domain': tfds.features.Text(),
      }
    )
    return tfds.core.DatasetInfo(
      builder=self,
      features=feats,
      description=(
        'Brain MR slices of 110 TCGA lower-grade glioma patients with manual '
        'FLAIR-abnormality masks; channels pre-contrast, FLAIR, post-contrast.'
      ),
      homepage='https://www.kaggle.com/datasets/mateuszbuda/lgg-mri-segmentation',
      citation=(
        'Buda, Saha, Mazurowski. Association of genomic subtypes of lower-grade '
        'gliomas with shape features automatically extracted by a deep learning '
        'algorithm. Computers in Biology and Medicine 109, 2019.'
      ),
    )

  def _split_generators(self, dl_manager: Any) -> dict[str, Iterator[tuple[str, dict]]]:
    root = manual.resolve_manual_dir(
      dl_manager, dataset=NAME, download=DOWNLOAD, pattern=MASK_PATTERN
    )
    release = scan_release(root)
    patients = sorted(release)
    cfg = self.builder_config
    assignment = assign_splits(
      patients, [p.split('_')[1] for p in patients], cfg.split_fractions, cfg.stratify_by_site
    )
    logging.info(
      '%s: %d patients, %d slices under %s',
      NAME,
      len(patients),
      sum(len(v) for v in release.values()),
      root,
    )
    out = {}
    for s in SPLITS:
      members = [p for p in patients if assignment[p] == s]
      if members:  # TFDS cannot write an empty split: leave it out.
        out[s] = self._generate_examples(release, members)
      else:
        logging.warning(
          '%s: split %r has no patients (fractions %s) and is left out',
          NAME,
          s,
          cfg.split_fractions,
        )
    return out

  def _generate_examples(
    self, release: dict, patients: Sequence[str]
  ) -> Iterator[tuple[str, dict]]:
    for patient in patients:
      recs = _load_patient(patient, release[patient])
      if self.builder_config.variant == 'largest_lesion':
        recs = [select_largest(recs)]
      for r in recs:
        yield r['id'], r
