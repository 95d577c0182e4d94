"""Candidate coefficient vectors on the probability simplex for online merging.

A candidate set is a float32 array (J, K) whose rows are on the simplex (non-negative, sum 1).
Built once on the host (numpy, deterministic); `refine` adds candidates around the last choice
inside jitted code.
"""

from __future__ import annotations

import itertools

import jax.numpy as jnp
import numpy as np

from yiplearn import errors

_PRIMES = (2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41, 43, 47, 53, 59, 61, 67, 71)


def simplex_grid(k: int, resolution: int) -> np.ndarray:
  """All points of the simplex lattice {n / resolution : n in N^k, sum n = resolution}.

  Returns (C(resolution + k - 1, k - 1), K) float32, one-hots included.
  """
  if k < 1 or resolution < 1:
    raise errors.invalid('k, resolution', (k, resolution), 'both >= 1')
  pts = [c for c in itertools.product(range(resolution + 1), repeat=k) if sum(c) == resolution]
  return np.asarray(pts, np.float32) / resolution


def halton(n: int, dim: int, skip: int = 1) -> np.ndarray:
  """First n points (n, dim) of the Halton sequence in (0, 1) (after `skip` points)."""
  if dim > len(_PRIMES):
    raise errors.invalid('dim', dim, f'<= {len(_PRIMES)}')
  out = np.zeros((n, dim), np.float64)
  for d in range(dim):
    base = _PRIMES[d]
    for i in range(n):
      f, r, j = 1.0, 0.0, i + skip
      while j > 0:
        f /= base
        r += f * (j % base)
        j //= base
      out[i, d] = r
  return out


def quasi_dirichlet(k: int, n: int, concentration: float = 1.0, seed: int = 0) -> np.ndarray:
  """n fixed points (n, K) float32 from Dirichlet(concentration * 1_K).

  For concentration 1 (uniform on the simplex) the points are quasi-random: Halton points mapped
  through normalised exponential spacings; otherwise numpy draws with a fixed seed.
  """
  if concentration <= 0:
    raise errors.invalid('concentration', concentration, '> 0')
  if concentration == 1.0:
    u = halton(n, k, skip=1 + seed)
    e = -np.log(np.clip(u, 1e-12, 1.0))
  else:
    e = np.random.default_rng(seed).gamma(concentration, size=(n, k))
  return (e / e.sum(1, keepdims=True)).astype(np.float32)


def make_candidates(
  k: int,
  *,
  grid_resolution: int | None = None,
  num_random: int = 0,
  concentration: float = 1.0,
  seed: int = 0,
  include_onehots: bool = True,
  include_mean: bool = True,
  max_grid_size: int = 512,
) -> np.ndarray:
  """Candidate set (J, K): one-hots, the uniform mean, a simplex grid and/or quasi-random
  Dirichlet points; duplicates removed, order deterministic.

  If `grid_resolution` is None the grid is used when it has at most `max_grid_size` points with
  resolution 4 (small K) and otherwise skipped in favour of `num_random` points (>= 16 by default).
  """
  if k < 1:
    raise errors.invalid('k', k, '>= 1 experts')
  parts = []
  if include_onehots:
    parts.append(np.eye(k, dtype=np.float32))
  if include_mean:
    parts.append(np.full((1, k), 1.0 / k, np.float32))
  if grid_resolution is None:
    from math import comb

    if comb(4 + k - 1, k - 1) <= max_grid_size:
      grid_resolution = 4
    elif num_random == 0:
      num_random = 16
  if grid_resolution:
    parts.append(simplex_grid(k, grid_resolution))
  if num_random:
    parts.append(quasi_dirichlet(k, num_random, concentration, seed))
  if not parts:
    raise errors.invalid(
      'candidates', '(empty set)', 'one-hots, mean, grid or random points enabled'
    )
  cands = np.concatenate(parts, 0)
  _, idx = np.unique(np.round(cands, 6), axis=0, return_index=True)
  return cands[np.sort(idx)]


def refine(center: jnp.ndarray, radius: float) -> jnp.ndarray:
  """K + 1 candidates around `center` (K,): itself and (1 - radius) center + radius e_k."""
  k = center.shape[0]
  return jnp.concatenate([center[None], (1 - radius) * center[None] + radius * jnp.eye(k)], 0)
