"""Tests for the grain pipeline: determinism, shuffling, epochs, transforms, sharding, resume."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from yiplearn.data import pipeline, registry

N = 10


def arrays(n: int = N) -> dict[str, np.ndarray]:
  return {
    'x': np.arange(n),
    'img': np.arange(n * 4, dtype=np.float32).reshape(n, 2, 2),
    'name': np.array([f'r{i}' for i in range(n)]),
  }


def collect(loader, key='x'):
  return [b[key].tolist() for b in loader]


def test_unshuffled_order_batches_and_remainder():
  batches = list(pipeline.iterate_arrays(arrays(), 4, seed=0, shuffle=False))
  assert [b['x'].tolist() for b in batches] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
  assert batches[0]['img'].shape == (4, 2, 2) and batches[0]['img'].dtype == np.float32
  assert batches[2]['name'].tolist() == ['r8', 'r9'] and batches[2]['name'].dtype.kind == 'U'
  np.testing.assert_array_equal(batches[1]['img'], arrays()['img'][4:8])
  dropped = pipeline.iterate_arrays(arrays(), 4, seed=0, shuffle=False, drop_remainder=True)
  assert len(dropped) == 2 and collect(dropped) == [[0, 1, 2, 3], [4, 5, 6, 7]]


def test_same_seed_same_batches_different_seed_different_order():
  a = collect(pipeline.iterate_arrays(arrays(), 3, seed=7, num_epochs=2))
  b = collect(pipeline.iterate_arrays(arrays(), 3, seed=7, num_epochs=2))
  c = collect(pipeline.iterate_arrays(arrays(), 3, seed=8, num_epochs=2))
  assert a == b and a != c
  flat = sum(a, [])
  assert flat[:N] != list(range(N))  # shuffled
  # Each epoch is a permutation of all records, and epochs are shuffled differently.
  assert sorted(flat[:N]) == list(range(N)) and sorted(flat[N:]) == list(range(N))
  assert flat[:N] != flat[N:]


def test_len_and_random_access_and_resume():
  loader = pipeline.iterate_arrays(arrays(), 3, seed=1, num_epochs=3)
  full = collect(loader)
  assert len(loader) == len(full) == 10  # ceil(30 / 3)
  assert loader[4]['x'].tolist() == full[4]
  assert [b['x'].tolist() for b in loader.iterate(start=6)] == full[6:]
  with pytest.raises(IndexError):
    loader[10]
  inf = pipeline.iterate_arrays(arrays(), 3, seed=1, num_epochs=None)
  with pytest.raises(TypeError):
    len(inf)
  it = inf.iterate(start=2)
  assert [next(it)['x'].tolist() for _ in range(3)] == full[2:5]  # same stream as finite epochs


def test_transform_rng_depends_on_seed_epoch_index_only():
  def tf(rec, rng):
    return {**rec, 'u': rng.uniform()}

  def table(batch_size, seed):
    out = {}
    loader = pipeline.iterate_arrays(arrays(), batch_size, seed=seed, num_epochs=2, transform=tf)
    for pos, (x, u) in enumerate(zip(sum(collect(loader), []), sum(collect(loader, 'u'), []))):
      out[(pos // N, x)] = u
    return out

  t3, t4 = table(3, 5), table(4, 5)
  assert t3 == t4  # independent of batch size / order
  assert t3[(0, 2)] == np.random.default_rng([5, 0, 2]).uniform()
  assert t3[(0, 2)] != t3[(1, 2)]  # fresh randomness each epoch
  assert table(3, 6) != t3


def test_shard_by_process(monkeypatch):
  monkeypatch.setattr(jax, 'process_count', lambda: 3)
  seen = []
  for p in range(3):
    monkeypatch.setattr(jax, 'process_index', lambda p=p: p)
    loader = pipeline.iterate_arrays(arrays(), 2, seed=0, shard_by_process=True)
    xs = sum(collect(loader), [])
    assert sorted(xs) == list(range(p, N, 3))
    seen += xs
  assert sorted(seen) == list(range(N))
  unsharded = pipeline.iterate_arrays(arrays(), 2, seed=0, shard_by_process=False)
  assert sorted(sum(collect(unsharded), [])) == list(range(N))


def test_loader_over_registry_source(data_dir):
  src = registry.load_source(
    'synthetic_fundus', 'train', data_dir=data_dir, image_size=32, num_train=6, num_test=3
  )
  flip = lambda rec, rng: {**rec, 'image': rec['image'][:, ::-1]}  # noqa: E731
  loader = pipeline.make_loader(src, batch_size=4, seed=0, shuffle=False, transform=flip)
  batches = list(loader)
  assert [b['image'].shape for b in batches] == [(4, 32, 32, 3), (2, 32, 32, 3)]
  assert batches[0]['id'].tolist() == [f'source-train-{i:05d}' for i in range(4)]
  np.testing.assert_array_equal(batches[0]['image'][1], src[1]['image'][:, ::-1])
  assert batches[0]['cup_to_disc'].dtype == np.float32


@pytest.mark.parametrize(
  'kw, word',
  [
    (dict(batch_size=0), 'batch_size'),
    (dict(batch_size=2.5), 'batch_size'),
    (dict(seed=-1), 'seed'),
    (dict(seed=2**32), 'seed'),
    (dict(num_epochs=0), 'num_epochs'),
    (dict(transform=3), 'transform'),
  ],
)
def test_validation(kw, word):
  args = dict(batch_size=2, seed=0) | kw
  with pytest.raises(ValueError, match=word):
    pipeline.make_loader(pipeline.ArraySource(arrays()), **args)


def test_array_source_validation():
  with pytest.raises(ValueError, match='arrays'):
    pipeline.ArraySource({'a': np.zeros(3), 'b': np.zeros(4)})
  with pytest.raises(ValueError, match='source'):
    pipeline.make_loader(42, batch_size=1, seed=0)
