import numpy as np
import pytest

from yiplearn.data import streams


def _data(n=200, c=5, doms=('a', 'b', 'c')):
  rng = np.random.default_rng(0)
  images = rng.integers(0, 255, size=(n, 4, 4, 1), dtype=np.uint8)
  labels = rng.integers(0, c, size=n)
  domains = np.asarray([doms[i % len(doms)] for i in range(n)])
  return images, labels, domains


def _collect(stream):
  batches = list(stream)
  idx = np.concatenate([b['index'] for b in batches])
  return batches, idx


@pytest.mark.parametrize('kind', streams.KINDS)
@pytest.mark.parametrize('batch_size', [1, 7, 64])
def test_every_example_once_and_batches_consistent(kind, batch_size):
  images, labels, domains = _data()
  s = streams.make_stream(kind, images, labels, domains, batch_size=batch_size, seed=3)
  batches, idx = _collect(s)
  assert len(batches) == len(s) == -(-200 // batch_size)
  assert sorted(idx.tolist()) == list(range(200))
  assert all(len(b['index']) == batch_size for b in batches[:-1])
  for b in batches:
    np.testing.assert_array_equal(b['image'], images[b['index']])
    np.testing.assert_array_equal(b['label'], labels[b['index']])
    np.testing.assert_array_equal(b['domain'], domains[b['index']])
  # Deterministic per seed, different across seeds.
  _, idx2 = _collect(
    streams.make_stream(kind, images, labels, domains, batch_size=batch_size, seed=3)
  )
  np.testing.assert_array_equal(idx, idx2)
  _, idx3 = _collect(
    streams.make_stream(kind, images, labels, domains, batch_size=batch_size, seed=4)
  )
  assert not np.array_equal(idx, idx3)


def test_dirichlet_is_temporally_correlated():
  images, labels, domains = _data(n=1000, c=10)
  iid = streams.make_stream('iid', images, labels, batch_size=10)
  low = streams.make_stream('dirichlet', images, labels, batch_size=10, alpha=0.01)
  high = streams.make_stream('dirichlet', images, labels, batch_size=10, alpha=100.0)
  r_iid = streams.label_switch_rate(labels[iid.order])
  r_low = streams.label_switch_rate(labels[low.order])
  r_high = streams.label_switch_rate(labels[high.order])
  assert r_iid > 0.8 and r_low < 0.1 and r_low < r_high
  # Per-batch label diversity: low alpha batches are nearly single-class.
  n_cls = [len(set(b['label'].tolist())) for b in low]
  assert np.mean(n_cls) < 2.0


def test_continual_domain_sequence():
  images, labels, domains = _data()
  s = streams.make_stream(
    'continual', images, labels, domains, batch_size=5, domain_order=['c', 'a', 'b']
  )
  d = domains[s.order]
  # Domains appear as three contiguous blocks in the requested order.
  changes = [d[0]] + [d[i] for i in range(1, len(d)) if d[i] != d[i - 1]]
  assert changes == ['c', 'a', 'b']
  s2 = streams.make_stream(
    'continual', images, labels, domains, batch_size=5, within='dirichlet', alpha=0.01
  )
  d2 = domains[s2.order]
  assert [d2[0]] + [d2[i] for i in range(1, len(d2)) if d2[i] != d2[i - 1]] == ['a', 'b', 'c']
  assert streams.label_switch_rate(labels[s2.order]) < 0.2
  with pytest.raises(ValueError, match='domain_order'):
    streams.make_stream('continual', images, labels, domains, batch_size=5, domain_order=['z'])


def test_validation():
  images, labels, domains = _data()
  with pytest.raises(ValueError, match='batch_size'):
    streams.make_stream('iid', images, labels, batch_size=0)
  with pytest.raises(ValueError, match=r'len\(images\)=0: expected at least one example'):
    streams.make_stream('iid', images[:0], labels[:0], batch_size=2)
  with pytest.raises(ValueError, match='kind'):
    streams.make_stream('shuffled', images, labels, batch_size=2)
  with pytest.raises(ValueError, match='alpha'):
    streams.make_stream('dirichlet', images, labels, batch_size=2, alpha=0.0)
  with pytest.raises(
    ValueError, match=r'len\(labels\), len\(domains\)=\(3, 200\): expected len\(images\) = 200 each'
  ):
    streams.make_stream('iid', images, labels[:3], batch_size=2)
  with pytest.raises(ValueError, match='mixed'):
    streams.make_stream('mixed', images, labels, np.full(200, 'a'), batch_size=2)


def test_batches_from_an_index_equal_the_tail_of_the_iteration():
  s = streams.make_stream(
    'iid',
    np.zeros((23, 2, 2, 1), np.float32),
    np.arange(23) % 3,
    np.full(23, 'a'),
    batch_size=5,
    seed=0,
  )
  full = list(s)
  tail = list(s.batches(3))
  assert len(full) == 5 and len(tail) == 2
  for a, b in zip(full[3:], tail):
    np.testing.assert_array_equal(a['index'], b['index'])
