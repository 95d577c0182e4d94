"""The images a person segments in the app: a folder of 2-D images or a registered dataset split.

Folder: every ``*.png``, ``*.jpg``, ``*.jpeg``, ``*.tif``, ``*.tiff`` directly in it (grey or RGB, 8 or
16 bit), sorted by name; a ground truth, when there is one, is ``masks/<same stem>.png`` in that folder
(class indices, or 0/255 for one foreground class). Dataset: a ``seg_common`` data config (LGG T1 slices of
the test patients, synthetic fundus ``camera_c``, ...), with its masks as ground truths.

The client names an image by its index in this set, never by a path.
"""

from __future__ import annotations

import dataclasses
import io
import os
from typing import Any

import numpy as np
from PIL import Image

from yiplearn import errors
from yiplearn.data import prepare

__all__ = ['ImageSet', 'EXTENSIONS', 'from_folder', 'from_dataset', 'display_png', 'mask_png']

EXTENSIONS = ('.png', '.jpg', '.jpeg', '.tif', '.tiff')


@dataclasses.dataclass
class ImageSet:
  """Images (H, W, C) float32 ready for the model, their names and ground truths (H, W) int32 or None."""

  names: list[str]
  images: list[np.ndarray]
  gts: list[np.ndarray | None]

  def __len__(self) -> int:
    return len(self.images)

  @property
  def has_gt(self) -> bool:
    return any(g is not None for g in self.gts)


def _to_uint8(a: np.ndarray) -> np.ndarray:
  if a.dtype == np.uint8:
    return a
  if a.dtype == np.uint16:
    return (a.astype(np.float32) / 257.0).round().astype(np.uint8)
  a = a.astype(np.float32)
  lo, hi = float(np.min(a)), float(np.max(a))
  return ((a - lo) / max(hi - lo, 1e-12) * 255.0).round().astype(np.uint8)


def _read_image(path: str, channels: int) -> np.ndarray:
  try:
    with Image.open(path) as im:
      im.load()
      a = np.asarray(im.convert('RGB') if im.mode in ('P', 'RGBA', 'LA', 'CMYK') else im)
  except (OSError, ValueError) as e:
    raise errors.invalid(
      'images.folder file', path, f'a readable PNG, JPEG or TIFF image ({e})'
    ) from None
  a = _to_uint8(a)
  if a.ndim == 2:
    a = a[..., None]
  if a.ndim != 3 or a.shape[-1] not in (1, 3):
    raise errors.invalid('images.folder file', path, 'a grey or RGB 2-D image')
  if a.shape[-1] != channels:  # grey -> repeated, RGB -> luminance
    a = (
      np.repeat(a, channels, -1) if a.shape[-1] == 1 else a.mean(-1, keepdims=True).astype(np.uint8)
    )
  return a


def _read_mask(path: str, num_classes: int) -> np.ndarray:
  with Image.open(path) as im:
    m = np.asarray(im.convert('L'))
  if m.max() >= num_classes and set(np.unique(m).tolist()) <= {0, 255}:
    m = (m > 0).astype(np.uint8)  # a binary 0/255 mask
  if m.max() >= num_classes:
    raise errors.invalid('mask', path, f'class indices in [0, {num_classes}) or a 0/255 mask')
  return m


def from_folder(
  folder: str, *, channels: int, num_classes: int, image_size: int = 0, norm: str = 'unit'
) -> ImageSet:
  """The images of ``folder`` (see the module docstring), resized to ``image_size`` (0: kept)."""
  if not os.path.isdir(folder):
    raise errors.MissingDataError(
      errors.message('images.folder', folder, 'a directory of PNG, JPEG or TIFF images')
    )
  names = sorted(f for f in os.listdir(folder) if f.lower().endswith(EXTENSIONS))
  if not names:
    raise errors.MissingDataError(
      errors.message('images.folder', folder, f'at least one image ({", ".join(EXTENSIONS)})')
    )
  images, gts = [], []
  for name in names:
    a = _read_image(os.path.join(folder, name), channels)
    mask_path = os.path.join(folder, 'masks', os.path.splitext(name)[0] + '.png')
    m = _read_mask(mask_path, num_classes) if os.path.isfile(mask_path) else None
    if m is not None and m.shape != a.shape[:2]:
      raise errors.invalid('mask', mask_path, f'the shape {a.shape[:2]} of its image')
    if image_size:
      a = prepare.resize_images(a[None], int(image_size))[0]
      m = None if m is None else prepare.resize_masks(m[None], int(image_size))[0]
    images.append(prepare.normalize(a[None], norm)[0])
    gts.append(None if m is None else m.astype(np.int32))
  return ImageSet(names, images, gts)


def from_dataset(data: Any, workdir: str) -> ImageSet:
  """A registered dataset split (a ``seg_common`` data config), ground truths included."""
  from yiplearn.experiments import seg_common  # pylint: disable=g-import-not-at-top

  d = seg_common.load_segmentation(data, workdir)
  names = [f'{i:03d}_{str(s)}' for i, s in enumerate(np.asarray(d['ids']).tolist())]
  names = [n.replace('/', '_').replace(os.sep, '_') for n in names]
  return ImageSet(names, list(d['images']), [m.astype(np.int32) for m in d['masks']])


def display_png(image: np.ndarray) -> bytes:
  """The image as an 8-bit grey or RGB PNG for the page (min-max scaled per image)."""
  a = np.asarray(image, np.float32)
  a = a[..., 0] if a.shape[-1] == 1 else a[..., :3]
  lo, hi = float(a.min()), float(a.max())
  u8 = ((a - lo) / max(hi - lo, 1e-12) * 255.0).round().astype(np.uint8)
  return _png(u8)


def mask_png(mask: np.ndarray) -> bytes:
  """A class map as an 8-bit PNG of class indices."""
  return _png(np.asarray(mask, np.uint8))


def _png(a: np.ndarray) -> bytes:
  buf = io.BytesIO()
  Image.fromarray(a).save(buf, format='PNG')
  return buf.getvalue()
