import jax
import jax.numpy as jnp
import numpy as np
import pytest

from yiplearn.merging import static
from yiplearn.merging import tree as tr


def _setup(seed=0, k=3):
  rng = np.random.default_rng(seed)
  base = {
    'a': rng.normal(size=(5, 4)).astype(np.float32),
    'b': rng.normal(size=(7,)).astype(np.float32),
  }
  experts = jax.tree.map(
    lambda x: x[None] + rng.normal(size=(k,) + x.shape).astype(np.float32), base
  )
  return experts, base


def _flat(t):
  return np.concatenate(
    [
      np.asarray(t['a']).reshape(t['a'].shape[0], -1),
      np.asarray(t['b']).reshape(t['b'].shape[0], -1),
    ],
    axis=1,
  )


def _unflat(v):
  return {'a': v[:20].reshape(5, 4), 'b': v[20:]}


def test_mean_and_task_arithmetic():
  experts, base = _setup()
  m = static.mean_merge(experts)
  np.testing.assert_allclose(m['a'], np.asarray(experts['a']).mean(0), rtol=1e-6)
  ta = static.task_arithmetic(experts, base, scale=0.4)
  for name in base:
    ref = base[name] + 0.4 * (experts[name] - base[name][None]).sum(0)
    np.testing.assert_allclose(ta[name], ref, rtol=1e-5, atol=1e-6)
  # scale 1/K on tau equals the mean of experts.
  ta_k = static.task_arithmetic(experts, base, scale=1 / 3)
  np.testing.assert_allclose(ta_k['b'], m['b'], rtol=1e-5, atol=1e-6)


def _ties_numpy(tau, density):
  k, n = tau.shape
  keep = max(1, int(round(density * n)))
  out = np.zeros_like(tau)
  for i in range(k):
    idx = np.argsort(-np.abs(tau[i]))[:keep]
    out[i, idx] = tau[i, idx]
  sign = np.sign(out.sum(0))
  merged = np.zeros(n, np.float32)
  for j in range(n):
    vals = [out[i, j] for i in range(k) if out[i, j] != 0 and np.sign(out[i, j]) == sign[j]]
    merged[j] = np.mean(vals) if vals else 0.0
  return merged


@pytest.mark.parametrize('density', [0.1, 0.3, 1.0])
def test_ties_vs_numpy(density):
  experts, base = _setup(1)
  tau = _flat(tr.task_vectors(experts, base))
  ref = _ties_numpy(tau, density)
  got = static.ties_merge(experts, base, density=density, scale=0.7)
  b = np.concatenate([base['a'].ravel(), base['b']])
  out = np.concatenate([np.asarray(got['a']).ravel(), np.asarray(got['b'])])
  np.testing.assert_allclose(out, b + 0.7 * ref, rtol=1e-5, atol=1e-6)


def test_ties_hand_computed():
  tau = {'x': jnp.array([[3.0, -1.0, 0.1, 2.0], [-2.0, -4.0, 0.2, 1.0]])}
  # density 0.5 keeps 2 of 4 per task: task0 -> [3, 0, 0, 2], task1 -> [-2, -4, 0, 0].
  # signs: [+, -, 0, +]; disjoint mean: [3, -4, 0, 2].
  np.testing.assert_allclose(static.ties_vector(tau, 0.5)['x'], [3.0, -4.0, 0.0, 2.0])
  with pytest.raises(ValueError, match='density'):
    static.ties_vector(tau, 0.0)


def test_dare_fixed_key():
  experts, base = _setup(2, k=4)
  tau = tr.task_vectors(experts, base)
  key = jax.random.key(7)
  p = 0.6
  d1, d2 = static.dare(tau, key, p), static.dare(tau, key, p)
  jax.tree.map(np.testing.assert_array_equal, d1, d2)  # deterministic for a fixed key
  d3 = static.dare(tau, jax.random.key(8), p)
  assert not np.array_equal(d1['a'], d3['a'])
  t, d = _flat(tau), _flat(d1)
  kept = d != 0
  np.testing.assert_allclose(d[kept], t[kept] / (1 - p), rtol=1e-6)
  assert abs(kept.mean() - (1 - p)) < 0.2
  # DARE + TA == numpy TA on the dropped vectors; DARE + TIES == numpy TIES on them.
  ta = static.dare_merge(experts, base, key, p, then='task_arithmetic', scale=0.5)
  b = _flat(jax.tree.map(lambda x: x[None], base))[0]
  np.testing.assert_allclose(
    _flat(jax.tree.map(lambda x: x[None], ta))[0], b + 0.5 * d.sum(0), rtol=1e-5, atol=1e-5
  )
  ties = static.dare_merge(experts, base, key, p, then='ties', density=0.5, scale=1.0)
  np.testing.assert_allclose(
    _flat(jax.tree.map(lambda x: x[None], ties))[0], b + _ties_numpy(d, 0.5), rtol=1e-5, atol=1e-5
  )
  # Drop rate 0 is the identity.
  jax.tree.map(np.testing.assert_array_equal, static.dare(tau, key, 0.0), tau)
  with pytest.raises(ValueError, match='drop_rate'):
    static.dare(tau, key, 1.0)
  with pytest.raises(ValueError, match='then'):
    static.dare_merge(experts, base, key, 0.5, then='nope')


