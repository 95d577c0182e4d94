"""The disc-centred crop and the three-class masks of the real fundus builders (pure numpy).

Fundus classes: 0 background, 1 rim (disc minus cup), 2 cup. The crop is a square around the optic
disc, `crop_scale` times the disc's extent, padded with zeros where it leaves the image.
"""

from __future__ import annotations

import numpy as np


def three_class_mask(disc: np.ndarray, cup: np.ndarray) -> np.ndarray:
  """(H, W) bool disc and cup -> uint8 (H, W): 0 background, 1 rim, 2 cup (cup := cup & disc)."""
  disc = np.asarray(disc, bool)
  cup = np.asarray(cup, bool) & disc
  return (disc.astype(np.uint8) + cup.astype(np.uint8)).astype(np.uint8)


def disc_crop_box(disc: np.ndarray, crop_scale: float) -> tuple[int, int, int]:
  """Square crop (row0, col0, side) centred on the disc's bounding box.

  Args:
    disc: (H, W) bool, non-empty.
    crop_scale: side = round(crop_scale * max(box height, box width)), at least 1.

  Returns:
    (row0, col0, side) in pixel coordinates; may extend beyond the image.
  """
  rows = np.flatnonzero(np.any(disc, axis=1))
  cols = np.flatnonzero(np.any(disc, axis=0))
  if rows.size == 0:
    raise ValueError('disc mask is empty; expected at least one disc pixel')
  r_lo, r_hi, c_lo, c_hi = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
  side = max(1, int(round(crop_scale * max(r_hi - r_lo, c_hi - c_lo))))
  row0 = int(np.floor((r_lo + r_hi) / 2.0 - side / 2.0 + 0.5))
  col0 = int(np.floor((c_lo + c_hi) / 2.0 - side / 2.0 + 0.5))
  return row0, col0, side


def crop_padded(x: np.ndarray, row0: int, col0: int, side: int) -> np.ndarray:
  """``x[row0:row0+side, col0:col0+side]`` with zeros where the window leaves the array."""
  h, w = x.shape[:2]
  out = np.zeros((side, side) + x.shape[2:], x.dtype)
  r_a, r_b = max(row0, 0), min(row0 + side, h)
  c_a, c_b = max(col0, 0), min(col0 + side, w)
  if r_a < r_b and c_a < c_b:
    out[r_a - row0 : r_b - row0, c_a - col0 : c_b - col0] = x[r_a:r_b, c_a:c_b]
  return out


def vertical_cup_to_disc(disc: np.ndarray, cup: np.ndarray) -> float:
  """Vertical cup diameter / vertical disc diameter (rows spanned); 0 if the cup is empty."""
  d = np.flatnonzero(np.any(disc, axis=1))
  c = np.flatnonzero(np.any(np.asarray(cup, bool) & np.asarray(disc, bool), axis=1))
  if d.size == 0 or c.size == 0:
    return 0.0
  return float(c[-1] - c[0] + 1) / float(d[-1] - d[0] + 1)


def disc_centred_crop(
  image: np.ndarray, disc: np.ndarray, cup: np.ndarray, image_size: int, crop_scale: float
) -> tuple[np.ndarray, np.ndarray, tuple[int, int, int]]:
  """Crops and resizes one fundus image around its optic disc.

  Args:
    image: uint8 (H, W, 3). disc, cup: bool (H, W). image_size: output side S.
    crop_scale: crop side in disc diameters.

  Returns:
    (image uint8 (S, S, 3), mask uint8 (S, S) in {0, 1, 2}, crop box (row0, col0, side)).
  """
  from PIL import Image  # Local import: only needed when building.

  box = disc_crop_box(disc, crop_scale)
  img = crop_padded(image, *box)
  mask = crop_padded(three_class_mask(disc, cup), *box)
  size = (image_size, image_size)
  img = np.asarray(Image.fromarray(img).resize(size, Image.Resampling.BILINEAR))
  mask = np.asarray(Image.fromarray(mask).resize(size, Image.Resampling.NEAREST))
  return img.astype(np.uint8), mask.astype(np.uint8), box
