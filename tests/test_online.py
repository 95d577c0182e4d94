"""Online merging: entropy-adaptive merging, AdaMerging, Tent, fixed merges."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from yiplearn.merging import adamerging, candidates, online, static, tent
from yiplearn.merging import tree as tr
from yiplearn.models.resnet import resnet_classifier
from yiplearn.models.vit import vit_classifier

K, D, C = 3, 4, 3  # experts, feature block size, classes


class Toy:
  """Linear encoder + linear head with the Classifier interface."""

  def encode(self, v, x, train=False):
    return x @ v['params']['encoder']['w']

  def head(self, v, f, train=False):
    return f @ v['params']['head']['w'] + v['params']['head']['b']


@jax.custom_vjp
def _trap(x):
  return x


def _trap_fwd(x):
  raise AssertionError('a gradient was taken through the model')


_trap.defvjp(_trap_fwd, lambda r, g: (g,))


class TrapToy(Toy):
  def encode(self, v, x, train=False):
    return _trap(super().encode(v, x, train))


def block_experts(enc_differ=True, head_differ=False, strength=8.0):
  """Domain k's data lives in input block k; expert k 'is the true model' there."""
  rng = np.random.default_rng(0)
  protos = rng.normal(size=(D, C)).astype(np.float32)
  experts, n = [], K * D
  for k in range(K):
    we = np.zeros((n, n), np.float32)
    if enc_differ:
      we[k * D : (k + 1) * D, k * D : (k + 1) * D] = np.eye(D)
    else:
      we[:] = np.eye(n)
    wh = np.zeros((n, C), np.float32)
    if head_differ:
      wh[k * D : (k + 1) * D] = strength * protos
    else:
      wh[:] = np.tile(strength * protos, (K, 1))
    experts.append(
      {'params': {'encoder': {'w': we}, 'head': {'w': wh, 'b': np.zeros(C, np.float32)}}}
    )
  base = jax.tree.map(np.zeros_like, experts[0])
  return tr.stack(experts), base, protos


def domain_batch(k, protos, b=16, seed=0):
  rng = np.random.default_rng(seed)
  y = rng.integers(0, C, size=b)
  z = np.eye(C)[y] @ np.linalg.pinv(protos) + 0.05 * rng.normal(size=(b, D))
  x = np.zeros((b, K * D), np.float32)
  x[:, k * D : (k + 1) * D] = z
  return jnp.asarray(x), y


@pytest.mark.parametrize('temperature', [0.0, 1e-3])
def test_converges_on_true_expert(temperature):
  experts, base, protos = block_experts(enc_differ=True, head_differ=True)
  m = online.entropy_adaptive(
    Toy(), K, temperature=temperature, grid_resolution=4, refine_radius=0.2
  )
  update = jax.jit(m.update)
  state = m.init(experts, base)
  for t in range(4):
    x, y = domain_batch(1, protos, seed=t)
    state, logits, info = update(state, x)
  np.testing.assert_allclose(info['lam_enc'], [0, 1, 0], atol=1e-3)
  np.testing.assert_allclose(info['lam_head'], [0, 1, 0], atol=1e-3)
  assert np.mean(np.argmax(logits, -1) == y) == 1.0
  # A large temperature gives a soft mixture instead.
  soft = online.entropy_adaptive(Toy(), K, temperature=100.0, grid_resolution=4)
  _, _, info_soft = soft.update(soft.init(experts, base), x)
  assert info_soft['lam_enc'][1] < 0.6


def test_head_coefficients_decoupled_from_encoder():
  # Identical encoders, different heads: encoder scores are flat -> uniform; head picks expert 2.
  experts, base, protos = block_experts(enc_differ=False, head_differ=True)
  base['params']['encoder']['w'] = np.eye(K * D, dtype=np.float32)
  m = online.entropy_adaptive(Toy(), K, temperature=0.01, grid_resolution=4)
  x, _ = domain_batch(2, protos)
  _, _, info = m.update(m.init(experts, base), x)
  np.testing.assert_allclose(info['lam_enc'], np.full(K, 1 / K), atol=1e-5)
  assert info['lam_head'][2] > 0.95 and abs(info['lam_head'][0] - info['lam_head'][1]) < 1e-6
  np.testing.assert_allclose(info['enc_scores'], info['enc_scores'][0], atol=1e-6)
  # Different encoders, identical heads: the other way round.
  experts, base, protos = block_experts(enc_differ=True, head_differ=False)
  base['params']['head'] = jax.tree.map(lambda e: e[0], experts['params']['head'])
  x, _ = domain_batch(0, protos)
  _, _, info = m.update(m.init(experts, base), x)
  assert info['lam_enc'][0] > 0.95 and abs(info['lam_enc'][1] - info['lam_enc'][2]) < 1e-6
  np.testing.assert_allclose(info['lam_head'], np.full(K, 1 / K), atol=1e-5)