def test_fisher_linear_softmax_vs_numpy():
  rng = np.random.default_rng(3)
  w = rng.normal(size=(4, 3)).astype(np.float32)
  xs = [rng.normal(size=(5, 4)).astype(np.float32) for _ in range(2)]
  ys = [rng.integers(0, 3, size=5) for _ in range(2)]
  log_probs = lambda p, x: jax.nn.log_softmax(x @ p['w'])
  f = static.diagonal_fisher(log_probs, {'w': jnp.asarray(w)}, xs, labels=ys)
  ref = np.zeros_like(w)
  for x, y in zip(xs, ys):
    z = x @ w
    pr = np.exp(z - z.max(1, keepdims=True))
    pr /= pr.sum(1, keepdims=True)
    for i in range(len(x)):
      g = np.outer(x[i], np.eye(3)[y[i]] - pr[i])
      ref += g**2
  np.testing.assert_allclose(f['w'], ref / 10, rtol=1e-4, atol=1e-6)
  # Sampled labels: finite, non-negative, deterministic per key.
  f1 = static.diagonal_fisher(log_probs, {'w': jnp.asarray(w)}, xs, key=jax.random.key(0))
  f2 = static.diagonal_fisher(log_probs, {'w': jnp.asarray(w)}, xs, key=jax.random.key(0))
  np.testing.assert_array_equal(f1['w'], f2['w'])
  assert np.all(np.asarray(f1['w']) >= 0)
  with pytest.raises(ValueError, match='batches'):
    static.diagonal_fisher(log_probs, {'w': jnp.asarray(w)}, [])


def test_fisher_merge_vs_numpy():
  experts, _ = _setup(4)
  rng = np.random.default_rng(5)
  fishers = {'a': rng.uniform(size=experts['a'].shape).astype(np.float32), 'b': None}
  got = static.fisher_merge(experts, fishers, eps=1e-6, normalize=False)
  f = fishers['a'] + 1e-6
  np.testing.assert_allclose(got['a'], (f * experts['a']).sum(0) / f.sum(0), rtol=1e-5)
  np.testing.assert_allclose(got['b'], np.asarray(experts['b']).mean(0), rtol=1e-6)
  # All-zero Fisher -> uniform mean; one dominant Fisher -> that expert.
  z = static.fisher_merge(experts, jax.tree.map(jnp.zeros_like, experts))
  np.testing.assert_allclose(z['a'], np.asarray(experts['a']).mean(0), rtol=1e-5)
  dom = {
    'a': jnp.zeros_like(experts['a']).at[1].set(1e6),
    'b': jnp.zeros_like(experts['b']).at[1].set(1e6),
  }
  d = static.fisher_merge(experts, dom)
  np.testing.assert_allclose(d['a'], experts['a'][1], rtol=1e-4, atol=1e-5)


def test_fisher_normalisation_hand_computed():
  """Each model's Fisher is divided by its global L2 norm over all leaves (the references' default),
  not leaf by leaf; normalize=False weights by the raw values."""
  experts = {'a': jnp.asarray([[1.0], [3.0]]), 'b': jnp.asarray([[2.0], [4.0]])}
  fishers = {'a': jnp.asarray([[3.0], [1.0]]), 'b': jnp.asarray([[4.0], [0.0]])}
  np.testing.assert_allclose(static.fisher_norms(fishers), [5.0, 1.0], rtol=1e-6)
  norm = static.normalize_fishers(fishers)
  np.testing.assert_allclose(norm['a'], [[0.6], [1.0]], rtol=1e-6)
  np.testing.assert_allclose(norm['b'], [[0.8], [0.0]], rtol=1e-6)
  got = static.fisher_merge(experts, fishers, eps=1e-9)
  np.testing.assert_allclose(got['a'], [(0.6 * 1 + 1.0 * 3) / 1.6], rtol=1e-6)  # 2.25
  np.testing.assert_allclose(got['b'], [2.0], rtol=1e-6)
  raw = static.fisher_merge(experts, fishers, eps=1e-9, normalize=False)
  np.testing.assert_allclose(raw['a'], [(3 * 1 + 1 * 3) / 4.0], rtol=1e-6)  # 1.5
  # None leaves are left out of the norm and merged uniformly.
  part = static.fisher_merge(experts, {'a': fishers['a'], 'b': None}, eps=1e-9)
  np.testing.assert_allclose(part['a'], [(1 * 1 + 1 * 3) / 2.0], rtol=1e-6)
  np.testing.assert_allclose(part['b'], [3.0], rtol=1e-6)


def test_batch_stats_fisher_maps_bn_param_fisher():
  f_params = {
    'enc': {
      'bn': {
        'scale': jnp.array([[1.0, 2.0], [3.0, 4.0]]),
        'bias': jnp.array([[10.0, 20.0], [30.0, 40.0]]),
      },
      'conv': {'kernel': jnp.ones((2, 3, 2))},
    }
  }
  stats = {
    'enc': {
      'bn': {'mean': jnp.zeros((2, 2)), 'var': jnp.ones((2, 2))},
      'other': {'mean': jnp.zeros((2, 5))},
    }
  }
  got = static.batch_stats_fisher(f_params, stats)
  np.testing.assert_allclose(got['enc']['bn']['mean'], [[11.0, 22.0], [33.0, 44.0]])
  np.testing.assert_allclose(got['enc']['bn']['var'], [[11.0, 22.0], [33.0, 44.0]])
  assert got['enc']['other']['mean'] is None  # no matching scale/bias: uniform mean
  merged = static.fisher_merge(stats, got)
  np.testing.assert_allclose(merged['enc']['bn']['var'], [1.0, 1.0])
  np.testing.assert_allclose(merged['enc']['other']['mean'], np.zeros(5))
