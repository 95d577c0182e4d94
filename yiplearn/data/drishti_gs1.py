"""Drishti-GS1 (Sivaswamy et al. 2014): 101 fundus images with soft optic disc and cup maps.

A TFDS builder over the official release in a manual directory, sharing the disc-centred crop, the
three-class masks and the item layout of the RIM-ONE DL builder (`fundus_real.py`).
"""

from __future__ import annotations

import pathlib
import re
from collections.abc import Iterator
from typing import Any

from absl import logging

from yiplearn.data import manual
from yiplearn.data.fundus_real import _FundusBuilder, _has_part, _Item

# ---------------------------------------------------------------------------------------------
# Drishti-GS1.

DRISHTI_DOWNLOAD = (
  'Drishti-GS1 (Drishti-GS1_files, and the separately released test ground '
  'truth, http://cvit.iiit.ac.in/projects/mip/drishti-gs/mip-dataset2/Home.php)'
)
_DRISHTI_IMAGE_RE = re.compile(r'^(drishtiGS_\d+)\.png$', re.IGNORECASE)
_DRISHTI_SOFT_RE = re.compile(r'^(drishtiGS_\d+)_(ODseg|cupseg)Softmap\.png$', re.IGNORECASE)


class DrishtiGs1(_FundusBuilder):
  """Drishti-GS1: 101 fundus images (50 train, 51 test) with soft disc/cup maps.

  Masks are the ``SoftMap`` images (levels = share of experts marking the pixel), binarised by
  majority (>= 128). Splits ``train``/``test`` from the ``Training``/``Test`` folder holding the
  image. Images whose soft maps are absent (the official test GT was released separately) are
  skipped with a logged warning. ``label`` is -1 (the diagnosis is only in a spreadsheet).
  """

  name = 'drishti_gs1'
  code_path = manual.code_path_property(__file__)
  DESCRIPTION = 'Drishti-GS1 fundus images with majority-vote optic disc and cup masks.'
  HOMEPAGE = 'http://cvit.iiit.ac.in/projects/mip/drishti-gs/mip-dataset2/Home.php'
  CITATION = (
    'Sivaswamy, Krishnadas, Chakravarty, Joshi, Ujjwal, Syed. A comprehensive '
    'retinal image dataset for the assessment of glaucoma from the optic nerve head '
    'analysis. JSM Biomedical Imaging Data Papers 2(1), 2015.'
  )
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
    f'Download {DRISHTI_DOWNLOAD} and unpack anywhere below manual_dir; files are found by '
    'name (drishtiGS_NNN.png under Training/ or Test/, drishtiGS_NNN_ODsegSoftmap.png, '
    'drishtiGS_NNN_cupsegSoftmap.png).'
  )

  def _split_generators(self, dl_manager: Any) -> dict[str, Iterator]:
    root = manual.resolve_manual_dir(
      dl_manager, dataset=self.name, download=DRISHTI_DOWNLOAD, pattern='drishtiGS_*.png'
    )
    items = self.scan(root)
    split_of = {'train': [], 'test': []}
    for it in items:
      split_of[it.fields['partition']].append(it.id)
    return self._splits_from_items(items, split_of)

  @classmethod
  def scan(cls, root: pathlib.Path) -> list[_Item]:
    """Finds Drishti-GS1 images below ``root`` that have both soft maps (sorted by id)."""
    files = manual.list_files(root)
    images: dict[str, pathlib.Path] = {}
    soft: dict[str, dict[str, pathlib.Path]] = {}
    for f in files:
      m = _DRISHTI_IMAGE_RE.match(f.name)
      if m and _has_part(f, 'training', 'train', 'test'):
        images.setdefault(m.group(1), f)
      m = _DRISHTI_SOFT_RE.match(f.name)
      if m:
        soft.setdefault(m.group(1), {}).setdefault(m.group(2).lower(), f)
    if not images:
      raise manual.missing_error(
        dataset=cls.name,
        download=DRISHTI_DOWNLOAD,
        manual_dir=root,
        pattern='drishtiGS_*.png',
        detail='(images are expected below a Training/ or Test/ folder)',
      )
    items, missing = [], []
    for stem in sorted(images):
      maps = soft.get(stem, {})
      if 'odseg' not in maps or 'cupseg' not in maps:
        missing.append(stem)
        continue
      partition = (
        'test' if _has_part(images[stem], 'training', 'train', 'test') == 'test' else 'train'
      )
      items.append(
        _Item(
          id=stem,
          image=images[stem],
          disc=maps['odseg'],
          cup=maps['cupseg'],
          fields=dict(partition=partition, domain='drishti_gs1'),
        )
      )
    if missing:
      logging.warning(
        '%s: %d images without SoftMap ground truth skipped (e.g. %s); the test '
        'GT is released separately',
        cls.name,
        len(missing),
        missing[:3],
      )
    if not items:
      raise manual.missing_error(
        dataset=cls.name,
        download=DRISHTI_DOWNLOAD,
        manual_dir=root,
        pattern='drishtiGS_*_ODsegSoftmap.png',
        detail='(images found but no soft-map ground truth)',
      )
    return items
