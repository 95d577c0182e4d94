"""`synthetic_fundus`: procedural optic-disc-centred fundus crops with cup/rim masks.

Each record is a colour crop centred (roughly) on the optic disc:

- orange/red retina background with low- and high-frequency texture and a mild vignette;
- a bright yellowish disc (ellipse: random size, eccentricity, orientation, offset, soft edge);
- a paler, brighter cup inside it (random cup-to-disc ratio; glaucoma-like in `pathology`);
- dark-red vessels: curved, tapering polylines that emerge from the cup and cross the disc.

Masks: 0 background, 1 rim (disc minus cup), 2 cup. Vessels do not change the mask (as in
REFUGE/RIM-ONE annotations, the disc and cup are filled regions).

Domains (differ the way cameras and sites do):

=============  ==============================================================================
`source`       reference appearance, cup-to-disc ratio (CDR) U(0.30, 0.55)
`camera_b`     colour-balance shift (less red, more green/blue), gamma 1.3-1.6, lower contrast
`camera_c`     illumination gradient, Gaussian blur, down/up-sampling (lower resolution)
`noisy`        additive sensor noise and low contrast
`pathology`    source appearance, glaucoma-like CDR U(0.60, 0.85)
=============  ==============================================================================

Records: ``image`` uint8 (S, S, 3), ``mask`` uint8 (S, S), ``domain`` str, ``id`` str,
``cup_to_disc`` float32 (vertical CDR of the rendered ellipses).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import ndimage

from yiplearn import errors
from yiplearn.data import base, manual

DOMAINS: tuple[str, ...] = ('source', 'camera_b', 'camera_c', 'noisy', 'pathology')
NORMAL_CDR = (0.30, 0.55)
GLAUCOMA_CDR = (0.60, 0.85)
NUM_CLASSES = 3


def _ellipse_radius(
  yy: np.ndarray, xx: np.ndarray, cy: float, cx: float, a: float, b: float, theta: float
) -> np.ndarray:
  """Normalised elliptical radius (1 on the boundary); a along the rotated x axis."""
  dy, dx = yy - cy, xx - cx
  c, s = np.cos(theta), np.sin(theta)
  u = c * dx + s * dy
  v = -s * dx + c * dy
  return np.sqrt((u / a) ** 2 + (v / b) ** 2)


def _vertical_half_extent(a: float, b: float, theta: float) -> float:
  """Half of the vertical extent of an ellipse with semi-axes (a, b) rotated by theta."""
  return float(np.sqrt((a * np.sin(theta)) ** 2 + (b * np.cos(theta)) ** 2))


def _segment_distance(yy: np.ndarray, xx: np.ndarray, p0: np.ndarray, p1: np.ndarray) -> np.ndarray:
  """Distance of every pixel to the segment p0-p1 (points as (y, x))."""
  d = p1 - p0
  denom = float(d @ d) or 1e-12
  t = np.clip(((yy - p0[0]) * d[0] + (xx - p0[1]) * d[1]) / denom, 0.0, 1.0)
  return np.hypot(yy - (p0[0] + t * d[0]), xx - (p0[1] + t * d[1]))


def _vessels(
  rng: np.random.Generator, yy: np.ndarray, xx: np.ndarray, start: tuple[float, float], size: int
) -> np.ndarray:
  """Vessel opacity in [0, 1], shape (S, S): 4-7 curved tapering polylines from `start`."""
  alpha = np.zeros_like(yy)
  pixel = 2.0 / size
  n_vessels = int(rng.integers(4, 8))
  base_angles = rng.uniform(0, 2 * np.pi) + np.linspace(0, 2 * np.pi, n_vessels, endpoint=False)
  for angle in base_angles + rng.normal(0, 0.3, n_vessels):
    width = rng.uniform(0.016, 0.028) + pixel * 0.5  # half-width in normalised units
    p = np.array(start, np.float64) + rng.normal(0, 0.03, 2)
    heading = angle
    curvature = rng.normal(0, 0.25)
    n_seg = 12
    step = rng.uniform(0.12, 0.18)
    for k in range(n_seg):
      heading += curvature * step + rng.normal(0, 0.12)
      q = p + step * np.array([np.sin(heading), np.cos(heading)])
      w = width * (1.0 - 0.5 * k / n_seg)
      dist = _segment_distance(yy, xx, p, q)
      alpha = np.maximum(alpha, np.clip(1.5 - dist / w, 0.0, 1.0) * 0.75)
      p = q
      if np.abs(p).max() > 1.3:
        break
  return alpha


def render_anatomy(
  rng: np.random.Generator, size: int, cdr_range: tuple[float, float]
) -> tuple[np.ndarray, np.ndarray, float]:
  """Reference-appearance fundus crop.

  Returns:
    image float64 (S, S, 3) in [0, 1], mask uint8 (S, S) in {0, 1, 2}, vertical CDR float.
  """
  yy, xx = base.grid(size)
  # Optic disc geometry (normalised coordinates, image spans [-1, 1]).
  cy, cx = rng.uniform(-0.12, 0.12, 2)
  r_disc = rng.uniform(0.30, 0.42)
  ecc = rng.uniform(0.85, 1.12)
  a_d, b_d = r_disc * ecc, r_disc / ecc
  theta = rng.uniform(0, np.pi)
  cdr = rng.uniform(*cdr_range)
  jitter = rng.uniform(0.95, 1.05)
  a_c, b_c = a_d * cdr * jitter, b_d * cdr / jitter
  # Cup offset (temporal side), kept inside the disc with margin.
  max_off = 0.45 * (1.0 - max(a_c / a_d, b_c / b_d)) * min(a_d, b_d)
  off_r, off_a = rng.uniform(0, max(max_off, 0.0)), rng.uniform(0, 2 * np.pi)
  ccy, ccx = cy + off_r * np.sin(off_a), cx + off_r * np.cos(off_a)

  r_d = _ellipse_radius(yy, xx, cy, cx, a_d, b_d, theta)
  r_c = _ellipse_radius(yy, xx, ccy, ccx, a_c, b_c, theta)
  mask = np.zeros((size, size), np.uint8)
  mask[r_d <= 1.0] = 1
  mask[(r_c <= 1.0) & (r_d <= 1.0)] = 2

  # Background retina: orange-red with texture and a vignette.
  bg = np.array([0.72, 0.30, 0.12]) * rng.uniform(0.9, 1.1, 3)
  low = base.smooth_noise(rng, size, size / 8)
  high = base.smooth_noise(rng, size, 0.7)
  lum = 1.0 + 0.10 * low + 0.05 * high - 0.25 * (yy**2 + xx**2) / 2
  img = bg[None, None, :] * lum[..., None]
  # Disc and cup, soft edges (edge width ~ 2 px or 3 % of the disc).
  edge_d = max(2.0 / size, 0.03 * r_disc)
  disc_a = 1.0 / (1.0 + np.exp(-(1.0 - r_d) * r_disc / edge_d))
  cup_a = 1.0 / (1.0 + np.exp(-(1.0 - r_c) * r_disc * cdr / max(edge_d * 1.5, 1e-6)))
  disc_col = np.array([0.98, 0.74, 0.46]) * rng.uniform(0.93, 1.05, 3)
  cup_col = np.array([1.0, 0.95, 0.82]) * rng.uniform(0.96, 1.03, 3)
  disc_tex = 1.0 + 0.04 * high
  img = img * (1 - disc_a[..., None]) + (disc_col * disc_tex[..., None]) * disc_a[..., None]
  img = img * (1 - cup_a[..., None]) + cup_col * cup_a[..., None]
  # Vessels emerging from the cup.
  v = _vessels(rng, yy, xx, (ccy, ccx), size)
  vessel_col = np.array([0.42, 0.07, 0.05]) * rng.uniform(0.9, 1.1, 3)
  img = img * (1 - v[..., None]) + vessel_col * v[..., None]

  cdr_v = _vertical_half_extent(a_c, b_c, theta) / _vertical_half_extent(a_d, b_d, theta)
  return np.clip(img, 0.0, 1.0), mask, cdr_v


def apply_domain(image: np.ndarray, domain: str, rng: np.random.Generator) -> np.ndarray:
  """Applies the acquisition shift of `domain` to a float (S, S, 3) image in [0, 1]."""
  size = image.shape[0]
  img = image
  if domain in ('source', 'pathology'):
    return np.clip(img * rng.uniform(0.95, 1.05), 0.0, 1.0)
  if domain == 'camera_b':
    balance = np.array([0.80, 1.10, 1.45]) * rng.uniform(0.95, 1.05, 3)
    img = np.clip(img * balance, 0.0, 1.0) ** rng.uniform(1.3, 1.6)
    mean = img.mean(axis=(0, 1), keepdims=True)
    return np.clip(mean + rng.uniform(0.75, 0.9) * (img - mean), 0.0, 1.0)
  if domain == 'camera_c':
    yy, xx = base.grid(size)
    direction = rng.uniform(0, 2 * np.pi)
    ramp = np.cos(direction) * xx + np.sin(direction) * yy  # in about [-1.4, 1.4]
    img = img * (1.0 + rng.uniform(0.25, 0.35) * ramp)[..., None]
    sigma = rng.uniform(0.8, 1.2) * size / 96.0
    img = ndimage.gaussian_filter(img, sigma=(sigma, sigma, 0), mode='nearest')
    factor = rng.uniform(2.0, 3.0)
    small = max(8, int(round(size / factor)))
    low = ndimage.zoom(
      img, (small / size, small / size, 1), order=1, mode='nearest', grid_mode=True
    )
    img = ndimage.zoom(
      low, (size / low.shape[0], size / low.shape[1], 1), order=1, mode='nearest', grid_mode=True
    )
    return np.clip(img[:size, :size], 0.0, 1.0)
  if domain == 'noisy':
    mean = img.mean(axis=(0, 1), keepdims=True)
    img = mean + rng.uniform(0.5, 0.65) * (img - mean)
    img = img + rng.normal(0.0, rng.uniform(0.06, 0.09), img.shape)
    return np.clip(img, 0.0, 1.0)
  raise errors.invalid('synthetic_fundus.domain', domain, f'one of {list(DOMAINS)}')


def make_example(seed: int, domain: str, split: str, index: int, image_size: int) -> dict[str, Any]:
  """One record, determined by (seed, domain, split, index) and the size only."""
  if domain not in DOMAINS:
    raise errors.invalid('synthetic_fundus.domain', domain, f'one of {list(DOMAINS)}')
  rng = base.example_rng(seed, DOMAINS.index(domain), base.SPLIT_INDEX[split], index)
  cdr_range = GLAUCOMA_CDR if domain == 'pathology' else NORMAL_CDR
  img, mask, cdr = render_anatomy(rng, image_size, cdr_range)
  img = apply_domain(img, domain, rng)
  return {
    'image': base.to_uint8(img),
    'mask': mask,
    'domain': domain,
    'id': f'{domain}-{split}-{index:05d}',
    'cup_to_disc': np.float32(cdr),
  }


class SyntheticFundus(base.SyntheticSegmentationBuilder):
  """Procedural optic-disc crops with 3-class masks in named camera/site domains."""

  NAME = 'synthetic_fundus'
  DOMAINS = DOMAINS
  DESCRIPTION = 'Synthetic optic-disc-centred fundus crops.'
  EXTRA_FEATURES = {'cup_to_disc': np.float32}
  code_path = manual.code_path_property(__file__)
  make_example = staticmethod(make_example)
