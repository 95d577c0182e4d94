"""BatchNorm statistics of merged models: one option set for every merging method (DESIGN 1.2).

Running statistics belong to the weights that produced them, so a merged weight vector gets one of

  'recompute'  statistics re-estimated for the merged weights: one training-mode forward pass over a
               fixed calibration set of source images (`recompute`), the merging literature's choice
               and the default for static merges;
  'merge'      the experts' statistics merged with the method's coefficients normalised to the simplex
               (`merge_coefficients`: clipped at 0 and divided by their sum, so merged variances are
               convex combinations of positive variances and stay positive);
  'batch'      the test batch's own statistics (BatchNorm in training mode, running values unused).

Statistics are the leaves outside the `params` collection (flax `batch_stats`). Models without them
(LayerNorm ViTs, instance-norm U-Nets) pass through every mode unchanged.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from yiplearn import errors
from yiplearn.merging import tree as tr

PyTree = Any
MODES = ('merge', 'batch', 'recompute')


def is_stat(path: tuple) -> bool:
  """A leaf outside the `params` collection (BatchNorm running mean / variance)."""
  names = tr.path_names(path)
  return bool(names) and names[0] != 'params'


def normalised(coeffs: jax.Array) -> jax.Array:
  """Coefficients (..., K) clipped at 0 and divided by their sum over K (uniform where all are 0)."""
  c = jnp.clip(coeffs.astype(jnp.float32), 0.0)
  s = jnp.sum(c, axis=-1, keepdims=True)
  return jnp.where(s > 0, c / jnp.where(s > 0, s, 1.0), 1.0 / c.shape[-1])


def merge_coefficients(tree: PyTree, coeffs: jax.Array) -> jax.Array:
  """Per-leaf coefficients (L, K) for `tr.merge(tree, tau, ...)`: a statistics leaf gets the
  normalised row, a parameter leaf the row as given. `coeffs` is (K,) or (L, K); L counts the
  non-None leaves of `tree` in flattening order (as `tr.merge` does)."""
  paths = [p for p, _ in jax.tree_util.tree_leaves_with_path(tree)]
  rows = jnp.broadcast_to(coeffs, (len(paths), coeffs.shape[-1])) if coeffs.ndim == 1 else coeffs
  stat = jnp.asarray([is_stat(p) for p in paths], bool)[:, None]
  return jnp.where(stat, normalised(rows), rows)


def _momentum(model) -> float | None:
  return getattr(getattr(model, 'encoder', None), 'bn_momentum', None)


def recompute(model, variables: PyTree, images: jax.Array) -> PyTree:
  """`variables` with BatchNorm statistics re-estimated on `images` (N, H, W, C) as one batch.

  Each layer's statistics are those of its input in the training-mode forward pass of these weights
  over the whole calibration set (every layer before it normalised with the set's statistics), so an
  eval-mode forward on `images` afterwards equals the training-mode one. Pure and jittable (usable
  per merge candidate); `model` needs `encode_with_updates` (see `models.classifier`).
  """
  if 'batch_stats' not in variables:
    return variables
  zeros = jax.tree.map(jnp.zeros_like, variables['batch_stats'])
  _, v0 = model.encode_with_updates(dict(variables, batch_stats=zeros), images)
  m = _momentum(model)
  if m is None:  # new = m * old + (1 - m) * batch: a second pass from ones gives m
    ones = jax.tree.map(jnp.ones_like, variables['batch_stats'])
    _, v1 = model.encode_with_updates(dict(variables, batch_stats=ones), images)
    stats = jax.tree.map(lambda a, b: a / (1.0 - (b - a)), v0['batch_stats'], v1['batch_stats'])
  else:
    stats = jax.tree.map(lambda a: a / jnp.asarray(1.0 - m, a.dtype), v0['batch_stats'])
  return dict(variables, batch_stats=stats)


def check_mode(bn_mode: str, calibration: Any, modes: tuple[str, ...] = MODES) -> None:
  """`bn_mode` is one of `modes`; 'recompute' needs calibration images (N, H, W, C)."""
  if bn_mode not in modes:
    raise errors.invalid('bn_mode', bn_mode, f'one of {modes}')
  if bn_mode == 'recompute' and (calibration is None or jnp.ndim(calibration) != 4):
    raise errors.invalid(
      'calibration',
      None if calibration is None else jnp.shape(calibration),
      "source images (N, H, W, C) for bn_mode='recompute'",
    )


def prepare_fn(model, bn_mode: str, calibration: Any) -> Callable[[PyTree], PyTree]:
  """variables -> variables for `bn_mode`: re-estimated statistics for 'recompute', else unchanged."""
  check_mode(bn_mode, calibration)
  if bn_mode != 'recompute':
    return lambda v: v
  calib = jnp.asarray(calibration, jnp.float32)
  return lambda v: recompute(model, v, calib)
