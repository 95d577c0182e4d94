"""Pytree arithmetic for model merging.

Experts are held as ONE stacked pytree: every leaf has a leading expert axis K, i.e. shape
(K, *leaf_shape). Weighted sums over that axis are `tensordot`s, so coefficient vectors can be
vmapped. Partitioning by path (e.g. encoder vs head) uses `None` for the leaves that are not
selected, so that `combine` can put the parts back together.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from yiplearn import errors

PyTree = Any
PathPredicate = Callable[[tuple], bool]


def _same_architecture(name: str, tree: PyTree, ref_name: str, ref: PyTree, lead: int = 0) -> None:
  """Raises one UserError when `tree` differs from `ref` in structure or leaf shapes (static: jit-safe).
  `lead` leading axes of `tree`'s leaves are ignored (the K axis of stacked experts)."""
  if jax.tree.structure(tree) != jax.tree.structure(ref):
    raise errors.invalid(
      f'{name} parameter tree',
      str(jax.tree.structure(tree)),
      f"{ref_name}'s {jax.tree.structure(ref)} (models of one architecture)",
    )
  for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(tree), jax.tree.leaves(ref)):
    if tuple(jnp.shape(a))[lead:] != tuple(jnp.shape(b)):
      raise errors.invalid(
        f'{name} leaf {"/".join(path_names(path))} shape',
        tuple(jnp.shape(a))[lead:],
        f'{tuple(jnp.shape(b))} as in {ref_name} (models of one architecture)',
      )


def stack(trees: Sequence[PyTree]) -> PyTree:
  """K pytrees of identical structure -> one pytree whose leaves are stacked to (K, ...)."""
  if len(trees) == 0:
    raise errors.invalid('trees', [], 'at least one pytree to stack')
  for i, t in enumerate(trees[1:], start=1):
    _same_architecture(f'trees[{i}]', t, 'trees[0]', trees[0])
  return jax.tree.map(lambda *xs: jnp.stack(xs), *trees)


def check_experts(experts: Sequence[PyTree], names: Sequence[str] | None = None) -> None:
  """Host-side check of unstacked experts before merging: at least one, one architecture (tree
  structure and leaf shapes), finite weights. Raises one UserError naming the expert and leaf."""
  names = [str(n) for n in names] if names is not None else [str(i) for i in range(len(experts))]
  if len(experts) == 0:
    raise errors.invalid('experts', [], 'at least one expert to merge')
  for name, e in zip(names, experts):
    _same_architecture(f'expert {name!r}', e, f'expert {names[0]!r}', experts[0])
    for path, leaf in jax.tree_util.tree_leaves_with_path(e):
      x = np.asarray(leaf)
      if np.issubdtype(x.dtype, np.floating) and not np.isfinite(x).all():
        raise errors.invalid(
          f'expert {name!r} leaf {"/".join(path_names(path))}',
          'NaN or Inf',
          'finite weights (retrain or replace this expert)',
        )


def unstack(stacked: PyTree) -> list[PyTree]:
  """Inverse of `stack`."""
  k = num_experts(stacked)
  return [jax.tree.map(lambda x, i=i: x[i], stacked) for i in range(k)]


def num_experts(stacked: PyTree) -> int:
  """Size K of the leading expert axis (checked equal over leaves)."""
  sizes = {x.shape[0] for x in jax.tree.leaves(stacked)}
  if len(sizes) != 1:
    raise errors.invalid('stacked experts leading axes', sorted(sizes), 'one size K')
  return sizes.pop()


def task_vectors(experts: PyTree, base: PyTree) -> PyTree:
  """tau_k = theta_k - theta_0 for stacked experts (K, ...) and a base pytree."""
  _same_architecture('experts', experts, 'base', base, lead=1)
  return jax.tree.map(lambda e, b: e - b[None], experts, base)


def weighted_sum(stacked: PyTree, weights: jax.Array) -> PyTree:
  """sum_k weights[k] * leaf[k] for every leaf; weights (K,) -> pytree without the K axis."""
  return jax.tree.map(lambda x: jnp.tensordot(weights.astype(x.dtype), x, axes=1), stacked)


