"""Registry of yiplearn's TFDS builders: build by name, read as random-access sources or arrays.

Builder modules are imported lazily (``name -> "module:ClassName"``), so importing the
registry is cheap and a broken optional builder cannot break the others.

Example::

    from yiplearn.data import registry
    src = registry.load_source("synthetic_fundus", "test", data_dir="/tmp/data",
                               domain="camera_b", image_size=64)
    rec = src[0]   # {'image': uint8 (64, 64, 3), 'mask': uint8 (64, 64), 'domain': 'camera_b', ...}
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import tensorflow_datasets as tfds

from yiplearn import errors
from yiplearn.data.base import file_lock

tfds.disable_progress_bar()

_BUILDERS: dict[str, str] = {
  'synthetic_fundus': 'yiplearn.data.synthetic_fundus:SyntheticFundus',
  'synthetic_mri': 'yiplearn.data.synthetic_mri:SyntheticMri',
  'rotated_digits': 'yiplearn.data.rotated_digits:RotatedDigits',
  'lgg_kaggle_3m': 'yiplearn.data.lgg:LggKaggle3m',
  'rimone_dl': 'yiplearn.data.fundus_real:RimOneDl',
  'drishti_gs1': 'yiplearn.data.drishti_gs1:DrishtiGs1',
}


def builder_names() -> list[str]:
  """Names accepted by :func:`get_builder`, sorted."""
  return sorted(_BUILDERS)


def builder_class(name: str) -> type:
  """Imports and returns the builder class registered under `name`.

  Raises:
    ValueError: if `name` is not registered (the message lists the valid names).
  """
  if name not in _BUILDERS:
    raise errors.invalid('data.name', name, f'one of {builder_names()}')
  module_name, cls_name = _BUILDERS[name].split(':')
  return getattr(importlib.import_module(module_name), cls_name)


def default_data_dir(workdir: str | os.PathLike | None = None) -> str:
  """`$YIPLEARN_DATA_DIR` if set, else `<workdir>/data`, else `~/.cache/yiplearn/data`."""
  env = os.environ.get('YIPLEARN_DATA_DIR')
  if env:
    return os.path.expanduser(env)
  if workdir is not None:
    return os.path.join(os.fspath(workdir), 'data')
  return os.path.join(os.path.expanduser('~'), '.cache', 'yiplearn', 'data')


def get_builder(
  name: str,
  *,
  data_dir: str | os.PathLike,
  manual_dir: str | os.PathLike | None = None,
  **config_kwargs: Any,
) -> tfds.core.DatasetBuilder:
  """Returns the prepared builder `name` configured by `config_kwargs`.

  Preparation is a no-op when the data already exists. Concurrent processes are
  serialised by an exclusive file lock per (dataset, config) under `<data_dir>/.locks`;
  the second process finds the data prepared by the first.

  Raises:
    ValueError: unknown `name`, or an unknown config key / bad value (from `make_config`).
  """
  cls = builder_class(name)
  config = cls.make_config(**config_kwargs)
  data_dir = os.fspath(data_dir)

  def make() -> tfds.core.DatasetBuilder:
    return cls(config=config, data_dir=data_dir, file_format='array_record')

  builder = make()
  if builder.is_prepared():
    return builder
  lock_path = os.path.join(data_dir, '.locks', f'{name}-{config.name}.lock')
  with file_lock(lock_path):
    builder = make()  # re-check: another process may have finished meanwhile
    if not builder.is_prepared():
      dl_config = tfds.download.DownloadConfig(
        manual_dir=os.fspath(manual_dir) if manual_dir is not None else None
      )
      builder.download_and_prepare(download_config=dl_config)
      builder = make()  # reload so `info` reflects what is on disk
  return builder


class DecodedSource:
  """Random-access source over a TFDS array_record split, with text decoded to `str`.

  `len(src)`; `src[i]` -> dict of numpy arrays / Python scalars and `str`. Satisfies grain's
  `RandomAccessDataSource` protocol.
  """

  def __init__(
    self,
    source: Sequence[dict[str, Any]],
    *,
    name: str,
    split: str,
    scalar_dtypes: dict[str, np.dtype] | None = None,
  ):
    self._source = source
    self.name = name
    self.split = split
    self._scalar_dtypes = dict(scalar_dtypes or {})

  def __len__(self) -> int:
    return len(self._source)

  def __getitem__(self, index: int) -> dict[str, Any]:
    n = len(self._source)
    index = int(index)
    if not -n <= index < n:
      raise IndexError(f'index {index} out of range for {self.name}/{self.split} of length {n}')
    record = _decode(self._source[index % n])
    for k, dt in self._scalar_dtypes.items():
      if k in record:
        record[k] = dt.type(record[k])  # TFDS gives Python scalars; restore the feature dtype
    return record

  def __repr__(self) -> str:
    return f'DecodedSource({self.name!r}, split={self.split!r}, len={len(self)})'


def _decode(record: dict[str, Any]) -> dict[str, Any]:
  out = {}
  for k, v in record.items():
    if isinstance(v, bytes):
      v = v.decode('utf-8')
    elif isinstance(v, np.ndarray) and v.dtype.kind in ('S', 'O'):
      v = np.vectorize(lambda b: b.decode('utf-8') if isinstance(b, bytes) else b, otypes=[str])(v)
    out[k] = v
  return out


def _check_split(builder: tfds.core.DatasetBuilder, name: str, split: str) -> None:
  """Accepts a split, `all` (every split), or `a+b` unions, each optionally sliced (`train[:10]`)."""
  available = sorted(builder.info.splits.keys())
  for part in str(split).split('+'):
    base = part.split('[', 1)[0].strip()
    if base != 'all' and base not in available:
      raise errors.invalid(
        f'{name} split', split, f"one of {available}, 'all', or unions like 'train+test'"
      )


def load_source(
  name: str,
  split: str,
  *,
  data_dir: str | os.PathLike,
  manual_dir: str | os.PathLike | None = None,
  **config_kwargs: Any,
) -> DecodedSource:
  """Random-access source (len, __getitem__ -> dict of numpy) of `split` of dataset `name`.

  `split` may carry a TFDS slice, e.g. ``"train[:10]"``.

  Raises:
    ValueError: unknown name, config key/value, or split (listing the available splits).
  """
  builder = get_builder(name, data_dir=data_dir, manual_dir=manual_dir, **config_kwargs)
  _check_split(builder, name, split)
  return DecodedSource(
    builder.as_data_source(split), name=name, split=split, scalar_dtypes=_scalar_dtypes(builder)
  )


def _scalar_dtypes(builder: tfds.core.DatasetBuilder) -> dict[str, np.dtype]:
  """{feature name: numpy dtype} of the top-level numeric/bool scalar features."""
  out = {}
  for k, f in builder.info.features.items():
    dt = getattr(f, 'np_dtype', None)
    if dt is not None and tuple(getattr(f, 'shape', (None,))) == () and np.dtype(dt).kind in 'biuf':
      out[k] = np.dtype(dt)
  return out


def stack_records(records: Sequence[dict[str, Any]]) -> dict[str, np.ndarray]:
  """Stacks a list of records into a dict of arrays with a leading record axis.

  Strings become numpy unicode arrays. An empty list gives an empty dict.
  """
  if not records:
    return {}
  return {k: np.stack([np.asarray(r[k]) for r in records]) for k in records[0]}


def load_arrays(
  name: str,
  split: str,
  *,
  data_dir: str | os.PathLike,
  manual_dir: str | os.PathLike | None = None,
  **config_kwargs: Any,
) -> dict[str, np.ndarray]:
  """All records of `split` as a dict of stacked numpy arrays (leading axis = record).

  E.g. for `synthetic_fundus`: ``image`` uint8 (N, S, S, 3), ``mask`` uint8 (N, S, S),
  ``domain`` and ``id`` str (N,), ``cup_to_disc`` float32 (N,).
  """
  src = load_source(name, split, data_dir=data_dir, manual_dir=manual_dir, **config_kwargs)
  return stack_records([src[i] for i in range(len(src))])
