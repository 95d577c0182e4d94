"""Numpy augmentation for segmentation (and classification) records, for `make_loader(transform=...)`.

`SegAugment(...)(record, rng) -> record` applies, in order and each with its own probability:

1. geometry (exact array ops): left-right flip, up-down flip, a random multiple of 90 degrees;
2. a small affine warp about the image centre (rotation, isotropic scale, translation) with
   `scipy.ndimage.affine_transform`: bilinear for the image, nearest for the mask, so the mask
   keeps its class indices; outside pixels are filled with 0 (background);
3. intensity, on the image only, in [0, 1] units: brightness (additive), contrast (about the
   image mean), gamma, Gaussian noise; optionally per channel.

Images may be uint8 (H, W) / (H, W, C) (values treated as [0, 255] -> [0, 1] and rounded back to
uint8) or float (kept float, clipped to [0, 1] only for the gamma step). Masks are (H, W) integer
class indices. Other record fields pass through unchanged. All randomness comes from the `rng`
argument, so the pipeline's per-example generators make augmentation reproducible.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
from scipy import ndimage

from yiplearn import errors


def _check_prob(name: str, p: float) -> None:
  if not (isinstance(p, (int, float)) and 0.0 <= p <= 1.0):
    raise errors.invalid(name, p, 'a probability in [0, 1]')


def _check_range(name: str, r: tuple[float, float], lo: float) -> None:
  if not (isinstance(r, (tuple, list)) and len(r) == 2 and lo <= r[0] <= r[1]):
    raise errors.invalid(name, r, f'a pair (min, max) with {lo} <= min <= max')


def warp(
  x: np.ndarray, angle_deg: float, scale: float, shift: tuple[float, float], order: int
) -> np.ndarray:
  """Rotates (counter-clockwise as displayed) by `angle_deg`, scales by `scale` about the
  centre ((H - 1) / 2, (W - 1) / 2) and translates by `shift` = (rows, cols) pixels.

  Args:
    x: (H, W) or (H, W, C) array; channels are warped identically.
    order: spline order (0 nearest for masks, 1 bilinear for images).

  Returns:
    Array of x's shape and dtype; pixels mapped from outside are 0.
  """
  h, w = x.shape[:2]
  t = np.deg2rad(angle_deg)
  # Output pixel o = scale * R (i - c) + c + shift, so input i = R^-1 (o - c - shift) / scale + c.
  # In (row, col) coordinates R^-1 = [[cos, sin], [-sin, cos]] makes angle 90 equal np.rot90(x, 1).
  rot_inv = np.round(
    np.array([[np.cos(t), np.sin(t)], [-np.sin(t), np.cos(t)]]), 12
  )  # exact at k*90
  matrix = rot_inv / scale
  c = np.array([(h - 1) / 2.0, (w - 1) / 2.0])
  offset = c - matrix @ (c + np.asarray(shift, np.float64))
  xf = x.astype(np.float64)
  if x.ndim == 2:
    out = ndimage.affine_transform(
      xf, matrix, offset=offset, order=order, mode='constant', cval=0.0
    )
  else:
    out = np.stack(
      [
        ndimage.affine_transform(
          xf[..., k], matrix, offset=offset, order=order, mode='constant', cval=0.0
        )
        for k in range(x.shape[-1])
      ],
      -1,
    )
  if np.issubdtype(x.dtype, np.integer):
    info = np.iinfo(x.dtype)
    out = np.clip(np.round(out), info.min, info.max)
  return out.astype(x.dtype)


@dataclasses.dataclass(frozen=True)
class SegAugment:
  """Configurable augmentation callable ``(record, rng) -> record``.

  Attributes:
    flip_lr, flip_ud: probabilities of left-right / up-down flips.
    rot90: probability of rotating by a random k * 90 degrees, k in {1, 2, 3}.
    affine: probability of the affine warp, with angle ~ U(-max_rotate, max_rotate) degrees,
      scale ~ U(scale_range), shift ~ U(-max_translate, max_translate) * (H, W).
    brightness: additive shift ~ U(-brightness, brightness) (probability p_intensity).
    contrast_range: factor about the mean (probability p_intensity).
    gamma_range: exponent; sampled log-uniformly (probability p_intensity).
    noise_std: Gaussian noise std ~ U(0, noise_std) (probability p_noise).
    per_channel: draw brightness/contrast/gamma separately per channel.
    image_key, mask_key: record fields; mask_key=None (or absent) augments the image only.
  """

  flip_lr: float = 0.5
  flip_ud: float = 0.0
  rot90: float = 0.0
  affine: float = 0.5
  max_rotate: float = 15.0
  scale_range: tuple[float, float] = (0.9, 1.1)
  max_translate: float = 0.05
  p_intensity: float = 0.8
  brightness: float = 0.1
  contrast_range: tuple[float, float] = (0.8, 1.2)
  gamma_range: tuple[float, float] = (0.8, 1.25)
  p_noise: float = 0.3
  noise_std: float = 0.03
  per_channel: bool = False
  image_key: str = 'image'
  mask_key: str | None = 'mask'

  def __post_init__(self) -> None:
    for name in ('flip_lr', 'flip_ud', 'rot90', 'affine', 'p_intensity', 'p_noise'):
      _check_prob(name, getattr(self, name))
    _check_range('scale_range', self.scale_range, 1e-3)
    _check_range('contrast_range', self.contrast_range, 0.0)
    _check_range('gamma_range', self.gamma_range, 1e-3)
    for name in ('max_rotate', 'max_translate', 'brightness', 'noise_std'):
      v = getattr(self, name)
      if not (isinstance(v, (int, float)) and v >= 0):
        raise errors.invalid(name, v, 'a non-negative number')

  def __call__(self, record: dict[str, Any], rng: np.random.Generator) -> dict[str, Any]:
    if self.image_key not in record:
      raise errors.invalid('record fields', sorted(record), f'a field {self.image_key!r}')
    out = dict(record)
    image = np.asarray(record[self.image_key])
    has_mask = self.mask_key is not None and self.mask_key in record
    mask = np.asarray(record[self.mask_key]) if has_mask else None
    if mask is not None and mask.shape != image.shape[:2]:
      raise errors.invalid(
        f'record[{self.mask_key!r}].shape', mask.shape, f"the image's {image.shape[:2]}"
      )

    # 1. Exact geometry.
    if rng.uniform() < self.flip_lr:
      image, mask = image[:, ::-1], (mask[:, ::-1] if mask is not None else None)
    if rng.uniform() < self.flip_ud:
      image, mask = image[::-1], (mask[::-1] if mask is not None else None)
    if rng.uniform() < self.rot90:
      k = int(rng.integers(1, 4))
      image, mask = np.rot90(image, k), (np.rot90(mask, k) if mask is not None else None)
    # 2. Affine warp.
    if rng.uniform() < self.affine:
      angle = rng.uniform(-self.max_rotate, self.max_rotate)
      scale = rng.uniform(*self.scale_range)
      shift = rng.uniform(-self.max_translate, self.max_translate, 2) * np.array(image.shape[:2])
      image = warp(image, angle, scale, tuple(shift), order=1)
      if mask is not None:
        mask = warp(mask, angle, scale, tuple(shift), order=0)
    # 3. Intensity.
    image = self._intensity(image, rng)
    out[self.image_key] = np.ascontiguousarray(image)
    if mask is not None:
      out[self.mask_key] = np.ascontiguousarray(mask)
    return out

  def _intensity(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    do_int, do_noise = rng.uniform() < self.p_intensity, rng.uniform() < self.p_noise
    if not (do_int or do_noise):
      return image
    is_uint8 = image.dtype == np.uint8
    x = image.astype(np.float64) / 255.0 if is_uint8 else image.astype(np.float64)
    if do_int:
      n = x.shape[-1] if (self.per_channel and x.ndim == 3) else 1
      shape = (1, 1, n) if x.ndim == 3 else ()
      b = rng.uniform(-self.brightness, self.brightness, n).reshape(shape)
      c = rng.uniform(*self.contrast_range, n).reshape(shape)
      g = np.exp(rng.uniform(*np.log(self.gamma_range), n)).reshape(shape)
      mean = x.mean(axis=(0, 1), keepdims=True)
      x = mean + c * (x - mean) + b
      x = np.clip(x, 0.0, 1.0) ** g
    if do_noise:
      x = x + rng.normal(0.0, rng.uniform(0.0, self.noise_std), x.shape)
    if is_uint8:
      return np.clip(np.round(x * 255.0), 0, 255).astype(np.uint8)
    return x.astype(image.dtype)


def classification_augment(**kwargs: Any) -> SegAugment:
  """Image-only augmentation for classification (no flips by default: digits are chiral)."""
  defaults = dict(
    flip_lr=0.0, mask_key=None, max_rotate=10.0, scale_range=(0.9, 1.1), max_translate=0.08
  )
  return SegAugment(**(defaults | kwargs))
