"""Fixed-capacity click sets and click-map (guidance) encodings.

A :class:`Clicks` is a pytree of three arrays with a static capacity T, so a
click history can live inside ``jax.jit``/``lax.scan`` and be ``vmap``-ed over
images. All functions are per image (no batch dimension).

Guidance maps (DESIGN 1.1): one channel per class; channel k holds the clicks
labelled k.

* ``gaussian`` (default): a unit impulse at each valid click (duplicate clicks
  of the same class at the same pixel count once), convolved with a normalised
  Gaussian truncated at ``truncate_sigmas`` sigma (kernel 6 sigma + 1 for the
  default 3), then min-max normalised per channel to [0, 1]. A channel without
  valid clicks is all zeros. This equals
  ``scipy.ndimage.gaussian_filter(impulses, sigma, mode='constant', truncate=3)``
  followed by min-max normalisation; it is computed as a sum of separable
  outer products (O(T (H + W) + T H W K)) rather than a 2-D convolution.
* ``disk`` (RITM): binary disks, pixel p is 1 when ||p - click|| <= radius.

``reverse_classes=True`` orders the channels K-1, ..., 0, as the authors' released code does
([cup, rim, background] on fundus, [foreground, background] on brain); needed to load its weights.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from yiplearn import errors
from yiplearn.imageops import gaussian_kernel1d

__all__ = [
  'Clicks',
  'empty_clicks',
  'add_click',
  'num_valid',
  'select',
  'from_lists',
  'guidance_maps',
  'model_input',
  'ENCODINGS',
]

ENCODINGS = ('gaussian', 'disk')


class Clicks(NamedTuple):
  """A fixed-capacity set of clicks (a pytree).

  Attributes:
    coords: (T, 2) int32 (row, col).
    labels: (T,) int32 class index of each click.
    valid: (T,) bool; invalid slots are ignored everywhere.
  """

  coords: jax.Array
  labels: jax.Array
  valid: jax.Array

  @property
  def capacity(self) -> int:
    return self.valid.shape[-1]


def empty_clicks(capacity: int) -> Clicks:
  """A click set with ``capacity`` (static, >= 1) slots, all invalid."""
  if int(capacity) != capacity or capacity < 1:
    raise errors.invalid('capacity', capacity, 'a positive integer')
  capacity = int(capacity)
  return Clicks(
    coords=jnp.zeros((capacity, 2), jnp.int32),
    labels=jnp.zeros((capacity,), jnp.int32),
    valid=jnp.zeros((capacity,), bool),
  )


def add_click(
  clicks: Clicks,
  index: jax.Array | int,
  coord: jax.Array,
  label: jax.Array | int,
  valid: jax.Array | bool = True,
) -> Clicks:
  """Write one click into slot ``index`` (may be traced). Returns a new Clicks.

  Args:
    clicks: the click set.
    index: int32 scalar slot, 0 <= index < T (out-of-range writes are dropped).
    coord: (2,) int (row, col).
    label: int32 scalar class.
    valid: bool scalar; pass the simulated user's ``valid`` so "no click"
      leaves an invalid slot.
  """
  coord = jnp.asarray(coord, jnp.int32).reshape(2)
  return Clicks(
    coords=clicks.coords.at[index].set(coord, mode='drop'),
    labels=clicks.labels.at[index].set(jnp.asarray(label, jnp.int32), mode='drop'),
    valid=clicks.valid.at[index].set(jnp.asarray(valid, bool), mode='drop'),
  )


def num_valid(clicks: Clicks) -> jax.Array:
  """Number of valid clicks, int32 scalar."""
  return jnp.sum(clicks.valid.astype(jnp.int32), axis=-1)


def select(clicks: Clicks, keep: jax.Array) -> Clicks:
  """Keep only the slots where ``keep`` (T,) bool is True (valid &= keep).

  Example -- the newest click t only: ``select(c, jnp.arange(T) == t)``.
  """
  return clicks._replace(valid=clicks.valid & jnp.asarray(keep, bool))


def from_lists(
  coords: Sequence[Sequence[int]],
  labels: Sequence[int],
  capacity: int,
  *,
  shape: tuple[int, int] | None = None,
  num_classes: int | None = None,
) -> Clicks:
  """Host-side constructor with validation.

  Args:
    coords: n (row, col) pairs.
    labels: n class indices.
    capacity: T >= n.
    shape: optional (H, W); if given, coords must lie inside.
    num_classes: optional K; if given, labels must lie in [0, K).

  Returns:
    Clicks with the first n slots valid.
  """
  c = (
    np.asarray(coords, dtype=np.int64).reshape(-1, 2) if len(coords) else np.zeros((0, 2), np.int64)
  )
  lab = np.asarray(labels, dtype=np.int64).reshape(-1)
  if c.shape[0] != lab.shape[0]:
    raise errors.invalid('len(labels)', lab.shape[0], f'len(coords) = {c.shape[0]}')
  if int(capacity) != capacity or capacity < max(1, c.shape[0]):
    raise errors.invalid(
      'capacity', capacity, f'an integer >= max(1, number of clicks={c.shape[0]})'
    )
  if shape is not None:
    h, w = shape
    bad = (c[:, 0] < 0) | (c[:, 0] >= h) | (c[:, 1] < 0) | (c[:, 1] >= w)
    if bad.any():
      raise errors.invalid('coords', c[bad].tolist(), f'inside the image of shape {tuple(shape)}')
  if num_classes is not None:
    bad = (lab < 0) | (lab >= num_classes)
    if bad.any():
      raise errors.invalid('labels', lab[bad].tolist(), f'classes in [0, {num_classes})')
  n = c.shape[0]
  capacity = int(capacity)
  coords_a = np.zeros((capacity, 2), np.int32)
  coords_a[:n] = c
  labels_a = np.zeros((capacity,), np.int32)
  labels_a[:n] = lab
  valid_a = np.arange(capacity) < n
  return Clicks(jnp.asarray(coords_a), jnp.asarray(labels_a), jnp.asarray(valid_a))


def _effective_valid(clicks: Clicks, shape: tuple[int, int], num_classes: int) -> jax.Array:
  """Valid, inside the image, label in range, and not a duplicate of an earlier click."""
  h, w = shape
  r, c = clicks.coords[:, 0], clicks.coords[:, 1]
  ok = clicks.valid & (r >= 0) & (r < h) & (c >= 0) & (c < w)
  ok = ok & (clicks.labels >= 0) & (clicks.labels < num_classes)
  t = clicks.valid.shape[0]
  same = (
    (clicks.coords[:, None, :] == clicks.coords[None, :, :]).all(-1)
    & (clicks.labels[:, None] == clicks.labels[None, :])
    & ok[None, :]
    & (jnp.arange(t)[None, :] < jnp.arange(t)[:, None])
  )
  return ok & ~same.any(axis=1)


def _check_guidance_args(
  clicks: Clicks, shape, num_classes, encoding, sigma, radius, truncate_sigmas
) -> None:
  if not isinstance(clicks, Clicks):
    raise errors.invalid('type(clicks)', type(clicks).__name__, 'Clicks')
  if clicks.coords.ndim != 2 or clicks.coords.shape[-1] != 2:
    raise errors.invalid(
      'clicks.coords.shape', tuple(clicks.coords.shape), '(T, 2) for one image (jax.vmap batches)'
    )
  if len(shape) != 2 or min(shape) < 1:
    raise errors.invalid('shape', tuple(shape), '(H, W) with positive sizes')
  if int(num_classes) != num_classes or num_classes < 1:
    raise errors.invalid('num_classes', num_classes, 'a positive integer')
  if encoding not in ENCODINGS:
    raise errors.invalid('encoding', encoding, f'one of {ENCODINGS}')
  if encoding == 'gaussian' and not (sigma > 0 and truncate_sigmas > 0):
    bad = 'sigma' if not sigma > 0 else 'truncate_sigmas'
    raise errors.invalid(bad, sigma if bad == 'sigma' else truncate_sigmas, '> 0')
  if encoding == 'disk' and not radius >= 0:
    raise errors.invalid('radius', radius, '>= 0')


def guidance_maps(
  clicks: Clicks,
  shape: tuple[int, int],
  num_classes: int,
  *,
  encoding: str = 'gaussian',
  sigma: float = 5.0,
  radius: float = 5.0,
  truncate_sigmas: float = 3.0,
  reverse_classes: bool = False,
) -> jax.Array:
  """Click maps, one channel per class.

  Clicks that are invalid, outside the image or with a label outside
  [0, num_classes) are ignored.

  Args:
    clicks: Clicks with capacity T.
    shape: static (H, W).
    num_classes: static K.
    encoding: 'gaussian' or 'disk' (static).
    sigma: Gaussian std in pixels (static); kernel radius
      ``int(truncate_sigmas * sigma + 0.5)``.
    radius: disk radius in pixels (static).
    truncate_sigmas: Gaussian truncation in sigmas (static).
    reverse_classes: channel k holds class K - 1 - k (the released code's order; static).

  Returns:
    (H, W, K) float32 in [0, 1].
  """
  _check_guidance_args(clicks, shape, num_classes, encoding, sigma, radius, truncate_sigmas)
  h, w = int(shape[0]), int(shape[1])
  k = int(num_classes)
  ok = _effective_valid(clicks, (h, w), k)
  onehot = jax.nn.one_hot(clicks.labels, k, dtype=jnp.float32) * ok[:, None]  # (T, K)
  rows = jnp.arange(h, dtype=jnp.int32)
  cols = jnp.arange(w, dtype=jnp.int32)
  dr = rows[None, :] - clicks.coords[:, 0:1]  # (T, H)
  dc = cols[None, :] - clicks.coords[:, 1:2]  # (T, W)
  hp = jax.lax.Precision.HIGHEST
  if encoding == 'disk':
    inside = (dr[:, :, None] ** 2 + dc[:, None, :] ** 2).astype(jnp.float32) <= float(radius) ** 2
    maps = jnp.einsum('thw,tk->hwk', inside.astype(jnp.float32), onehot, precision=hp)
    out = (maps > 0).astype(jnp.float32)
    return out[..., ::-1] if reverse_classes else out
  kern = gaussian_kernel1d(sigma, truncate_sigmas)
  r = (kern.shape[0] - 1) // 2
  kern = jnp.asarray(kern, jnp.float32)

  def taps(d: jax.Array) -> jax.Array:  # kernel value at offset d, 0 outside the window
    return jnp.where(jnp.abs(d) <= r, kern[jnp.clip(d + r, 0, 2 * r)], 0.0)

  maps = jnp.einsum('th,tw,tk->hwk', taps(dr), taps(dc), onehot, precision=hp)
  lo = maps.min(axis=(0, 1), keepdims=True)
  hi = maps.max(axis=(0, 1), keepdims=True)
  span = hi - lo
  has = onehot.sum(axis=0)[None, None, :] > 0
  out = jnp.where(has & (span > 0), (maps - lo) / jnp.where(span > 0, span, 1.0), 0.0)
  out = out.astype(jnp.float32)
  return out[..., ::-1] if reverse_classes else out


def model_input(
  image: jax.Array,
  clicks: Clicks,
  num_classes: int,
  *,
  encoding: str = 'gaussian',
  sigma: float = 5.0,
  radius: float = 5.0,
  prev_mask: jax.Array | None = None,
  reverse_classes: bool = False,
) -> jax.Array:
  """Network input: image channels ++ guidance maps [++ previous mask].

  Args:
    image: (H, W, C) float32.
    clicks: Clicks.
    num_classes: K (static).
    encoding, sigma, radius, reverse_classes: see :func:`guidance_maps`.
    prev_mask: optional (H, W) or (H, W, 1), cast to float32 (e.g. the
      previous foreground mask or probability); ``None`` adds no channel.

  Returns:
    (H, W, C + K) or (H, W, C + K + 1) float32.
  """
  if jnp.ndim(image) != 3:
    raise errors.invalid('image.shape', tuple(jnp.shape(image)), '(H, W, C) for a single image')
  h, w = image.shape[:2]
  parts = [
    jnp.asarray(image, jnp.float32),
    guidance_maps(
      clicks,
      (h, w),
      num_classes,
      encoding=encoding,
      sigma=sigma,
      radius=radius,
      reverse_classes=reverse_classes,
    ),
  ]
  if prev_mask is not None:
    pm = jnp.asarray(prev_mask, jnp.float32)
    if pm.shape == (h, w):
      pm = pm[..., None]
    if pm.shape != (h, w, 1):
      raise errors.invalid(
        'prev_mask.shape', tuple(jnp.shape(prev_mask)), f'{(h, w)} or {(h, w, 1)}'
      )
    parts.append(pm)
  return jnp.concatenate(parts, axis=-1)
