import jax
import jax.numpy as jnp
import numpy as np
import pytest

from yiplearn.merging import tree as tr


def _tree(rng, k=None):
  lead = () if k is None else (k,)
  return {
    'params': {
      'encoder': {
        'w': rng.normal(size=lead + (3, 4)).astype(np.float32),
        'b': rng.normal(size=lead + (4,)).astype(np.float32),
      },
      'head': {'kernel': rng.normal(size=lead + (4, 2)).astype(np.float32)},
    },
    'batch_stats': {'encoder': {'mean': rng.normal(size=lead + (4,)).astype(np.float32)}},
  }


def test_stack_unstack_roundtrip():
  rng = np.random.default_rng(0)
  trees = [_tree(rng) for _ in range(3)]
  st = tr.stack(trees)
  assert tr.num_experts(st) == 3
  for a, b in zip(tr.unstack(st), trees):
    jax.tree.map(np.testing.assert_array_equal, a, b)
  with pytest.raises(ValueError, match='trees'):
    tr.stack([])


def test_task_vectors_weighted_sum_merge():
  rng = np.random.default_rng(1)
  experts, base = _tree(rng, 3), _tree(rng)
  tau = tr.task_vectors(experts, base)
  w = np.array([0.2, 0.5, 0.3], np.float32)
  merged = tr.merge(base, tau, jnp.asarray(w))
  ref = jax.tree.map(lambda e, b: b + np.einsum('k,k...->...', w, e - b[None]), experts, base)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), merged, ref)
  # Weights summing to one: merge == weighted sum of experts.
  ws = tr.weighted_sum(experts, jnp.asarray(w))
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5), merged, ws)
  # Layer-wise coefficients, one row per leaf.
  n = tr.num_leaves(base)
  coeffs = rng.uniform(size=(n, 3)).astype(np.float32)
  lw = tr.merge(base, tau, jnp.asarray(coeffs))
  lb, treedef = jax.tree.flatten(base)
  lt = treedef.flatten_up_to(tau)
  for out, b, t, c in zip(jax.tree.leaves(lw), lb, lt, coeffs):
    np.testing.assert_allclose(out, b + np.einsum('k,k...->...', c, t), rtol=1e-5, atol=1e-6)
  with pytest.raises(ValueError, match='coeffs'):
    tr.merge(base, tau, jnp.ones((n + 1, 3)))


def test_partition_combine_and_predicates():
  rng = np.random.default_rng(2)
  t = _tree(rng)
  head, enc = tr.partition(t, tr.has_key('head'))
  assert head['params']['encoder']['w'] is None and enc['params']['head']['kernel'] is None
  assert head['batch_stats']['encoder']['mean'] is None
  np.testing.assert_array_equal(head['params']['head']['kernel'], t['params']['head']['kernel'])
  back = tr.combine(enc, head)
  jax.tree.map(np.testing.assert_array_equal, back, t)
  mask = tr.mask_like(t, tr.has_key('head'))
  assert mask['params']['head']['kernel'] is True and mask['params']['encoder']['w'] is False
  norm = {'LayerNorm_0': {'scale': 1, 'bias': 2}, 'Dense_0': {'bias': 3}}
  m = tr.mask_like(norm, tr.is_norm_affine)
  assert m == {'LayerNorm_0': {'scale': True, 'bias': True}, 'Dense_0': {'bias': False}}


def test_ravel_stacked():
  rng = np.random.default_rng(3)
  st = _tree(rng, 2)
  flat, unravel = tr.ravel_stacked(st)
  assert flat.shape == (2, 12 + 4 + 8 + 4)
  jax.tree.map(np.testing.assert_array_equal, unravel(flat[1]), tr.unstack(st)[1])