def test_online_path_takes_no_gradients():
  experts, base, protos = block_experts()
  x, _ = domain_batch(0, protos)
  for kw in [{}, {'refine_radius': 0.3, 'ema': 0.5, 'marginal_weight': 0.5}]:
    m = online.entropy_adaptive(TrapToy(), K, **kw)
    state = m.init(experts, base)
    jaxpr = str(jax.make_jaxpr(m.update)(state, x))  # the trap raises if differentiated
    assert 'jvp' not in jaxpr
    m.update(state, x)
  # The trap is effective: AdaMerging differentiates through the model and trips it.
  ada = adamerging.adamerging(TrapToy(), K)
  with pytest.raises(AssertionError, match='gradient'):
    ada.update(ada.init(experts, base), x)


def test_chunked_candidates_equal_python_loop():
  model = resnet_classifier(3, stage_sizes=(1,), widths=(4,))
  x = jax.random.normal(jax.random.key(0), (4, 8, 8, 3))
  base = model.init(jax.random.key(1), x)
  experts = tr.stack(
    [
      jax.tree.map(
        lambda a, i=i: (
          a + 0.3 * jax.random.normal(jax.random.fold_in(jax.random.key(2), i), a.shape)
        ),
        base,
      )
      for i in range(K)
    ]
  )
  tau = tr.task_vectors(experts, base)
  cands = jnp.asarray(candidates.make_candidates(K, grid_resolution=3))  # J = 11 (with mean)
  head_lam = jnp.asarray([0.2, 0.5, 0.3])
  apply = jax.jit(model.apply, static_argnums=2)
  for bn_mode, hl in (('merge', None), ('batch', head_lam)):
    if True:
      got = online.score_candidates(
        model, base, tau, x, cands, scale=0.9, head_lam=hl, bn_mode=bn_mode, chunk_size=4
      )
      ref = []
      for lam in np.asarray(cands):
        v = tr.merge(base, tau, 0.9 * jnp.asarray(lam))
        # BatchNorm statistics: merged with the coefficients normalised to the simplex (merging.bn).
        stats = tr.merge(base, tau, jnp.asarray(lam) / np.sum(lam))['batch_stats']
        v = dict(v, batch_stats=stats)
        if hl is not None:
          vh = tr.merge(base, tau, 0.9 * hl)
          v['params']['head'] = vh['params']['head']
        logits = apply(v, x, bn_mode == 'batch')
        ref.append(online.entropy_score(logits))
      np.testing.assert_allclose(got, np.asarray(ref), rtol=1e-4, atol=1e-5)


def test_entropy_score_and_weights_reference():
  logits = jnp.asarray([[2.0, 0.0, -1.0], [0.0, 0.0, 0.0]])
  p = np.exp(np.asarray(logits))
  p /= p.sum(1, keepdims=True)
  h = -(p * np.log(p)).sum(1)
  pb = p.mean(0)
  np.testing.assert_allclose(online.entropy_score(logits), h.mean(), rtol=1e-6)
  np.testing.assert_allclose(
    online.entropy_score(logits, 0.5), h.mean() + 0.5 * (pb * np.log(pb)).sum(), rtol=1e-6
  )
  s = jnp.asarray([0.3, 0.1, jnp.nan, 0.2])
  np.testing.assert_array_equal(online.candidate_weights(s, 0.0), [0, 1, 0, 0])
  w = np.exp(-np.array([0.3, 0.1, 0.2]) / 0.1)
  np.testing.assert_allclose(
    np.asarray(online.candidate_weights(s, 0.1))[[0, 1, 3]], w / w.sum(), rtol=1e-5
  )


def test_candidates():
  g = candidates.simplex_grid(3, 4)
  assert g.shape == (15, 3)
  np.testing.assert_allclose(g.sum(1), 1)
  c = candidates.make_candidates(3)
  assert len(c) == 16 and (c >= 0).all()  # 15 grid points + the mean
  r = candidates.make_candidates(8, grid_resolution=0, num_random=10)
  assert len(r) == 8 + 1 + 10
  np.testing.assert_allclose(r.sum(1), 1, rtol=1e-5)
  np.testing.assert_array_equal(r, candidates.make_candidates(8, grid_resolution=0, num_random=10))
  assert len(candidates.make_candidates(12)) == 12 + 1 + 16  # grid too large -> random points
  ref = candidates.refine(jnp.asarray([0.5, 0.5, 0.0]), 0.2)
  np.testing.assert_allclose(
    ref, [[0.5, 0.5, 0], [0.6, 0.4, 0], [0.4, 0.6, 0], [0.4, 0.4, 0.2]], atol=1e-6
  )
  with pytest.raises(ValueError, match='temperature'):
    online.entropy_adaptive(Toy(), 3, temperature=-1)
  with pytest.raises(ValueError, match='candidates.shape'):
    online.entropy_adaptive(Toy(), 3, candidates=np.ones((4, 2)))


