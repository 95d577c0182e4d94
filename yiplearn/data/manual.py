"""Helpers for TFDS builders that read an official release from a *manual* directory.

Users unpack archives in many layouts (nested folders, duplicated sub-trees, a parent folder
holding several datasets), so builders locate files by NAME anywhere below the manual dir
instead of relying on fixed relative paths. Every "not found" condition is reported as ONE
``FileNotFoundError`` whose message names the dataset, what to download, the directory that
was searched and the file pattern that matched nothing.

Public API:
  - ``list_files(root) -> list[pathlib.Path]``: every regular file below ``root`` (sorted).
  - ``match_files(files, pattern) -> list[pathlib.Path]``: filter by ``fnmatch`` on the name.
  - ``find_files(root, pattern) -> list[pathlib.Path]``: ``match_files(list_files(root), ...)``.
  - ``missing_error(...) -> FileNotFoundError``: the one-line error message builders raise.
  - ``require_files(files, pattern, ...) -> list[pathlib.Path]``: matches or raises.
  - ``resolve_manual_dir(dl_manager, ...) -> pathlib.Path``: the manual dir of a TFDS download
    manager, translating TFDS's ``AssertionError`` into a ``FileNotFoundError``.
  - ``read_image(path, mode=None) -> np.ndarray``: uint8 array (H, W) or (H, W, C) via PIL.
"""

from __future__ import annotations

import fnmatch
import os
import pathlib
from collections.abc import Iterable
from typing import Any

import numpy as np

from yiplearn import errors

PathLike = str | os.PathLike


def list_files(root: PathLike) -> list[pathlib.Path]:
  """Returns every regular file below ``root`` (recursively), sorted by full path.

  Symbolic links to folders are followed (users often link data in); a folder reached twice
  through links is visited once.

  Args:
    root: directory to search. A missing directory yields an empty list.

  Returns:
    Sorted list of ``pathlib.Path`` (files only, no directories).
  """
  root = pathlib.Path(root).expanduser()
  if not root.is_dir():
    return []
  seen: set[str] = set()
  out: list[pathlib.Path] = []
  for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
    real = os.path.realpath(dirpath)
    if real in seen:
      dirnames[:] = []
      continue
    seen.add(real)
    dirnames.sort()
    for name in filenames:
      path = pathlib.Path(dirpath) / name
      if path.is_file():
        out.append(path)
  out.sort(key=lambda p: str(p))
  return out


def match_files(
  files: Iterable[pathlib.Path], pattern: str, *, case_sensitive: bool = False
) -> list[pathlib.Path]:
  """Files whose NAME (not path) matches the shell pattern ``pattern`` (``fnmatch``).

  Args:
    files: candidate paths (e.g. from ``list_files``).
    pattern: shell-style pattern on the base name, e.g. ``'TCGA_*_mask.tif'``.
    case_sensitive: if False (default), matching ignores case.

  Returns:
    The matching paths in input order.
  """
  if case_sensitive:
    return [p for p in files if fnmatch.fnmatchcase(p.name, pattern)]
  pat = pattern.lower()
  return [p for p in files if fnmatch.fnmatchcase(p.name.lower(), pat)]


def find_files(root: PathLike, pattern: str, *, case_sensitive: bool = False) -> list[pathlib.Path]:
  """Files anywhere below ``root`` whose name matches ``pattern``; sorted by path."""
  return match_files(list_files(root), pattern, case_sensitive=case_sensitive)


def missing_error(
  *, dataset: str, download: str, manual_dir: PathLike | None, pattern: str, detail: str = ''
) -> errors.MissingDataError:
  """Builds the single-line error raised when a release is not where it should be.

  Args:
    dataset: builder name, e.g. ``'lgg_kaggle_3m'``.
    download: what to download, as text (official release name and URL).
    manual_dir: the directory that was searched (or None if none was given).
    pattern: the file-name pattern that matched nothing.
    detail: optional extra sentence (e.g. which part of the release is missing).

  Returns:
    A ``FileNotFoundError`` (to be raised by the caller).
  """
  where = str(manual_dir) if manual_dir is not None else '<no manual_dir given>'
  msg = errors.message(
    f'{dataset}.manual_dir',
    where,
    f'a folder holding files matching {pattern!r}: download {download} and unpack it (any '
    f'layout) under that directory, or pass manual_dir=<folder containing it>.',
  )
  if detail:
    msg += ' ' + detail.strip()
  return errors.MissingDataError(msg.replace('\n', ' '))


def require_files(
  files: Iterable[pathlib.Path],
  pattern: str,
  *,
  dataset: str,
  download: str,
  manual_dir: PathLike | None,
  detail: str = '',
) -> list[pathlib.Path]:
  """``match_files(files, pattern)`` or raise ``missing_error`` if nothing matches."""
  found = match_files(files, pattern)
  if not found:
    raise missing_error(
      dataset=dataset, download=download, manual_dir=manual_dir, pattern=pattern, detail=detail
    )
  return found


def resolve_manual_dir(
  dl_manager: Any, *, dataset: str, download: str, pattern: str
) -> pathlib.Path:
  """The existing, non-empty manual directory of a TFDS ``DownloadManager``.

  TFDS raises ``AssertionError`` when the manual dir is unset, missing or empty; this turns
  that into ``missing_error`` (a ``FileNotFoundError``) naming the directory searched.

  Args:
    dl_manager: ``tfds.download.DownloadManager`` given to ``_split_generators``.
    dataset, download, pattern: as in ``missing_error``.

  Returns:
    The manual directory as a ``pathlib.Path``.
  """
  raw = getattr(dl_manager, '_manual_dir', None)
  try:
    path = dl_manager.manual_dir
  except AssertionError:
    raise missing_error(
      dataset=dataset,
      download=download,
      manual_dir=raw,
      pattern=pattern,
      detail='(the directory is missing or empty)',
    ) from None
  path = pathlib.Path(os.fspath(path)).expanduser()
  if not path.is_dir():
    raise missing_error(
      dataset=dataset,
      download=download,
      manual_dir=path,
      pattern=pattern,
      detail='(not a directory)',
    )
  return path


def code_path_property(module_file: str) -> Any:
  """A ``code_path`` class property for a TFDS builder defined in ``module_file``.

  TFDS 4.9's default ``code_path`` resolves the module as a package resource and then needs
  the ``importlib_resources`` back-port, which is not installed here; builders in a regular
  package set ``code_path = manual.code_path_property(__file__)`` instead. The path is only
  used to look for an (absent) ``checksums.tsv`` next to the module.
  """
  import tensorflow_datasets as tfds  # Local import: keep this module light.
  from etils import epath

  path = epath.Path(module_file)
  return tfds.core.utils.classproperty(classmethod(lambda cls: path))


def read_image(path: PathLike, mode: str | None = None) -> np.ndarray:
  """Reads an image file with PIL into a uint8 numpy array.

  Args:
    path: .png/.tif/.jpg file.
    mode: optional PIL mode to convert to first (``'RGB'`` -> (H, W, 3), ``'L'`` -> (H, W)).

  Returns:
    ``np.ndarray`` uint8, shape (H, W) or (H, W, C). Other bit depths are rejected.
  """
  from PIL import Image  # Local import: PIL is only needed when building.

  with Image.open(path) as im:
    if mode is not None and im.mode != mode:
      im = im.convert(mode)
    arr = np.asarray(im)
  if arr.dtype == np.bool_:
    arr = arr.astype(np.uint8) * 255
  if arr.dtype != np.uint8:
    raise errors.invalid(f'image {str(path)!r} dtype', arr.dtype, '8-bit (uint8) pixels')
  return arr
