"""Simulated user for interactive segmentation (DESIGN 1.1, "Simulated user").

All functions are per image, pure and jittable; policies, tie-breaks and click counts are
static. Class maps are (H, W) integer arrays with values in [0, num_classes).

Click placement policies (static strings):

* ``'random_in_largest'`` (the paper's): a uniformly random pixel of the chosen region
  (Gumbel-max over its pixels via ``jax.random.categorical``).
* ``'deepest'`` (RITM / NoC convention): the region's pixel farthest from its boundary by exact
  Euclidean distance transform, with the image border counting as boundary (the mask is
  zero-padded by one pixel, as RITM does); ties go to the first pixel in raster order.
  Deterministic (ignores the key).

Ties between error components of equal size (static ``tie_break``):

* ``'first'`` [default]: the component whose first pixel comes first in raster order.
* ``'released'`` (the authors' released code sorts its components stably by area and takes the
  last): the later error type in its order -- (true, predicted) = (1, 2), (2, 1), (1, 0), (0, 1),
  (2, 0), (0, 2) for K = 3 and (1, 0), (0, 1) for K = 2 -- then the later component in raster
  order of first pixel (OpenCV numbers components in its block-scan order, which can differ for
  components starting in the same two rows).

A returned click is ``(coord (2,) int32 (row, col), label int32, valid bool)``; ``valid`` is False
when there is nothing to click (coord and label are then 0).

Degenerate ground truths (defined behaviour, not errors):

* empty (no foreground pixel): click 1 is not placed (``valid`` False, its slot stays invalid);
  from click 2 on the user corrects the prediction's false positives with background clicks
  (label 0), and no click is placed once the prediction is empty too. The experiments drop such
  images by default (``data.foreground_only``).
* all foreground: click 1 lies in the largest single-class component; corrections follow the
  prediction's errors as usual.

Pre-training click samplers are in :mod:`yiplearn.interactive.sampler`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from yiplearn import errors
from yiplearn.clicks import Clicks
from yiplearn.imageops import component_sizes, label_regions, squared_distance_transform

__all__ = [
  'POLICIES',
  'TIE_BREAKS',
  'FILLS',
  'first_click',
  'correction_click',
  'simulate_clicks',
  'error_regions',
  'region_ranks',
  'region_values',
  'pick_pixel',
]

POLICIES = ('random_in_largest', 'deepest')
TIE_BREAKS = ('first', 'released')
FILLS = ('invalid', 'released')

# The released code's (true class, predicted class) error types in the order it lists them.
_RELEASED_ORDER = {
  2: ((1, 0), (0, 1)),
  3: ((1, 2), (2, 1), (1, 0), (0, 1), (2, 0), (0, 2)),
}


def check_choice(field: str, value: str, choices: tuple[str, ...]) -> None:
  if value not in choices:
    raise errors.invalid(field, value, f'one of {choices}')


def check_map(name: str, x: jax.Array, shape: tuple[int, ...] | None = None) -> None:
  if jnp.ndim(x) != 2:
    raise errors.invalid(
      f'{name}.shape', tuple(jnp.shape(x)), 'an (H, W) class map for one image (use jax.vmap)'
    )
  if not jnp.issubdtype(jnp.asarray(x).dtype, jnp.integer):
    raise errors.invalid(f'{name}.dtype', str(jnp.asarray(x).dtype), 'an integer dtype')
  if shape is not None and tuple(jnp.shape(x)) != tuple(shape):
    raise errors.invalid(f'{name}.shape', tuple(jnp.shape(x)), f'{tuple(shape)}')


def check_num_classes(num_classes: int, tie_break: str = 'first') -> None:
  if int(num_classes) != num_classes or num_classes < 2:
    raise errors.invalid('num_classes', num_classes, 'an integer >= 2')
  if tie_break == 'released' and int(num_classes) not in _RELEASED_ORDER:
    raise errors.invalid('num_classes', num_classes, "2 or 3 with tie_break='released'")


def check_errors_args(
  target: jax.Array, pred: jax.Array, num_classes: int, policy: str, tie_break: str, n=None
) -> None:
  """The checks shared by the functions that click error components (n: a click count or None)."""
  check_choice('policy', policy, POLICIES)
  check_choice('tie_break', tie_break, TIE_BREAKS)
  check_map('target', target)
  check_map('pred', pred, jnp.shape(target))
  check_num_classes(num_classes, tie_break)
  if n is not None and (int(n) != n or n < 1):
    raise errors.invalid('n', n, 'a positive integer')


def pick_pixel(key: jax.Array, region: jax.Array, policy: str) -> jax.Array:
  """A pixel of ``region`` ((H, W) bool) by ``policy`` as (2,) int32; (0, 0) if empty."""
  _, w = region.shape
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


def region_values(values: jax.Array, labels: jax.Array) -> jax.Array:
  """``values`` on each region id of ``labels`` (constant within a region): (H*W + 1,) int32."""
  n = labels.size + 1
  seg = jax.ops.segment_max(values.reshape(-1).astype(jnp.int32), labels.reshape(-1), n)
  return jnp.maximum(seg, 0)  # unused ids: 0 (values are class indices >= 0)


def region_ranks(
  labels: jax.Array, target: jax.Array, pred: jax.Array, num_classes: int, tie_break: str
) -> jax.Array:
  """Preference among equal-size regions, (H*W + 1,) int32: the higher rank wins a tie.

  ``'first'``: -id (raster order of first pixel). ``'released'``: the region's error-type index in
  the released code's order times (H*W + 1) plus its id (later type, then later id).
  """
  ids = jnp.arange(labels.size + 1, dtype=jnp.int32)
  if tie_break == 'first':
    return -ids
  k = int(num_classes)
  table = [-1] * (k * k)
  for i, (a, b) in enumerate(_RELEASED_ORDER[k]):
    table[a * k + b] = i
  code = region_values(target.astype(jnp.int32) * k + pred.astype(jnp.int32), labels)
  kind = jnp.asarray(table, jnp.int32)[jnp.clip(code, 0, k * k - 1)]
  return kind * ids.shape[0] + ids


def _best(sizes: jax.Array, ranks: jax.Array) -> jax.Array:
  """Id of the largest region, ties to the highest rank (0 when every size is 0)."""
  top = sizes == jnp.max(sizes)
  return jnp.argmax(jnp.where(top, ranks, jnp.iinfo(jnp.int32).min)).astype(jnp.int32)


def first_click(
  key: jax.Array, gt: jax.Array, *, policy: str = 'random_in_largest', tie_break: str = 'first'
) -> tuple[jax.Array, jax.Array, jax.Array]:
  """First click: the correction rule against an all-background prediction.

  The largest 8-connected component of ``gt == k`` over every foreground class k (fundus: the
  larger of the rim and the cup components, not the whole disc), labelled k.

  Args:
    key: PRNG key (unused by 'deepest').
    gt: (H, W) int ground-truth class map (0 = background).
    policy: 'random_in_largest' or 'deepest' (static).
    tie_break: 'first' or 'released' (static); among (k, 0) error types the released order is
      ascending in k, so 'released' prefers the higher class, then the later component.

  Returns:
    (coord (2,) int32, label int32 = gt at coord, valid bool = foreground non-empty).
  """
  check_choice('policy', policy, POLICIES)
  check_choice('tie_break', tie_break, TIE_BREAKS)
  check_map('gt', gt)
  labels = label_regions(gt.astype(jnp.int32), gt > 0)
  sizes = component_sizes(labels)
  ids = jnp.arange(sizes.shape[0], dtype=jnp.int32)
  if tie_break == 'first':
    ranks = -ids
  else:
    ranks = region_values(gt, labels) * sizes.shape[0] + ids
  best = _best(sizes, ranks)
  valid = sizes[best] > 0
  coord = pick_pixel(key, (labels == best) & valid, policy)
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
    (labels (H, W) int32 -- 0 = no error, 8-connected regions of equal (a, b) numbered from 1 in
    raster order; sizes (H*W + 1,) int32).
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
  tie_break: str = 'first',
) -> tuple[jax.Array, jax.Array, jax.Array]:
  """A correction click in the largest error region.

  Over every (true class a, predicted class b != a) confusion, the 8-connected components of
  ``(target == a) & (pred == b)`` (minus ``exclude``); the largest over all of them (ties by
  ``tie_break``) gets the click, labelled with ``target`` there.

  Args:
    key: PRNG key (unused by 'deepest').
    target: (H, W) int class map.
    pred: (H, W) int class map, same shape.
    num_classes: K (static).
    policy: 'random_in_largest' or 'deepest' (static).
    exclude: optional (H, W) bool of pixels that may not be clicked.
    tie_break: 'first' or 'released' (static, see the module docstring).

  Returns:
    (coord (2,) int32, label int32, valid bool); valid False when prediction == target everywhere
    (outside ``exclude``).
  """
  check_errors_args(target, pred, num_classes, policy, tie_break)
  if exclude is not None and tuple(jnp.shape(exclude)) != tuple(jnp.shape(target)):
    raise errors.invalid('exclude.shape', tuple(jnp.shape(exclude)), f'{jnp.shape(target)}')
  labels, sizes = error_regions(target, pred, num_classes, exclude)
  best = _best(sizes, region_ranks(labels, target, pred, num_classes, tie_break))
  valid = sizes[best] > 0
  coord = pick_pixel(key, (labels == best) & valid, policy)
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
  tie_break: str = 'first',
  fill: str = 'invalid',
) -> Clicks:
  """Up to ``n`` correction clicks, one per error region, largest region first.

  Equivalent to calling :func:`correction_click` n times and removing each clicked region before
  the next call: the regions are labelled once and the n largest (ties by ``tie_break``) each get
  one click, labelled with ``target`` there. Click i uses ``fold_in(key, i)``. Used by
  Post-Interaction stage 2.

  Args:
    key: PRNG key.
    target: (H, W) int class map (e.g. the accepted final mask).
    pred: (H, W) int class map (e.g. argmax of the first-click prediction).
    num_classes: K (static).
    n: static capacity (number of clicks), >= 1.
    policy: 'random_in_largest' or 'deepest' (static).
    tie_break: 'first' or 'released' (static).
    fill: what the slots without an error region hold (static): 'invalid' [default] or
      'released' (the authors' code always feeds n clicks: with m < n regions the largest
      region's click is repeated in the n - m spare slots, valid; with none, all n slots are
      valid background clicks (label 0) at (0, 0)).

  Returns:
    Clicks of capacity n; with 'invalid', slot i valid iff there are more than i error regions.
  """
  check_choice('fill', fill, FILLS)
  check_errors_args(target, pred, num_classes, policy, tie_break, n)
  n = int(n)
  labels, sizes = error_regions(target, pred, num_classes)
  k = min(n, sizes.shape[0])
  if tie_break == 'first':
    top_sizes, top_ids = jax.lax.top_k(sizes, k)  # ties: lower id (raster order) first
  else:
    ranks = region_ranks(labels, target, pred, num_classes, tie_break)
    top_ids = jnp.lexsort((-ranks, -sizes))[:k].astype(jnp.int32)
    top_sizes = sizes[top_ids]

  def one(args):
    i, region_id, size = args
    region = (labels == region_id) & (size > 0)
    return pick_pixel(jax.random.fold_in(key, i), region, policy)

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
  if fill == 'released':  # spare slots repeat slot 0 (the largest; (0, 0) background if none)
    coords = jnp.where(valid[:, None], coords, coords[0])
    lab = jnp.where(valid, lab, lab[0])
    valid = jnp.ones_like(valid)
  return Clicks(coords=coords.astype(jnp.int32), labels=lab, valid=valid)
