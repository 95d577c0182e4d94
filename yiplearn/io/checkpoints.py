"""Orbax checkpointing of a state pytree plus a JSON `extra` dict, with resume from the workdir.

`Checkpointer(dir).save(step, state, extra={...})` writes synchronously and atomically (orbax
renames a finished temporary directory), keeps the newest `max_to_keep`, and
`restore(None, target)` returns the newest one. Nothing is unpickled: arrays come from
tensorstore/OCDBT and `extra` from JSON.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from yiplearn import errors


class CheckpointError(errors.UserError):
  """A checkpoint that cannot be restored into the requested structure."""


def _abstract(target: Any) -> Any:
  def leaf(x):
    if not (
      hasattr(x, 'shape') and hasattr(x, 'dtype')
    ):  # arrays and jax.ShapeDtypeStruct pass through
      x = np.asarray(x)
    # A global jax.Array target keeps its sharding: every process restores its own shards (multi-host).
    # Multi-host, a process-local target is restored as numpy (orbax restores no host-local arrays).
    if _host_local(x):
      return np.zeros((), x.dtype) if x.shape == () else np.empty(x.shape, x.dtype)
    return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=getattr(x, 'sharding', None))

  return jax.tree_util.tree_map(leaf, target)


def _host_local(x: Any) -> bool:
  """A process-local jax.Array of a multi-process run (orbax serialises only global arrays)."""
  return jax.process_count() > 1 and isinstance(x, jax.Array) and x.is_fully_addressable


def _savable(state: Any) -> Any:
  """Multi-host: process-local arrays (the same on every process) are saved as numpy by process 0."""
  if jax.process_count() == 1:
    return state
  return jax.tree_util.tree_map(lambda x: np.asarray(x) if _host_local(x) else x, state)


class Checkpointer:
  """A thin wrapper over `ocp.CheckpointManager` with items `state` (pytree) and `extra` (JSON)."""

  def __init__(self, directory: str | os.PathLike, *, max_to_keep: int | None = 3):
    if max_to_keep is not None and max_to_keep < 1:
      raise errors.invalid('max_to_keep', max_to_keep, 'a positive integer or None (keep all)')
    self.directory = os.path.abspath(os.fspath(directory))
    options = ocp.CheckpointManagerOptions(
      max_to_keep=max_to_keep,
      create=True,
      enable_async_checkpointing=False,
      cleanup_tmp_directories=True,
    )
    self._manager = ocp.CheckpointManager(
      self.directory, options=options, item_names=('state', 'extra')
    )

  def all_steps(self) -> list[int]:
    return sorted(self._manager.all_steps())

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def save(self, step: int, state: Any, *, extra: dict | None = None, force: bool = True) -> None:
    """Saves `state` (a pytree of arrays) and `extra` (JSON-serialisable) as checkpoint `step`."""
    self._manager.save(
      int(step),
      args=ocp.args.Composite(
        state=ocp.args.StandardSave(_savable(state)), extra=ocp.args.JsonSave(dict(extra or {}))
      ),
      force=force,
    )
    self._manager.wait_until_finished()

  def restore(self, step: int | None, target: Any) -> tuple[Any, dict]:
    """Restores checkpoint `step` (None: the newest) into the structure, shapes and dtypes of `target`.

    Raises MissingDataError when there is no checkpoint and CheckpointError when the stored
    tree does not match `target` (another architecture, a truncated or corrupt checkpoint).
    """
    if step is None:
      step = self.latest_step()
      if step is None:
        raise errors.MissingDataError(
          errors.message(
            'checkpoint directory',
            self.directory,
            'a step directory written by Checkpointer.save (no checkpoint there: run the '
            'training experiment first)',
          )
        )
    elif step not in self._manager.all_steps():
      raise errors.MissingDataError(
        errors.message('checkpoint step', step, f'one of {self.all_steps()} in {self.directory}')
      )
    try:
      restored = self._manager.restore(
        int(step),
        args=ocp.args.Composite(
          state=ocp.args.StandardRestore(_abstract(target)), extra=ocp.args.JsonRestore()
        ),
      )
    except Exception as e:  # orbax raises many types for mismatches and corruption
      raise CheckpointError(
        errors.message(
          'checkpoint',
          os.path.join(self.directory, str(step)),
          "one with this model's structure (this is of another architecture, or corrupt or "
          f'truncated: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ""})',
        )
      ) from e
    return restored['state'], dict(restored['extra'] or {})

  def close(self) -> None:
    self._manager.close()

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()
