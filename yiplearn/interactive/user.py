"""Simulated user for interactive segmentation (DESIGN 1.1, "Simulated user").

All functions are per image, pure and jittable; policies and click counts are
static. Class maps are (H, W) integer arrays with values in [0, num_classes).

Click placement policies (static strings):

* ``'random_in_largest'`` (the paper's): a uniformly random pixel of the
  chosen region (Gumbel-max over its pixels via ``jax.random.categorical``).
* ``'deepest'`` (RITM / NoC convention): the region's pixel farthest from its
  boundary by exact Euclidean distance transform, with the image border
  counting as boundary (the mask is zero-padded by one pixel, as RITM does);
  ties go to the first pixel in raster order. Deterministic (ignores the key).

A returned click is ``(coord (2,) int32 (row, col), label int32, valid bool)``;
``valid`` is False when there is nothing to click (coord and label are then 0).

Degenerate ground truths (defined behaviour, not errors):

* empty (no foreground pixel): click 1 is not placed (``valid`` False, its slot stays
  invalid); from click 2 on the user corrects the prediction's false positives with
  background clicks (label 0), and no click is placed once the prediction is empty too.
  The experiments drop such images by default (``data.foreground_only``).
* all foreground: the whole image is one component, so click 1 lies in it; corrections
  follow the prediction's errors as usual.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from yiplearn.clicks import Clicks
from yiplearn.imageops import (
  component_sizes,
  label_regions,
  largest_component,
  squared_distance_transform,
)

__all__ = ['POLICIES', 'first_click', 'correction_click', 'simulate_clicks', 'error_regions']

POLICIES = ('random_in_largest', 'deepest')


def _check_policy(policy: str) -> None:
  if policy not in POLICIES:
    raise ValueError(f'policy must be one of {POLICIES}, got {policy!r}')


def _check_map(name: str, x: jax.Array, shape: tuple[int, ...] | None = None) -> None:
  if jnp.ndim(x) != 2:
    raise ValueError(
      f'{name} must be an (H, W) class map for one image, got shape {jnp.shape(x)}; use jax.vmap'
    )
  if not jnp.issubdtype(jnp.asarray(x).dtype, jnp.integer):
    raise ValueError(
      f'{name} must have an integer dtype (class indices), got {jnp.asarray(x).dtype}'
    )
  if shape is not None and tuple(jnp.shape(x)) != tuple(shape):
    raise ValueError(f'{name} must have shape {tuple(shape)}, got {jnp.shape(x)}')


def _check_num_classes(num_classes: int) -> None:
  if int(num_classes) != num_classes or num_classes < 2:
    raise ValueError(f'num_classes must be an integer >= 2, got {num_classes!r}')


def _pick_pixel(key: jax.Array, region: jax.Array, policy: str) -> jax.Array:
  """A pixel of ``region`` ((H, W) bool) as (2,) int32; (0, 0) if empty."""
  h, w = region.shape
  flat = region.reshape(-1)
  if policy == 'random_in_largest':
    any_px = flat.any()
    logits = jnp.where(flat | ~any_px, 0.0, -jnp.inf)
    idx = jax.random.categorical(key, logits)
  else:
    d2 = squared_distance_transform(jnp.pad(region, 1))[1:-1, 1:-1].reshape(-1)
    idx = jnp.argmax(jnp.where(flat, d2, -1))
  idx = jnp.where(flat.any(), idx, 0).astype(jnp.int32)
  return jnp.stack([idx // w, idx % w]).astype(jnp.int32)


def _at(x: jax.Array, coord: jax.Array) -> jax.Array:
  return x[coord[0], coord[1]].astype(jnp.int32)


def first_click(
  key: jax.Array, gt: jax.Array, *, policy: str = 'random_in_largest'
) -> tuple[jax.Array, jax.Array, jax.Array]:
  """First click: inside the largest 8-connected component of ``gt > 0``.

  Args:
    key: PRNG key (unused by 'deepest').
    gt: (H, W) int ground-truth class map (0 = background).
    policy: 'random_in_largest' or 'deepest' (static).

  Returns:
    (coord (2,) int32, label int32 = gt at coord, valid bool = foreground
    non-empty).
  """
  _check_policy(policy)
  _check_map('gt', gt)
  region = largest_component(gt > 0)
  coord = _pick_pixel(key, region, policy)
  valid = region.any()
  label = jnp.where(valid, _at(gt, coord), 0)
  return coord, label, valid


def error_regions(
  target: jax.Array, pred: jax.Array, num_classes: int, exclude: jax.Array | None = None
) -> tuple[jax.Array, jax.Array]:
  """Label every (true class a, predicted class b != a) error region at once.

  Args:
    target: (H, W) int class map (ground truth or pseudo-label).
    pred: (H, W) int predicted class map.
    num_classes: K (static); values must lie in [0, K).
    exclude: optional (H, W) bool; these pixels are not errors.

  Returns:
    (labels (H, W) int32 -- 0 = no error, 8-connected regions of equal
    (a, b) numbered from 1 in raster order; sizes (H*W + 1,) int32).
  """
  err = target != pred
  if exclude is not None:
    err = err & ~jnp.asarray(exclude, bool)
  code = target.astype(jnp.int32) * int(num_classes) + pred.astype(jnp.int32)
  labels = label_regions(code, err)
  return labels, component_sizes(labels)


def correction_click(
  key: jax.Array,
  target: jax.Array,
  pred: jax.Array,
  num_classes: int,
  *,
  policy: str = 'random_in_largest',
  exclude: jax.Array | None = None,
) -> tuple[jax.Array, jax.Array, jax.Array]:
  """A correction click in the largest error region.

  Over every (true class a, predicted class b != a) confusion, the
  8-connected components of ``(target == a) & (pred == b)`` (minus
  ``exclude``); the largest over all of them (ties: first in raster order)
  gets the click, labelled with ``target`` there.

  Args:
    key: PRNG key (unused by 'deepest').
    target: (H, W) int class map.
    pred: (H, W) int class map, same shape.
    num_classes: K (static).
    policy: 'random_in_largest' or 'deepest' (static).
    exclude: optional (H, W) bool of pixels that may not be clicked.

  Returns:
    (coord (2,) int32, label int32, valid bool); valid False when
    prediction == target everywhere (outside ``exclude``).
  """
  _check_policy(policy)
  _check_map('target', target)
  _check_map('pred', pred, jnp.shape(target))
  _check_num_classes(num_classes)
  if exclude is not None and tuple(jnp.shape(exclude)) != tuple(jnp.shape(target)):
    raise ValueError(f'exclude must have shape {jnp.shape(target)}, got {jnp.shape(exclude)}')
  labels, sizes = error_regions(target, pred, num_classes, exclude)
  best = jnp.argmax(sizes)
  valid = sizes[best] > 0
  region = (labels == best) & valid
  coord = _pick_pixel(key, region, policy)
  label = jnp.where(valid, _at(target, coord), 0)
  return coord, label, valid


def simulate_clicks(
  key: jax.Array,
  target: jax.Array,
  pred: jax.Array,
  num_classes: int,
  n: int,
  *,
  policy: str = 'random_in_largest',
) -> Clicks:
  """Up to ``n`` correction clicks, one per error region, largest region first.

  Equivalent to calling :func:`correction_click` n times and removing each
  clicked region before the next call: the regions are labelled once and
  the n largest (ties: raster order of first pixel) each get one click,
  labelled with ``target`` there. Click i uses ``fold_in(key, i)``. Used by
  Post-Interaction stage 2 and click pre-training.

  Args:
    key: PRNG key.
    target: (H, W) int class map (e.g. the accepted final mask).
    pred: (H, W) int class map (e.g. argmax of the first-click prediction).
    num_classes: K (static).
    n: static capacity (number of clicks), >= 1.
    policy: 'random_in_largest' or 'deepest' (static).

  Returns:
    Clicks of capacity n; slot i valid iff there are more than i error regions.
  """
  _check_policy(policy)
  _check_map('target', target)
  _check_map('pred', pred, jnp.shape(target))
  _check_num_classes(num_classes)
  if int(n) != n or n < 1:
    raise ValueError(f'n must be a positive integer, got {n!r}')
  n = int(n)
  labels, sizes = error_regions(target, pred, num_classes)
  k = min(n, sizes.shape[0])
  top_sizes, top_ids = jax.lax.top_k(sizes, k)  # ties: lower id (raster order) first

  def one(args):
    i, region_id, size = args
    region = (labels == region_id) & (size > 0)
    return _pick_pixel(jax.random.fold_in(key, i), region, policy)

  idx = jnp.arange(k, dtype=jnp.int32)
  if policy == 'deepest':  # EDT per region: sequential to bound memory
    coords = jax.lax.map(one, (idx, top_ids, top_sizes))
  else:
    coords = jax.vmap(lambda *a: one(a))(idx, top_ids, top_sizes)
  valid = top_sizes > 0
  lab = jnp.where(valid, target[coords[:, 0], coords[:, 1]].astype(jnp.int32), 0)
  if k < n:  # more slots than pixels: pad with invalid slots
    pad = n - k
    coords = jnp.concatenate([coords, jnp.zeros((pad, 2), jnp.int32)])
    lab = jnp.concatenate([lab, jnp.zeros((pad,), jnp.int32)])
    valid = jnp.concatenate([valid, jnp.zeros((pad,), bool)])
  return Clicks(coords=coords.astype(jnp.int32), labels=lab, valid=valid)
