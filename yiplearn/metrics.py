"""Segmentation and interactive-segmentation metrics (pure, jittable).

Class maps are integer arrays (..., H, W); leading axes are batch axes and
are kept. Dice-per-click curves are float arrays (..., T) whose last axis is
the click index (entry t-1 = Dice after click t).

Conventions:

* Dice of a class that is absent from both prediction and ground truth is
  1.0 (nothing to find, nothing found).
* NoC@thr (number of clicks to reach Dice >= thr) follows the RITM
  convention: the first 1-based click index whose Dice reaches ``thr``; an
  image that never reaches it counts as T (the maximal number of clicks).
  Report :func:`reached` alongside it (the failure rate = 1 - mean reached).
* Dice-AUC is the trapezoidal area under Dice vs click index 1..T divided by
  T - 1, so it lies in [0, 1]; for T = 1 it is the single value.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp

from yiplearn import errors

__all__ = ['dice_per_class', 'foreground_dice', 'dice_at_clicks', 'noc', 'reached', 'dice_auc']


def _check_pair(pred: jax.Array, gt: jax.Array) -> None:
  if jnp.shape(pred) != jnp.shape(gt):
    raise errors.invalid('pred.shape', jnp.shape(pred), f'the shape of gt, {jnp.shape(gt)}')
  if jnp.ndim(pred) < 2:
    raise errors.invalid('pred.shape', jnp.shape(pred), '(..., H, W) class maps')


def _dice(p: jax.Array, g: jax.Array) -> jax.Array:
  """Dice of boolean masks over the last two axes; 1.0 when both empty."""
  inter = jnp.sum(p & g, axis=(-2, -1)).astype(jnp.float32)
  total = (jnp.sum(p, axis=(-2, -1)) + jnp.sum(g, axis=(-2, -1))).astype(jnp.float32)
  return jnp.where(total > 0, 2.0 * inter / jnp.maximum(total, 1.0), 1.0)


def dice_per_class(pred: jax.Array, gt: jax.Array, num_classes: int) -> jax.Array:
  """Dice of every class (background included, index 0).

  Args:
    pred: (..., H, W) int class map.
    gt: (..., H, W) int class map.
    num_classes: K (static).

  Returns:
    (..., K) float32; a class absent from both maps scores 1.0.
  """
  _check_pair(pred, gt)
  if int(num_classes) != num_classes or num_classes < 1:
    raise errors.invalid('num_classes', num_classes, 'a positive integer')
  ks = jnp.arange(int(num_classes))
  p = pred[..., None, :, :] == ks[:, None, None]
  g = gt[..., None, :, :] == ks[:, None, None]
  return _dice(p, g)


def foreground_dice(pred: jax.Array, gt: jax.Array, classes: Sequence[int] | int) -> jax.Array:
  """Dice of the union of ``classes`` (e.g. fundus disc = rim | cup = (1, 2)).

  Args:
    pred, gt: (..., H, W) int class maps.
    classes: a class index or a static sequence of them.

  Returns:
    (...) float32; 1.0 when the union is empty in both.
  """
  _check_pair(pred, gt)
  cls = jnp.atleast_1d(jnp.asarray(classes, jnp.int32))
  if cls.size == 0:
    raise errors.invalid('classes', list(classes), 'at least one class')
  return _dice(jnp.isin(pred, cls), jnp.isin(gt, cls))


def _check_curve(curve: jax.Array) -> jax.Array:
  curve = jnp.asarray(curve)
  if curve.ndim < 1 or curve.shape[-1] < 1:
    raise errors.invalid('curve.shape', curve.shape, '(..., T) with T >= 1')
  return curve


def dice_at_clicks(curve: jax.Array, clicks: Sequence[int]) -> jax.Array:
  """Dice after the given 1-based click counts, e.g. (1, 5, 10) -> (..., 3)."""
  curve = _check_curve(curve)
  t = curve.shape[-1]
  idx = [int(c) for c in clicks]
  bad = [c for c in idx if not 1 <= c <= t]
  if bad:
    raise errors.invalid('clicks', bad, f'click counts in [1, T={t}]')
  return curve[..., jnp.asarray(idx, jnp.int32) - 1]


def reached(curve: jax.Array, threshold: float) -> jax.Array:
  """Whether Dice >= ``threshold`` at any click: (..., T) -> (...) bool."""
  curve = _check_curve(curve)
  return jnp.any(curve >= threshold, axis=-1)


def noc(curve: jax.Array, threshold: float) -> jax.Array:
  """Number of clicks to reach Dice >= ``threshold`` (RITM convention).

  Args:
    curve: (..., T) Dice after clicks 1..T.
    threshold: e.g. 0.85 for NoC@85.

  Returns:
    (...) int32 in [1, T]: first 1-based index with curve >= threshold, or
    T when never reached (see :func:`reached` for the failure rate).
  """
  curve = _check_curve(curve)
  t = curve.shape[-1]
  hit = curve >= threshold
  first = jnp.argmax(hit, axis=-1).astype(jnp.int32) + 1
  return jnp.where(hit.any(axis=-1), first, jnp.int32(t))


def dice_auc(curve: jax.Array) -> jax.Array:
  """Normalised area under the Dice-per-click curve.

  Trapezoidal rule over click indices 1..T with unit spacing, divided by
  T - 1 (the x-range), so a constant curve c gives c. T = 1 gives the value.

  Args:
    curve: (..., T) float.

  Returns:
    (...) float32.
  """
  curve = _check_curve(curve).astype(jnp.float32)
  t = curve.shape[-1]
  if t == 1:
    return curve[..., 0]
  area = jnp.sum(0.5 * (curve[..., 1:] + curve[..., :-1]), axis=-1)
  return area / (t - 1)
