"""Atomic file writers: a result file is either absent or complete, never half-written.

Each writer writes to a temporary file in the destination directory, flushes and fsyncs it,
then renames it over the destination (atomic on POSIX file systems), and removes temporary files
of the same destination left by a process killed mid-write.
"""

from __future__ import annotations

import glob
import json
import os
import tempfile
import zipfile
from typing import Any

import jax
import numpy as np

from yiplearn import errors


def is_writer() -> bool:
  """Whether this process writes the workdir's files: process 0 (every process computes the same results)."""
  return jax.process_index() == 0


def _json_default(obj: Any) -> Any:
  if isinstance(obj, np.generic):
    return obj.item()
  if isinstance(obj, np.ndarray):
    return obj.tolist()
  if hasattr(obj, 'tolist'):  # jax arrays
    return np.asarray(obj).tolist()
  if hasattr(obj, 'to_dict'):  # ml_collections.ConfigDict
    return obj.to_dict()
  if isinstance(obj, (set, tuple)):
    return list(obj)
  return str(obj)


def to_json(obj: Any, indent: int | None = 2) -> str:
  """JSON text for results: numpy/jax scalars and arrays become plain numbers and lists."""
  return json.dumps(obj, indent=indent, default=_json_default, sort_keys=False)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
  """Writes `data` to `path` atomically (temp file in the same directory, fsync, rename)."""
  path = os.fspath(path)
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  prefix = '.tmp-' + os.path.basename(path) + '-'
  fd, tmp = tempfile.mkstemp(prefix=prefix, dir=directory)
  try:
    with os.fdopen(fd, 'wb') as f:
      f.write(data)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.unlink(tmp)
    raise
  # Temp files of this path left by a process killed mid-write (SIGKILL runs no cleanup).
  for stale in glob.glob(os.path.join(glob.escape(directory), glob.escape(prefix) + '*')):
    try:
      os.unlink(stale)
    except FileNotFoundError:
      pass


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
  """Writes `text` (UTF-8) to `path` atomically."""
  atomic_write_bytes(path, text.encode('utf-8'))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
  """Writes `obj` as indented JSON to `path` atomically (numpy values converted)."""
  atomic_write_text(path, to_json(obj) + '\n')


def read_npz(path: str | os.PathLike) -> dict[str, np.ndarray]:
  """The arrays of an `.npz` file, never unpickling anything (`allow_pickle=False`).

  Raises UserError naming the file when it holds an object (pickled) array or is not a valid npz.
  """
  path = os.fspath(path)
  try:
    with np.load(path, allow_pickle=False) as z:
      return {k: z[k] for k in z.files}
  except ValueError as e:  # numpy: "Object arrays cannot be loaded when allow_pickle=False"
    raise errors.invalid(
      'npz file',
      path,
      f'plain numeric or string arrays, not: {str(e).splitlines()[0]} (pickled objects are '
      'never loaded)',
    ) from None
  except (OSError, EOFError, zipfile.BadZipFile) as e:  # truncated or corrupt
    raise errors.invalid(
      'npz file',
      path,
      f'a complete npz written by numpy.savez (delete it to recompute; {type(e).__name__})',
    ) from None


def read_json(path: str | os.PathLike) -> Any:
  with open(path, encoding='utf-8') as f:
    return json.load(f)
