"""The one resumable item loop: restore, start index, save every N, done marker, trimmed JSONL.

Pre-training (steps), `adapt_interactive` (images of a stream), `sweep_interactive` (images of the
vmapped streams) and `merge_online` (batches of a stream) all loop over items 0..total-1 with a
carry (a pytree of arrays: train state, per-item results) that a run killed at any moment resumes:

    loop = ItemLoop(dir, total, every=N, desc='camera_c/pi images',
                    done_path=dir + '.npz', log_path=dir + '.jsonl', log_key='index')
    if loop.finished:
      return loop.result()                 # the done marker of a finished loop
    carry, extra = loop.restore(carry)     # the newest checkpoint, if any; loop.start items done
    for i in loop:                         # i = loop.start .. total-1, progress logged
      carry = ...
      loop.log.write({'index': i, ...})    # the JSONL, trimmed on resume to records before loop.start
      loop.save(i + 1, carry, extra={...}) # a checkpoint every N items (and after the last if asked)
    loop.finish(result)                    # done marker written atomically (one process), closed

A checkpoint's step is the number of items done, so the restored step is the start index. A log
record written after the last checkpoint by a killed run is dropped on resume, so the log holds every
item exactly once. Only the writer process (`files.is_writer`) writes the done marker and the log.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from typing import Any

import numpy as np
from absl import logging

from yiplearn import errors
from yiplearn.io import checkpoints, files, progress, writers


class ItemLoop:
  """A checkpointed loop over items [0, total), resumed from `directory` (see the module docstring).

  Args:
    directory: the checkpoints of this loop (orbax; `max_to_keep` newest kept).
    total: number of items.
    every: items between checkpoints.
    desc: what the progress lines count.
    done_path: the done marker, written by `finish` (`.npz`: a dict of arrays; else JSON).
    log_path, log_key: a per-item JSONL log, trimmed on restore to `record[log_key] < start`.
    save_last: also checkpoint after the last item (pre-training: the last state is the result).
  """

  def __init__(
    self,
    directory: str | os.PathLike,
    total: int,
    *,
    every: int,
    desc: str,
    done_path: str | os.PathLike | None = None,
    log_path: str | os.PathLike | None = None,
    log_key: str = 'index',
    save_last: bool = False,
    max_to_keep: int | None = 1,
    log_every_s: float = 10.0,
  ):
    if int(every) < 1:
      raise errors.invalid('checkpoint_every', every, 'a positive number of items')
    self.directory, self.total, self.every = os.fspath(directory), int(total), int(every)
    self.desc, self.save_last = desc, bool(save_last)
    self.done_path = None if done_path is None else os.fspath(done_path)
    self.log_path, self.log_key = (None if log_path is None else os.fspath(log_path)), log_key
    self._max_to_keep, self._log_every_s = max_to_keep, float(log_every_s)
    self._ckpt: checkpoints.Checkpointer | None = None
    self.start = 0
    self.log: writers.JsonlWriter | None = None
    self.progress: progress.Progress | None = None

  @property
  def finished(self) -> bool:
    """Whether a previous run finished this loop (its done marker exists)."""
    return self.done_path is not None and os.path.exists(self.done_path)

  def result(self) -> Any:
    """The done marker's content: a dict of arrays (`.npz`, never unpickled) or the JSON value."""
    if self.done_path.endswith('.npz'):
      return files.read_npz(self.done_path)
    return files.read_json(self.done_path)

  @property
  def checkpointer(self) -> checkpoints.Checkpointer:
    if self._ckpt is None:
      self._ckpt = checkpoints.Checkpointer(self.directory, max_to_keep=self._max_to_keep)
    return self._ckpt

  def restore(self, carry: Any) -> tuple[Any, dict]:
    """The newest checkpoint restored into the structure of `carry` (or `carry` itself) and its extra.

    Sets `start` (the items done), opens the trimmed log and the progress counter.
    """
    extra: dict = {}
    step = self.checkpointer.latest_step()
    if step is not None:
      carry, extra = self.checkpointer.restore(step, carry)
      self.start = int(step)
      logging.info(
        '%s: resumed after %d of %d from %s', self.desc, self.start, self.total, self.directory
      )
    if self.log_path is not None:
      self.log = writers.resume_jsonl(self.log_path, self.log_key, self.start)
    self.progress = progress.Progress(
      self.total, self.desc, start=self.start, log_every_s=self._log_every_s
    )
    return carry, extra

  def __iter__(self) -> Iterator[int]:
    if self.progress is None:
      raise RuntimeError('ItemLoop: call restore(carry) before iterating')
    for i in range(self.start, self.total):
      yield i
      self.progress.update()

  def due(self, done: int) -> bool:
    """Whether `save(done, ...)` writes a checkpoint."""
    if done >= self.total:
      return self.save_last
    return done % self.every == 0

  def save(self, done: int, carry: Any, *, extra: dict | None = None, force: bool = False) -> bool:
    """Checkpoints `carry` as step `done` (items done) when due or `force`; returns whether it did."""
    if not (force or self.due(done)):
      return False
    self.checkpointer.save(int(done), carry, extra=extra)
    return True

  def close(self) -> None:
    if self.log is not None:
      self.log.close()
    if self._ckpt is not None:
      self._ckpt.close()
      self._ckpt = None

  def finish(self, result: Any = None) -> Any:
    """Closes the log and checkpoints and writes `result` as the done marker; returns `result`."""
    self.close()
    if self.done_path is not None and files.is_writer():
      if self.done_path.endswith('.npz'):
        buf = io.BytesIO()
        np.savez(buf, **result)
        files.atomic_write_bytes(self.done_path, buf.getvalue())
      else:
        files.atomic_write_json(self.done_path, result)
    return result

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()
