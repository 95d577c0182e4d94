import jax
import jax.numpy as jnp
import numpy as np
import pytest

from yiplearn.merging import ensemble
from yiplearn.merging import tree as tr


class Linear:
  def encode(self, v, x, train=False):
    return x

  def head(self, v, f, train=False):
    return f @ v['params']['head']['w']


def _setup():
  rng = np.random.default_rng(0)
  scales = [0.5, 4.0, 1.0]  # expert 1 is the most confident
  experts = tr.stack(
    [{'params': {'head': {'w': s * rng.normal(size=(5, 3)).astype(np.float32)}}} for s in scales]
  )
  x = jnp.asarray(rng.normal(size=(6, 5)).astype(np.float32))
  return experts, x


def _softmax(z):
  e = np.exp(z - z.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


def test_mean_ensemble_vs_numpy():
  experts, x = _setup()
  m = ensemble.output_ensemble(Linear())
  _, logits, info = jax.jit(m.update)(m.init(experts, None), x)
  probs = np.stack(
    [_softmax(np.asarray(x) @ np.asarray(w)) for w in experts['params']['head']['w']]
  )
  np.testing.assert_allclose(np.exp(logits), probs.mean(0), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(info['weights'], np.full(3, 1 / 3), rtol=1e-6)


@pytest.mark.parametrize('temperature', [0.0, 0.3])
def test_entropy_weighted_vs_numpy(temperature):
  experts, x = _setup()
  m = ensemble.output_ensemble(Linear(), weighting='entropy', temperature=temperature)
  state, logits, info = m.update(m.init(experts, None), x)
  probs = np.stack(
    [_softmax(np.asarray(x) @ np.asarray(w)) for w in experts['params']['head']['w']]
  )
  h = -(probs * np.log(probs)).sum(-1).mean(-1)
  assert np.argmin(h) == 1
  if temperature == 0:
    w = np.eye(3)[1]
  else:
    w = np.exp(-(h - h.min()) / temperature)
    w /= w.sum()
  np.testing.assert_allclose(info['weights'], w, rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(np.exp(logits), np.einsum('k,kbc->bc', w, probs), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(info['expert_entropies'], h, rtol=1e-5)
  assert int(state.step) == 1


def test_validation():
  with pytest.raises(ValueError, match='weighting'):
    ensemble.output_ensemble(Linear(), weighting='max')
  with pytest.raises(ValueError, match='temperature'):
    ensemble.output_ensemble(Linear(), weighting='entropy', temperature=-0.1)