def test_adamerging_moves_toward_true_expert():
  experts, base, protos = block_experts(head_differ=True, strength=2.0)
  for layerwise in (False, True):
    m = adamerging.adamerging(Toy(), K, layerwise=layerwise, learning_rate=0.05, steps=5)
    update = jax.jit(m.update)
    state = m.init(experts, base)
    losses = []
    for t in range(4):
      x, _ = domain_batch(2, protos, seed=t)
      state, _, info = update(state, x)
      losses.append(float(info['loss']))
    lam = np.asarray(info['lam'])
    assert lam[2] > 0.5 and lam[2] > lam[0] + 0.3, lam
    assert losses[-1] < losses[0]
    assert state.lam.shape == ((3, K) if layerwise else (K,))  # 3 leaves: enc w, head w, b


@functools.cache
def _resnet_setup():
  model = resnet_classifier(C, stage_sizes=(1,), widths=(4,))
  x = jax.random.normal(jax.random.key(0), (4, 8, 8, 3))
  base = model.init(jax.random.key(1), x)
  experts = tr.stack(
    [
      jax.tree.map(
        lambda a, i=i: (
          a + 0.2 * jax.random.normal(jax.random.fold_in(jax.random.key(3), i), a.shape)
        ),
        base,
      )
      for i in range(K)
    ]
  )
  return model, x, base, experts


def test_tent_updates_only_norm_params():
  model, x, base, experts = _resnet_setup()
  m = tent.tent(model, learning_rate=1e-2)
  state = m.init(experts, base)
  mean = static.mean_merge(experts)
  update = jax.jit(m.update)
  ents = []
  for _ in range(5):
    state, logits, info = update(state, x)
    ents.append(float(info['entropy']))
  assert ents[-1] < ents[0]
  sel = tr.mask_like(mean, tr.is_norm_affine)
  changed = jax.tree.map(lambda a, b: not np.allclose(a, b), state.variables, mean)
  for s, c in zip(jax.tree.leaves(sel), jax.tree.leaves(changed)):
    if not s:
      assert not c
  assert any(c for s, c in zip(jax.tree.leaves(sel), jax.tree.leaves(changed)) if s)


def _methods(model):
  return {
    'eam': online.entropy_adaptive(model, K, refine_radius=0.2, ema=0.3, chunk_size=5),
    'eam_bnbatch': online.entropy_adaptive(
      model, K, bn_mode='batch', temperature=0.0, score_head='same', num_random=4
    ),
    'ada_task': adamerging.adamerging(model, K, steps=2),
    'ada_layer': adamerging.adamerging(model, K, layerwise=True),
    'tent': tent.tent(model),
    'mean': online.fixed_model(model, lambda e, b: static.mean_merge(e)),
  }


@pytest.mark.parametrize('arch', ['resnet', 'vit'])
def test_contract_all_methods(arch):
  if arch == 'resnet':
    model, x, base, experts = _resnet_setup()
  else:
    model = vit_classifier(C, patch_size=4, dim=8, depth=1, num_heads=2)
    x = jax.random.normal(jax.random.key(0), (4, 8, 8, 3))
    base = model.init(jax.random.key(1), x)
    experts = tr.stack([jax.tree.map(lambda a, i=i: a + 0.1 * i, base) for i in range(K)])
  methods = _methods(model)
  if arch == 'vit':  # the architecture-independent methods are covered by the ResNet run
    methods = {'eam': methods['eam']}
  for name, m in methods.items():
    update = jax.jit(m.update, donate_argnums=0)
    state = m.init(experts, base)
    for b in (x, x * 0.5):
      state, logits, info = update(state, b)
      assert logits.shape == (4, C), name
      assert np.all(np.isfinite(np.asarray(logits))), name
      assert np.isfinite(float(info['entropy'])), name
    assert update._cache_size() == 1, name  # a second call never recompiles
    assert int(state.step) == 2
  # init copies: the caller's experts survive donation.
  np.asarray(jax.tree.leaves(experts)[0])
