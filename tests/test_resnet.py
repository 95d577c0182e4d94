import jax
import jax.numpy as jnp
import numpy as np
import pytest

from yiplearn.models.resnet import resnet_classifier


@pytest.fixture(scope='module')
def setup():
  model = resnet_classifier(5, stage_sizes=(1, 1), widths=(4, 8))
  x = jax.random.normal(jax.random.key(0), (3, 16, 16, 3))
  return model, model.init(jax.random.key(1), x), x


def test_structure_and_shapes(setup):
  model, variables, x = setup
  assert set(variables) == {'params', 'batch_stats'}
  assert set(variables['params']) == {'encoder', 'head'}
  assert set(variables['batch_stats']) == {'encoder'}
  feats = model.encode(variables, x)
  assert feats.shape == (3, 8)
  logits = model.apply(variables, x)
  assert logits.shape == (3, 5) and logits.dtype == jnp.float32
  np.testing.assert_allclose(model.head(variables, feats), logits, rtol=1e-6)
  w = variables['params']['head']
  np.testing.assert_allclose(logits, feats @ w['kernel'] + w['bias'], rtol=1e-5, atol=1e-6)


def test_batch_stats_modes(setup):
  model, variables, x = setup
  # Train mode normalises with batch statistics: features are batch-dependent.
  f_all = model.encode(variables, x, train=True)
  f_two = model.encode(variables, x[:2], train=True)
  assert not np.allclose(f_all[:2], f_two, atol=1e-5)
  # Eval mode is per-example.
  np.testing.assert_allclose(
    model.encode(variables, x)[:2], model.encode(variables, x[:2]), rtol=1e-5, atol=1e-6
  )
  _, new_vars = model.encode_with_updates(variables, x)
  old = jax.tree.leaves(variables['batch_stats'])
  new = jax.tree.leaves(new_vars['batch_stats'])
  assert any(not np.allclose(a, b) for a, b in zip(old, new))
  assert jax.tree.structure(new_vars) == jax.tree.structure(variables)


def test_imagenet_stem_and_errors():
  model = resnet_classifier(2, stage_sizes=(1, 1, 1), widths=(4, 4, 8), stem='imagenet')
  x = jnp.zeros((1, 32, 32, 1))
  v = model.init(jax.random.key(0), x)
  assert model.apply(v, x).shape == (1, 2)
  with pytest.raises(ValueError, match='num_classes'):
    resnet_classifier(0)
  with pytest.raises(ValueError, match='stage_sizes'):
    resnet_classifier(2, stage_sizes=(1,), widths=(4, 8)).init(jax.random.key(0), x)
