"""Host-side checks of arrays entering the core (before they reach jitted code).

Each check raises one :class:`~yiplearn.errors.UserError` (a ``ValueError``) in the template
``field=value: expected ...``.
They run on host (numpy) arrays; a traced value (inside ``jit``/``vmap``) is only checked for its
static shape and dtype, since its values are unknown there.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from yiplearn import errors

__all__ = ['is_traced', 'pixel_dtype', 'label_dtype', 'image_batch', 'label_maps']


def is_traced(x: Any) -> bool:
  """True for a JAX tracer (values unknown at trace time)."""
  try:
    import jax  # pylint: disable=g-import-not-at-top

    return isinstance(x, jax.core.Tracer)
  except (ImportError, AttributeError):
    return False


def _dtype(x: Any) -> np.dtype:
  return np.dtype(getattr(x, 'dtype', None) or np.asarray(x).dtype)


def pixel_dtype(name: str, x: Any) -> None:
  """A real floating-point or integer dtype (not bool, complex, string or object)."""
  dtype = _dtype(x)
  if dtype == np.bool_ or not (
    np.issubdtype(dtype, np.floating) or np.issubdtype(dtype, np.integer)
  ):
    raise errors.invalid(f'{name}.dtype', dtype, 'real floating-point (or integer) pixels')


def label_dtype(name: str, x: Any) -> None:
  """An integer dtype (class indices)."""
  dtype = _dtype(x)
  if not np.issubdtype(dtype, np.integer):
    raise errors.invalid(f'{name}.dtype', dtype, 'integer class indices')


def image_batch(name: str, images: Any, *, rank: int = 4) -> None:
  """``images`` has ``rank`` dims (``(N, H, W, C)`` by default), a real numeric dtype and finite values."""
  shape = tuple(np.shape(images))
  if len(shape) != rank:
    layout = '(N, H, W, C)' if rank == 4 else '(H, W, C)' if rank == 3 else f'rank {rank}'
    raise errors.invalid(f'{name}.shape', shape, layout)
  pixel_dtype(name, images)
  dtype = _dtype(images)
  if is_traced(images) or not np.issubdtype(dtype, np.floating) or np.size(images) == 0:
    return
  finite = (
    np.isfinite(np.asarray(images)).reshape(shape[0], -1).all(axis=1)
    if rank == 4
    else np.atleast_1d(np.isfinite(np.asarray(images)).all())
  )
  if not finite.all():
    bad = np.flatnonzero(~finite)[:5].tolist()
    where = f'NaN or Inf pixels in images {bad}' if rank == 4 else 'NaN or Inf pixels'
    raise errors.invalid(name, where, 'finite values (drop or repair them)')


def label_maps(
  name: str, masks: Any, num_classes: int | None = None, *, shape: Sequence[int] | None = None
) -> None:
  """Integer class maps with values in ``[0, num_classes)`` and, if given, the ``shape`` of the images."""
  label_dtype(name, masks)
  if shape is not None and tuple(np.shape(masks)) != tuple(shape):
    raise errors.invalid(
      f'{name}.shape', tuple(np.shape(masks)), f"{tuple(shape)} (the images' N, H, W)"
    )
  if num_classes is None or is_traced(masks) or np.size(masks) == 0:
    return
  values = np.asarray(masks)
  lo, hi = int(values.min()), int(values.max())
  if lo < 0 or hi >= num_classes:
    raise errors.invalid(f'{name} values', [lo, hi], f'classes in [0, {num_classes})')
