import jax
import jax.numpy as jnp
import numpy as np
import pytest

from yiplearn.models.vit import vit_classifier


@pytest.mark.parametrize('pool', ['cls', 'mean'])
def test_shapes_and_split(pool):
  model = vit_classifier(4, patch_size=4, dim=16, depth=2, num_heads=2, pool=pool)
  x = jax.random.normal(jax.random.key(0), (2, 16, 16, 3))
  v = model.init(jax.random.key(1), x)
  assert set(v) == {'params'} and set(v['params']) == {'encoder', 'head'}
  feats = model.encode(v, x)
  assert feats.shape == (2, 16)
  logits = model.apply(v, x)
  assert logits.shape == (2, 4)
  np.testing.assert_allclose(model.head(v, feats), logits, rtol=1e-6)
  # Per-example computation (no batch coupling).
  np.testing.assert_allclose(model.apply(v, x[:1]), logits[:1], rtol=1e-4, atol=1e-5)
  # Patches are tokens: 16 patches of 4x4 (+ CLS).
  n_tok = 16 + (pool == 'cls')
  assert v['params']['encoder']['pos_embed'].shape == (1, n_tok, 16)


def test_layernorm_is_addressable():
  model = vit_classifier(3, dim=8, depth=1, num_heads=2)
  v = model.init(jax.random.key(0), jnp.zeros((1, 8, 8, 1)))
  names = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_leaves_with_path(v)]
  assert any('LayerNorm' in n and 'scale' in n for n in names)


def test_errors():
  with pytest.raises(ValueError, match='num_heads'):
    vit_classifier(2, dim=10, num_heads=3)
  model = vit_classifier(2, patch_size=5, dim=8, num_heads=2)
  with pytest.raises(ValueError, match='patch_size'):
    model.init(jax.random.key(0), jnp.zeros((1, 16, 16, 1)))
