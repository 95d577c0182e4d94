"""Deterministic grain input pipelines over random-access sources.

`make_loader` turns any random-access source (``len`` + ``__getitem__`` -> dict of numpy, e.g.
:func:`yiplearn.data.registry.load_source`) into an iterable of batches (dict of stacked numpy
arrays), built from `grain.MapDataset`:

    range(len(source)) -> [shard by JAX process] -> [shuffle(seed), reshuffled per epoch]
    -> repeat(num_epochs) -> load + transform(record, rng) -> batch

The per-example rng given to `transform` is ``np.random.default_rng([seed, epoch, index])``
where `index` is the record's index in the *source*: augmentation of a record does not depend
on the shuffle order, the batch size or the number of processes. Same arguments -> identical
batches, in the same order. Batches are also random-access (``loader[k]``), which makes
resuming at batch `k` exact and cheap.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

import grain
import jax
import numpy as np

from yiplearn import errors
from yiplearn.data.registry import stack_records

Record = dict[str, Any]
Transform = Callable[[Record, np.random.Generator], Record]


class ArraySource:
  """Random-access source over a dict of equally long arrays: ``src[i] = {k: v[i]}``."""

  def __init__(self, arrays: Mapping[str, Any]):
    if not isinstance(arrays, Mapping) or not arrays:
      raise errors.invalid('arrays', type(arrays).__name__, 'a non-empty dict of arrays')
    self._arrays = {k: np.asarray(v) for k, v in arrays.items()}
    lengths = {k: (v.shape[0] if v.ndim else None) for k, v in self._arrays.items()}
    if len(set(lengths.values())) != 1 or None in lengths.values():
      raise errors.invalid('arrays lengths', lengths, 'equal leading dimensions')
    self._n = next(iter(lengths.values()))

  def __len__(self) -> int:
    return self._n

  def __getitem__(self, index: int) -> Record:
    return {k: v[index] for k, v in self._arrays.items()}


class Loader:
  """Iterable of batches (dict of stacked numpy arrays) over a grain `MapDataset`.

  Attributes:
    dataset: the underlying `grain.MapDataset` of batches.
    examples_per_epoch: records this process sees per epoch (after sharding).
    num_epochs: number of epochs, None = infinite.
  """

  def __init__(
    self,
    dataset: grain.MapDataset,
    *,
    examples_per_epoch: int,
    num_epochs: int | None,
    num_threads: int,
  ):
    self.dataset = dataset
    self.examples_per_epoch = examples_per_epoch
    self.num_epochs = num_epochs
    self._num_threads = num_threads

  def __len__(self) -> int:
    """Number of batches (finite `num_epochs` only)."""
    if self.num_epochs is None:
      raise TypeError('an infinite loader (num_epochs=None) has no length')
    return len(self.dataset)

  def __getitem__(self, k: int) -> Record:
    """Batch number `k` (0-based), computed directly (no iteration)."""
    if self.num_epochs is not None and not 0 <= k < len(self.dataset):
      raise IndexError(f'batch index {k} out of range for a loader of {len(self.dataset)} batches')
    return self.dataset[k]

  def __iter__(self) -> Iterator[Record]:
    return self.iterate()

  def iterate(self, start: int = 0) -> Iterator[Record]:
    """Iterates batches from batch number `start` (for resuming), with threaded prefetch."""
    ds = self.dataset
    if start:
      if start < 0:
        raise errors.invalid('start', start, 'a non-negative batch index')
      ds = ds[start:]
    opts = grain.ReadOptions(
      num_threads=self._num_threads, prefetch_buffer_size=4 * max(self._num_threads, 1)
    )
    return iter(ds.to_iter_dataset(read_options=opts))


def _check_int(name: str, value: Any, lo: int, allow_none: bool = False) -> None:
  if allow_none and value is None:
    return
  if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value < lo:
    extra = ' or None' if allow_none else ''
    raise errors.invalid(name, value, f'an integer >= {lo}{extra}')


def make_loader(
  source: Any,
  *,
  batch_size: int,
  seed: int,
  shuffle: bool = True,
  num_epochs: int | None = 1,
  transform: Transform | None = None,
  drop_remainder: bool = False,
  shard_by_process: bool = True,
  num_threads: int = 2,
  process_rows: bool = False,
) -> Loader:
  """Batched, optionally shuffled and transformed, deterministic loader over `source`.

  Args:
    source: random-access source: ``len(source)``, ``source[i] -> dict`` of numpy arrays,
      scalars or str.
    batch_size: records per batch (per process).
    seed: integer in [0, 2**32); fixes the shuffle order and the transforms' rngs.
    shuffle: reshuffle the (sharded) records every epoch.
    num_epochs: passes over the data; None repeats forever. Batches may straddle epochs.
    transform: ``transform(record, rng) -> record`` applied per example, `rng` =
      ``np.random.default_rng([seed, epoch, source_index])``.
    drop_remainder: drop a final partial batch.
    shard_by_process: each JAX process reads records ``process_index::process_count``.
    num_threads: reader threads used when iterating.
    process_rows: `batch_size` is the global batch (data parallelism): batch k is the same for
      any number of processes, and process p loads only its contiguous block of
      ``batch_size / process_count`` rows of it (`shard_by_process` is then ignored). Needs
      `drop_remainder` or ``num_epochs=None``.

  Returns:
    A :class:`Loader`; each batch is a dict of numpy arrays with leading dim `batch_size`
    (strings as numpy unicode arrays).
  """
  if not hasattr(source, '__len__') or not hasattr(source, '__getitem__'):
    raise errors.invalid(
      'source', type(source).__name__, 'a random-access source with __len__ and __getitem__'
    )
  _check_int('batch_size', batch_size, 1)
  _check_int('seed', seed, 0)
  if seed >= 2**32:
    raise errors.invalid('seed', seed, 'an integer in [0, 2**32)')
  _check_int('num_epochs', num_epochs, 1, allow_none=True)
  _check_int('num_threads', num_threads, 0)
  if transform is not None and not callable(transform):
    raise errors.invalid('transform', transform, 'a callable(record, rng) -> record')
  n = len(source)
  if n == 0:
    raise errors.invalid('len(source)', 0, 'a non-empty source')

  nproc, pid = jax.process_count(), jax.process_index()
  if process_rows:
    if batch_size % nproc:
      raise errors.invalid(
        'batch_size', batch_size, f'a multiple of the {nproc} processes (process_rows)'
      )
    if not drop_remainder and num_epochs is not None:
      raise errors.invalid(
        'process_rows', True, 'drop_remainder=True or num_epochs=None (equal blocks per process)'
      )
    shard_by_process = False
  ds = grain.MapDataset.range(n)
  if shard_by_process and jax.process_count() > 1:
    ds = ds[jax.process_index() :: jax.process_count()]
  per_epoch = len(ds)
  if per_epoch == 0:
    raise errors.invalid(
      'len(source)', n, f'at least one record per process ({jax.process_count()})'
    )
  if shuffle:
    ds = ds.shuffle(seed=int(seed))
  ds = ds.repeat(num_epochs)

  def load(position: int, index: Any) -> Record:
    epoch = position // per_epoch
    record = dict(source[int(index)])
    if transform is not None:
      record = transform(record, np.random.default_rng([int(seed), epoch, int(index)]))
    return record

  if (
    process_rows and nproc > 1
  ):  # global batches of (position, index); this process loads its block
    per = batch_size // nproc
    ds = ds.map_with_index(lambda position, index: (position, index)).batch(
      batch_size, drop_remainder=drop_remainder, batch_fn=list
    )
    ds = ds.map(
      lambda items: stack_records([load(*item) for item in items[pid * per : (pid + 1) * per]])
    )
  else:
    ds = ds.map_with_index(load).batch(
      batch_size, drop_remainder=drop_remainder, batch_fn=stack_records
    )
  return Loader(ds, examples_per_epoch=per_epoch, num_epochs=num_epochs, num_threads=num_threads)


def iterate_arrays(
  arrays: Mapping[str, Any],
  batch_size: int,
  seed: int,
  shuffle: bool = True,
  *,
  num_epochs: int | None = 1,
  transform: Transform | None = None,
  drop_remainder: bool = False,
  shard_by_process: bool = False,
) -> Loader:
  """`make_loader` over in-memory arrays (dict of arrays with a common leading dimension)."""
  return make_loader(
    ArraySource(arrays),
    batch_size=batch_size,
    seed=seed,
    shuffle=shuffle,
    num_epochs=num_epochs,
    transform=transform,
    drop_remainder=drop_remainder,
    shard_by_process=shard_by_process,
  )