def add_scaled(base: PyTree, delta: PyTree, scale: float | jax.Array = 1.0) -> PyTree:
  """base + scale * delta, leaf-wise (None leaves in `delta` are not allowed)."""
  return jax.tree.map(lambda b, d: b + jnp.asarray(scale, b.dtype) * d, base, delta)


def merge(base: PyTree, tau: PyTree, coeffs: jax.Array) -> PyTree:
  """theta_0 + sum_k coeffs[k] tau_k; coeffs (K,) task-wise or (L, K) one row per leaf."""
  leaves_b, treedef = jax.tree.flatten(base)
  leaves_t = treedef.flatten_up_to(tau)
  if coeffs.ndim == 1:
    out = [b + jnp.tensordot(coeffs.astype(t.dtype), t, axes=1) for b, t in zip(leaves_b, leaves_t)]
  elif coeffs.ndim == 2 and coeffs.shape[0] == len(leaves_b):
    out = [
      b + jnp.tensordot(c.astype(t.dtype), t, axes=1) for b, t, c in zip(leaves_b, leaves_t, coeffs)
    ]
  else:
    raise errors.invalid('coeffs.shape', coeffs.shape, f'(K,) or ({len(leaves_b)}, K)')
  return jax.tree.unflatten(treedef, out)


def _key_name(k: Any) -> str:
  for attr in ('key', 'name', 'idx'):
    if hasattr(k, attr):
      return str(getattr(k, attr))
  return str(k)


def path_names(path: tuple) -> tuple[str, ...]:
  """A tree_util key path as plain strings, e.g. ('params', 'head', 'kernel')."""
  return tuple(_key_name(k) for k in path)


def has_key(*names: str) -> PathPredicate:
  """Predicate: some component of the leaf's path equals one of `names` (e.g. 'head')."""
  names_set = set(names)
  return lambda path: any(n in names_set for n in path_names(path))


def is_norm_affine(path: tuple) -> bool:
  """Predicate: a scale/bias of a normalisation layer (module name containing 'norm')."""
  names = path_names(path)
  return (
    bool(names) and names[-1] in ('scale', 'bias') and any('norm' in n.lower() for n in names[:-1])
  )


def partition(tree: PyTree, predicate: PathPredicate) -> tuple[PyTree, PyTree]:
  """(selected, rest): two trees of the same structure, None where a leaf belongs to the other."""
  sel = jax.tree_util.tree_map_with_path(lambda p, x: x if predicate(p) else None, tree)
  rest = jax.tree_util.tree_map_with_path(lambda p, x: None if predicate(p) else x, tree)
  return sel, rest


def combine(*trees: PyTree) -> PyTree:
  """Leaf-wise first non-None value of partitioned trees (inverse of `partition`)."""

  def pick(*xs):
    for x in xs:
      if x is not None:
        return x
    return None

  return jax.tree.map(pick, *trees, is_leaf=lambda x: x is None)


def mask_like(tree: PyTree, predicate: PathPredicate) -> PyTree:
  """Boolean pytree (Python bools) marking the leaves selected by `predicate`."""
  return jax.tree_util.tree_map_with_path(lambda p, _: bool(predicate(p)), tree)


def num_leaves(tree: PyTree) -> int:
  return len(jax.tree.leaves(tree))


def ravel_stacked(stacked: PyTree) -> tuple[jax.Array, Callable[[jax.Array], PyTree]]:
  """Stacked pytree -> (K, N) matrix and a function mapping an (N,) vector back to one pytree."""
  leaves, treedef = jax.tree.flatten(stacked)
  k = leaves[0].shape[0]
  shapes = [x.shape[1:] for x in leaves]
  sizes = [int(jnp.size(x) // k) for x in leaves]
  flat = jnp.concatenate([x.reshape(k, -1) for x in leaves], axis=1)

  def unravel(vec: jax.Array) -> PyTree:
    out, start = [], 0
    for shp, n, leaf in zip(shapes, sizes, leaves):
      out.append(vec[start : start + n].reshape(shp).astype(leaf.dtype))
      start += n
    return jax.tree.unflatten(treedef, out)

  return flat, unravel
