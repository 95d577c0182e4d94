"""Unlabelled test streams for online test-time adaptation (host side, numpy).

A stream is an ordering of the test examples cut into batches; each batch is a dict of numpy
arrays `{'image': (B, H, W, C), 'label': (B,) (kept for scoring only), 'domain': (B,) str,
'index': (B,) int64 (position in the input arrays)}`. The last batch may be smaller. Any batch
size >= 1. Deterministic per seed.

Kinds (`make_stream(kind, ...)`):
  'iid'        uniform random order over all examples given;
  'dirichlet'  label shift (the non-i.i.d. TTA protocol of NOTE/RoTTA): the stream is cut into
               `num_slots` time slots; each class's examples are spread over the slots with
               proportions ~ Dirichlet(alpha); within a slot the classes come in contiguous chunks
               (random class order per slot). Small alpha = classes arrive in long bursts;
  'mixed'      several target domains shuffled together (i.i.d. over their union);
  'continual'  domain after domain (`domain_order` or sorted names); within each domain the order
               is i.i.d. or, with `within='dirichlet'`, label-shifted as above.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np

from yiplearn import checks, errors

KINDS = ('iid', 'dirichlet', 'mixed', 'continual')


def iid_order(n: int, rng: np.random.Generator) -> np.ndarray:
  return rng.permutation(n)


def dirichlet_order(
  labels: np.ndarray, alpha: float, rng: np.random.Generator, num_slots: int | None = None
) -> np.ndarray:
  """Label-shifted order of indices 0..len(labels)-1 (see the module docstring)."""
  if alpha <= 0:
    raise errors.invalid('alpha', alpha, '> 0')
  labels = np.asarray(labels)
  classes = np.unique(labels)
  if num_slots is None:
    num_slots = max(1, min(len(labels), 10 * len(classes)))
  if num_slots < 1:
    raise errors.invalid('num_slots', num_slots, '>= 1')
  slots: list[list[np.ndarray]] = [[] for _ in range(num_slots)]
  for c in classes:
    idx = rng.permutation(np.flatnonzero(labels == c))
    props = rng.dirichlet(np.full(num_slots, alpha))
    cuts = (np.cumsum(props)[:-1] * len(idx)).astype(int)
    for s, part in enumerate(np.split(idx, cuts)):
      if len(part):
        slots[s].append(part)
  order = []
  for parts in slots:
    for j in rng.permutation(len(parts)):
      order.append(parts[j])
  return np.concatenate(order) if order else np.zeros((0,), np.int64)


def continual_order(
  domains: np.ndarray,
  rng: np.random.Generator,
  domain_order: Sequence[str] | None = None,
  within: str = 'iid',
  labels: np.ndarray | None = None,
  alpha: float = 1.0,
  num_slots: int | None = None,
) -> np.ndarray:
  """Domain after domain; inside a domain 'iid' or 'dirichlet' (needs labels)."""
  domains = np.asarray(domains).astype(str)
  names = list(domain_order) if domain_order is not None else sorted(set(domains.tolist()))
  missing = [d for d in names if d not in set(domains.tolist())]
  if missing:
    raise errors.invalid(
      'domain_order',
      names,
      f'domains with examples, one of {sorted(set(domains.tolist()))} ({missing} have none)',
    )
  if within not in ('iid', 'dirichlet'):
    raise errors.invalid('within', within, "'iid' or 'dirichlet'")
  out = []
  for d in names:
    idx = np.flatnonzero(domains == d)
    if within == 'iid':
      out.append(idx[rng.permutation(len(idx))])
    else:
      out.append(idx[dirichlet_order(labels[idx], alpha, rng, num_slots)])
  return np.concatenate(out)


class Stream:
  """Batches of `arrays` in the order `order`; iterable any number of times; len = #batches."""

  def __init__(self, arrays: dict[str, np.ndarray], order: np.ndarray, batch_size: int):
    self.arrays = arrays
    self.order = np.asarray(order, np.int64)
    self.batch_size = batch_size

  def __len__(self) -> int:
    return -(-len(self.order) // self.batch_size)

  def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
    return self.batches()

  def batches(self, first: int = 0) -> Iterator[dict[str, np.ndarray]]:
    """The batches from batch index `first` on (a resumed run skips the ones it has done)."""
    for start in range(first * self.batch_size, len(self.order), self.batch_size):
      idx = self.order[start : start + self.batch_size]
      batch = {k: v[idx] for k, v in self.arrays.items()}
      batch['index'] = idx
      yield batch


def make_stream(
  kind: str,
  images: np.ndarray,
  labels: np.ndarray,
  domains: np.ndarray | Sequence[str] | None = None,
  *,
  batch_size: int,
  seed: int = 0,
  alpha: float = 0.1,
  num_slots: int | None = None,
  domain_order: Sequence[str] | None = None,
  within: str = 'iid',
) -> Stream:
  """A test stream over (images (N, ...), labels (N,), domains (N,) str); see module docstring.

  Raises:
    ValueError: unknown kind, empty or mismatched arrays, batch_size < 1, alpha <= 0, or a
      'mixed' stream with fewer than two domains.
  """
  if kind not in KINDS:
    raise errors.invalid('kind', kind, f'one of {KINDS}')
  if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
    raise errors.invalid('batch_size', batch_size, 'an int >= 1')
  images, labels = np.asarray(images), np.asarray(labels)
  n = len(images)
  if n == 0:
    raise errors.invalid('len(images)', 0, 'at least one example in the stream')
  checks.image_batch('images', images)  # NaN/Inf pixels are refused before any jitted update
  if domains is None:
    domains = np.full((n,), 'target')
  domains = np.asarray(domains).astype(str)
  if len(labels) != n or len(domains) != n:
    raise errors.invalid(
      'len(labels), len(domains)', (len(labels), len(domains)), f'len(images) = {n} each'
    )
  rng = np.random.default_rng(seed)
  if kind == 'iid':
    order = iid_order(n, rng)
  elif kind == 'dirichlet':
    order = dirichlet_order(labels, alpha, rng, num_slots)
  elif kind == 'mixed':
    if len(set(domains.tolist())) < 2:
      raise errors.invalid(
        'domains', sorted(set(domains.tolist())), 'at least 2 domains for a mixed stream'
      )
    order = iid_order(n, rng)
  else:
    order = continual_order(domains, rng, domain_order, within, labels, alpha, num_slots)
  return Stream({'image': images, 'label': labels, 'domain': domains}, order, int(batch_size))


def label_switch_rate(labels: np.ndarray) -> float:
  """Fraction of consecutive stream positions whose label changes (1 - temporal correlation)."""
  labels = np.asarray(labels)
  return float(np.mean(labels[1:] != labels[:-1])) if len(labels) > 1 else 0.0
