"""`synthetic_mri`: procedural brain-like axial MR slices with lesion masks, in named sites.

Anatomy per slice: scalp (fat), skull ring, CSF rim, brain with grey/white-matter-like texture
(gyral folding from a smooth random field), two ventricles, and 0-2 irregular lesions (about 20 %
of slices have none). Lesions are blobs with a random smooth radial profile; some have a
necrotic core.

The same anatomy is rendered as 3 "sequences" in the LGG kaggle_3m channel order:

==========  ==================================================================================
channel 0   pre-contrast T1-like: fat bright, CSF dark, WM > GM, lesion faint and slightly dark
channel 1   FLAIR-like: CSF dark, GM > WM, lesion bright (the mask is drawn on FLAIR)
channel 2   post-contrast T1c-like: as T1, lesion faint, some lesions rim-enhancing
==========  ==================================================================================

Domains (sites) differ in acquisition:

- `site_a`: reference (mild Rician noise);
- `site_b`: smooth multiplicative bias field and a global intensity scale (0.75-0.85);
- `site_c`: strong Rician noise and a different contrast (gamma 0.6-0.75);
- `site_d`: strong bias field and blur.

Records: ``image`` uint8 (S, S, 3), ``mask`` uint8 (S, S) in {0, 1}, ``domain`` str, ``id``
str, ``lesion_area`` int32 (lesion pixels in `mask`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import ndimage

from yiplearn import errors
from yiplearn.data import base, manual

DOMAINS: tuple[str, ...] = ('site_a', 'site_b', 'site_c', 'site_d')
SEQUENCES: tuple[str, ...] = ('pre_contrast', 'flair', 'post_contrast')

# Tissue classes and their intensity in each sequence (T1, FLAIR, T1c), before site effects.
TISSUES = ('background', 'scalp', 'skull', 'csf', 'grey', 'white', 'lesion', 'necrosis')
_CONTRAST = np.array(
  [
    # T1    FLAIR  T1c
    [0.00, 0.00, 0.00],  # background
    [0.85, 0.55, 0.85],  # scalp / fat
    [0.08, 0.05, 0.08],  # skull
    [0.14, 0.07, 0.16],  # CSF
    [0.46, 0.52, 0.48],  # grey matter
    [0.62, 0.40, 0.62],  # white matter
    [0.40, 0.86, 0.44],  # lesion
    [0.25, 0.60, 0.28],  # necrotic core
  ]
)


def _ellipse_radius(yy, xx, cy, cx, a, b, theta):
  dy, dx = yy - cy, xx - cx
  c, s = np.cos(theta), np.sin(theta)
  u, v = c * dx + s * dy, -s * dx + c * dy
  return np.sqrt((u / a) ** 2 + (v / b) ** 2)


def _blob(
  rng: np.random.Generator, yy: np.ndarray, xx: np.ndarray, cy: float, cx: float, radius: float
) -> np.ndarray:
  """Normalised radius of an irregular blob (<= 1 inside): radius modulated by harmonics 2..5."""
  dy, dx = yy - cy, xx - cx
  ang = np.arctan2(dy, dx)
  profile = np.ones_like(ang)
  for k in range(2, 6):
    profile += rng.uniform(0.0, 0.22 / k * 2) * np.cos(k * ang + rng.uniform(0, 2 * np.pi))
  return np.hypot(dy, dx) / (radius * np.clip(profile, 0.5, None))


def render_anatomy(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray, int]:
  """Reference-site slice.

  Returns:
    image float64 (S, S, 3) in about [0, 1] (T1, FLAIR, T1c), mask uint8 (S, S) in {0, 1},
    number of lesions drawn.
  """
  yy, xx = base.grid(size)
  cy, cx = rng.uniform(-0.05, 0.05, 2)
  a, b = rng.uniform(0.68, 0.80), rng.uniform(0.80, 0.92)  # x and y semi-axes of the head
  theta = rng.normal(0, 0.08)
  r = _ellipse_radius(yy, xx, cy, cx, a, b, theta)
  # Gyral folding: perturb the grey/white boundary with a smooth field.
  fold = base.smooth_noise(rng, size, size / 14)
  gyri = base.smooth_noise(rng, size, size / 40)
  tissue = np.zeros((size, size), np.int64)
  tissue[r <= 1.0] = 1  # scalp
  tissue[r <= 0.93] = 2  # skull
  tissue[r <= 0.86] = 3  # CSF rim
  brain = r <= 0.82 + 0.02 * fold
  tissue[brain] = 4  # grey
  tissue[brain & (r + 0.08 * fold + 0.14 * gyri <= 0.68)] = 5  # white
  # Ventricles: two tilted ellipses near the centre.
  vsep, vy = rng.uniform(0.07, 0.12), rng.uniform(-0.1, 0.05)
  va, vb = rng.uniform(0.035, 0.07), rng.uniform(0.12, 0.22)
  tilt = rng.uniform(0.15, 0.4)
  for side in (-1, 1):
    rv = _ellipse_radius(yy, xx, cy + vy, cx + side * vsep, va, vb, side * tilt + theta)
    tissue[rv <= 1.0] = 3
  # Lesions: 0 (20 %), 1 (50 %) or 2 (30 %) irregular blobs inside the brain.
  n_lesions = int(rng.choice(3, p=[0.2, 0.5, 0.3]))
  mask = np.zeros((size, size), bool)
  enhancing = np.zeros((size, size), bool)
  for _ in range(n_lesions):
    rr, ang = rng.uniform(0.0, 0.55), rng.uniform(0, 2 * np.pi)
    ly, lx = cy + rr * b * np.sin(ang), cx + rr * a * np.cos(ang)
    rad = rng.uniform(0.07, 0.17)
    rl = _blob(rng, yy, xx, ly, lx, rad)
    lesion = (rl <= 1.0) & brain
    if not lesion.any():
      continue
    mask |= lesion
    tissue[lesion] = 6
    if rng.uniform() < 0.4:  # necrotic core
      tissue[(rl <= rng.uniform(0.35, 0.55)) & brain] = 7
    if rng.uniform() < 0.5:  # rim enhancement on T1c
      enhancing |= lesion & (rl > 0.7)
  contrast = _CONTRAST * rng.uniform(0.93, 1.07, (1, 3))
  img = contrast[tissue]  # (S, S, 3)
  img[..., 2] = np.where(enhancing, rng.uniform(0.75, 0.9), img[..., 2])
  # Tissue texture and partial-volume blur.
  tex = base.smooth_noise(rng, size, max(size / 64, 0.7))
  img = img * (1.0 + 0.05 * tex[..., None])
  img = ndimage.gaussian_filter(img, sigma=(0.5 * size / 128 + 0.3, 0.5 * size / 128 + 0.3, 0))
  return img, mask.astype(np.uint8), n_lesions


def _bias_field(rng: np.random.Generator, size: int, strength: float) -> np.ndarray:
  """Smooth multiplicative field exp(strength * (low-order polynomial)), (S, S)."""
  yy, xx = base.grid(size)
  c = rng.normal(0, 1, 5)
  poly = c[0] * xx + c[1] * yy + 0.5 * (c[2] * xx * yy + c[3] * xx**2 + c[4] * yy**2)
  poly = poly / (np.abs(poly).max() + 1e-12)
  return np.exp(strength * poly)


def _rician(rng: np.random.Generator, img: np.ndarray, sigma: float) -> np.ndarray:
  """Magnitude of a complex signal with Gaussian noise of std `sigma` per component."""
  return np.hypot(img + rng.normal(0, sigma, img.shape), rng.normal(0, sigma, img.shape))


def apply_domain(image: np.ndarray, domain: str, rng: np.random.Generator) -> np.ndarray:
  """Applies the site's acquisition effects to a float (S, S, 3) slice; same for all sequences."""
  size = image.shape[0]
  if domain == 'site_a':
    return _rician(rng, image, 0.012)
  if domain == 'site_b':
    img = image * _bias_field(rng, size, rng.uniform(0.3, 0.4))[..., None] * rng.uniform(0.75, 0.85)
    return _rician(rng, img, 0.012)
  if domain == 'site_c':
    img = np.clip(image, 0.0, None) ** rng.uniform(0.6, 0.75)
    return _rician(rng, img, rng.uniform(0.05, 0.07))
  if domain == 'site_d':
    img = image * _bias_field(rng, size, rng.uniform(0.6, 0.75))[..., None]
    sigma = rng.uniform(1.0, 1.4) * size / 96
    img = ndimage.gaussian_filter(img, sigma=(sigma, sigma, 0))
    return _rician(rng, img, 0.012)
  raise errors.invalid('synthetic_mri.domain', domain, f'one of {list(DOMAINS)}')


def make_example(seed: int, domain: str, split: str, index: int, image_size: int) -> dict[str, Any]:
  """One record, determined by (seed, domain, split, index) and the size only."""
  if domain not in DOMAINS:
    raise errors.invalid('synthetic_mri.domain', domain, f'one of {list(DOMAINS)}')
  rng = base.example_rng(seed, DOMAINS.index(domain), base.SPLIT_INDEX[split], index)
  img, mask, _ = render_anatomy(rng, image_size)
  img = apply_domain(img, domain, rng)
  return {
    'image': base.to_uint8(img),
    'mask': mask,
    'domain': domain,
    'id': f'{domain}-{split}-{index:05d}',
    'lesion_area': np.int32(mask.sum()),
  }


class SyntheticMri(base.SyntheticSegmentationBuilder):
  """Procedural brain MR slices (T1, FLAIR, T1c channels) with lesion masks, per site."""

  NAME = 'synthetic_mri'
  DOMAINS = DOMAINS
  DESCRIPTION = 'Synthetic brain MR slices (T1, FLAIR, T1c) with lesion masks.'
  EXTRA_FEATURES = {'lesion_area': np.int32}
  code_path = manual.code_path_property(__file__)
  make_example = staticmethod(make_example)
