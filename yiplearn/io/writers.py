"""Metric writers: `metrics.jsonl` plus TensorBoard event files (tensorboardX), process 0 only."""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Mapping
from typing import Any

import numpy as np

from yiplearn.io.files import _json_default, atomic_write_text, is_writer

_ILLEGAL_TAG = re.compile(r'[^-/\w.]')


def tag_name(name: str) -> str:
  """A legal TensorBoard tag for a metric name (`val/dice@5` -> `val/dice_at_5`).

  TensorBoard accepts letters, digits and `_-./` only and logs "Summary name ... is illegal" for
  anything else; the JSONL records keep the original names.
  """
  return _ILLEGAL_TAG.sub('_', name.replace('@', '_at_')).lstrip('/')


def resume_jsonl(path: str | os.PathLike, key: str, done: int) -> JsonlWriter:
  """A JsonlWriter appending to `path` after keeping only the complete records with `record[key] < done`.

  A run killed between two checkpoints wrote records for items (images, batches) it will process again,
  and possibly a last line cut short (no newline); both are dropped atomically, so the resumed log holds
  each item exactly once.
  """
  if is_writer():
    kept = []
    if os.path.exists(path):
      with open(path, encoding='utf-8') as f:
        kept = [
          line
          for line in f
          if line.endswith('\n') and line.strip() and json.loads(line)[key] < done
        ]
    atomic_write_text(path, ''.join(kept))
  return JsonlWriter(path)


class JsonlWriter:
  """Appends one JSON object per line; each line is flushed so a crash loses no finished record."""

  def __init__(self, path: str | os.PathLike, *, append: bool = True):
    self.path = os.fspath(path)
    self._f = None
    if is_writer():
      os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
      self._f = open(self.path, 'a' if append else 'w', encoding='utf-8')

  def write(self, record: Mapping[str, Any]) -> None:
    if self._f is None:
      return
    self._f.write(json.dumps(dict(record), default=_json_default) + '\n')
    self._f.flush()

  def close(self) -> None:
    if self._f is not None:
      self._f.flush()
      os.fsync(self._f.fileno())
      self._f.close()
      self._f = None

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()


class MetricWriter:
  """Scalars to `<workdir>/metrics.jsonl` and TensorBoard events under `<workdir>/tensorboard`."""

  def __init__(
    self, workdir: str | os.PathLike, *, tensorboard: bool = True, resume_step: int | None = None
  ):
    """`resume_step`: a resumed run drops the records of steps after it (written before the kill)."""
    self.workdir = os.fspath(workdir)
    path = os.path.join(self.workdir, 'metrics.jsonl')
    if resume_step is None:
      self._jsonl = JsonlWriter(path)
    else:
      self._jsonl = resume_jsonl(path, 'step', int(resume_step) + 1)
    self._tb = None
    if tensorboard and is_writer():
      from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top

      self._tb = SummaryWriter(os.path.join(self.workdir, 'tensorboard'))

  def write(self, step: int, scalars: Mapping[str, Any], **tags: Any) -> None:
    """Writes scalar metrics for `step`; `tags` (strings) go to the JSONL record only."""
    values = {}
    for name, value in scalars.items():
      v = float(np.asarray(value))
      values[name] = v
      if self._tb is not None:
        self._tb.add_scalar(tag_name(name), v, global_step=int(step))
    self._jsonl.write({'step': int(step), 'time': time.time(), **tags, **values})

  def flush(self) -> None:
    if self._tb is not None:
      self._tb.flush()

  def close(self) -> None:
    self._jsonl.close()
    if self._tb is not None:
      self._tb.close()
      self._tb = None

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()
