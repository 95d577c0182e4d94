"""U-Net: shapes, norms, invariants, compilation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from yiplearn.models.unet import UNet


def _init(model, x):
  """The real (jitted) flax init; its threefry code is slow to compile on CPU, so most tests use _fast_init."""
  return jax.jit(model.init)(jax.random.PRNGKey(0), x)


def _fast_init(model, x, seed=0):
  """Variables with the init's structure, filled on the host (LeCun-normal kernels, zero biases)."""
  rng = np.random.default_rng(seed)

  def fill(path, s):
    name = path[-1].key
    if name == 'kernel':
      return jnp.asarray(rng.normal(size=s.shape) / np.sqrt(np.prod(s.shape[:-1])), s.dtype)
    return jnp.ones(s.shape, s.dtype) if name in ('scale', 'var') else jnp.zeros(s.shape, s.dtype)

  shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), x)
  return jax.tree_util.tree_map_with_path(fill, shapes)


def _apply(model, variables, x):
  return jax.jit(model.apply)(variables, x)


@pytest.mark.parametrize(
  'widths,bottleneck,hw', [((4, 8), 16, (32, 32)), ((3, 5, 7), 9, (16, 24)), ((5,), 3, (12, 10))]
)
def test_shapes_odd_widths_and_depths(widths, bottleneck, hw):
  model = UNet(num_classes=3, widths=widths, bottleneck=bottleneck)
  x = jax.random.normal(jax.random.PRNGKey(1), (2, *hw, 5))
  variables = _fast_init(model, x)
  assert set(variables) == {'params'}
  y = _apply(model, variables, x)
  assert y.shape == (2, *hw, 3) and y.dtype == jnp.float32
  assert np.all(np.isfinite(np.asarray(y)))


def test_non_multiple_spatial_size_is_padded_and_cropped():
  model = UNet(num_classes=2, widths=(4, 8), bottleneck=8)
  x = jax.random.normal(jax.random.PRNGKey(2), (1, 30, 27, 3))
  variables = _fast_init(model, x)
  y = _apply(model, variables, x)
  assert y.shape == (1, 30, 27, 2)
  # Equals running the edge-padded image and cropping.
  xp = jnp.pad(x, ((0, 0), (0, 2), (0, 1), (0, 0)), mode='edge')
  np.testing.assert_allclose(
    np.asarray(y), np.asarray(_apply(model, variables, xp))[:, :30, :27], atol=1e-6
  )


def test_instance_norm_has_no_norm_params_and_conv_biases_only_where_needed():
  model = UNet(num_classes=2, widths=(4, 8), bottleneck=16)
  params = jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.zeros((1, 16, 16, 3)))['params']
  leaves = jax.tree_util.tree_leaves_with_path(params)
  names = [jax.tree_util.keystr(p) for p, _ in leaves]
  assert not any('InstanceNorm' in n or 'scale' in n for n in names)
  # 3 blocks x 2 convs (no bias) + 2 blocks up x 2 convs + 2 transposed convs (kernel+bias) + 1x1 head (kernel+bias)
  n_conv_kernels = sum(n.endswith("['kernel']") for n in names)
  assert n_conv_kernels == 2 * 3 + 2 * 2 + 2 + 1

  # Parameter count from the architecture by hand: in 3+2 ch -> (4,8) -> 16.
  def conv(cin, cout, k=3, bias=False):
    return cin * cout * k * k + (cout if bias else 0)

  want = (
    conv(3, 4)
    + conv(4, 4)
    + conv(4, 8)
    + conv(8, 8)
    + conv(8, 16)
    + conv(16, 16)
    + conv(16, 8, 2, True)
    + conv(16, 8)
    + conv(8, 8)
    + conv(8, 4, 2, True)
    + conv(8, 4)
    + conv(4, 4)
    + conv(4, 2, 1, True)
  )
  assert sum(x.size for x in jax.tree_util.tree_leaves(params)) == want


def test_instance_norm_makes_samples_independent_and_input_scale_invariant():
  model = UNet(num_classes=3, widths=(4, 8), bottleneck=8)
  x = jax.random.normal(jax.random.PRNGKey(3), (3, 16, 16, 2))
  variables = _fast_init(model, x)
  y = np.asarray(_apply(model, variables, x))
  y0 = np.asarray(_apply(model, variables, x[:1]))
  np.testing.assert_allclose(y[:1], y0, atol=1e-5)
  # First conv has no bias and every conv is followed by a per-channel normalisation: f(a x) = f(x), a > 0.
  np.testing.assert_allclose(np.asarray(_apply(model, variables, 7.0 * x)), y, atol=1e-3)


@pytest.mark.parametrize('norm', ['group', 'none'])
def test_group_and_none_need_no_state(norm):
  model = UNet(num_classes=2, widths=(6, 12), bottleneck=10, norm=norm)
  x = jax.random.normal(jax.random.PRNGKey(4), (2, 16, 16, 3))
  variables = _fast_init(model, x)
  assert set(variables) == {'params'}
  y = _apply(model, variables, x)
  assert y.shape == (2, 16, 16, 2) and np.all(np.isfinite(np.asarray(y)))


def test_batch_norm_uses_batch_stats():
  model = UNet(num_classes=2, widths=(4, 8), bottleneck=8, norm='batch')
  x = jax.random.normal(jax.random.PRNGKey(5), (2, 16, 16, 3))
  variables = _fast_init(model, x)
  assert set(variables) == {'params', 'batch_stats'}
  y, updates = jax.jit(lambda v, x: model.apply(v, x, train=True, mutable=['batch_stats']))(
    variables, x
  )
  assert y.shape == (2, 16, 16, 2)
  changed = jax.tree_util.tree_map(
    lambda a, b: bool(jnp.any(a != b)), variables['batch_stats'], updates['batch_stats']
  )
  assert any(jax.tree_util.tree_leaves(changed))
  y_eval = _apply(model, variables, x)  # running averages, no mutation needed
  assert np.all(np.isfinite(np.asarray(y_eval)))


def test_jit_does_not_recompile_and_is_deterministic():
  model = UNet(num_classes=2, widths=(4, 8), bottleneck=8)
  x = jax.random.uniform(jax.random.PRNGKey(7), (1, 16, 16, 3))
  params = _fast_init(model, x)
  traces = []

  @jax.jit
  def f(p, x):
    traces.append(1)
    return model.apply(p, x)

  a = f(params, x)
  b = f(params, jax.random.normal(jax.random.PRNGKey(6), x.shape))
  c = f(params, x)
  assert len(traces) == 1
  np.testing.assert_array_equal(np.asarray(a), np.asarray(c))
  assert not np.array_equal(np.asarray(a), np.asarray(b))


def test_real_init_is_finite_and_seeded():
  model = UNet(num_classes=2, widths=(3,), bottleneck=4)
  x = jnp.zeros((1, 8, 8, 2))
  a = _init(model, x)
  b = jax.jit(model.init)(jax.random.PRNGKey(1), x)
  la, lb = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
  assert all(np.all(np.isfinite(np.asarray(v))) for v in la)
  assert any(not np.array_equal(np.asarray(u), np.asarray(v)) for u, v in zip(la, lb))


def test_validation():
  with pytest.raises(ValueError, match='norm'):
    _init(UNet(num_classes=2, widths=(4,), bottleneck=4, norm='layer'), jnp.zeros((1, 8, 8, 1)))
  with pytest.raises(ValueError, match=r'x.shape=\(8, 8, 1\): expected'):
    _init(UNet(num_classes=2, widths=(4,), bottleneck=4), jnp.zeros((8, 8, 1)))


def test_up_conv_equals_flax_conv_transpose_and_keeps_its_parameters():
  """The matmul formulation of the 2x2 stride-2 transposed conv computes flax's ConvTranspose exactly, from
  the same parameter names, shapes and initial values (so older checkpoints load unchanged)."""
  import flax.linen as nn

  from yiplearn.models.unet import _UpConv

  x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 3, 5, 4)), jnp.float32)
  ref = nn.ConvTranspose(6, (2, 2), strides=(2, 2))
  ours = _UpConv(6, jnp.float32)
  p_ref = ref.init(jax.random.PRNGKey(3), x)
  p_ours = ours.init(jax.random.PRNGKey(3), x)
  for k in ('kernel', 'bias'):
    np.testing.assert_array_equal(p_ours['params'][k], p_ref['params'][k])
  p = {'params': {'kernel': p_ref['params']['kernel'], 'bias': jnp.arange(6, dtype=jnp.float32)}}
  np.testing.assert_allclose(ours.apply(p, x), ref.apply(p, x), rtol=1e-5, atol=1e-5)
  # Independent reference: every output pixel (2i+a, 2j+b) is x[i, j] @ K[1-a, 1-b] + bias.
  k = np.asarray(p['params']['kernel'])
  expect = np.einsum('nhwc,abcf->nhawbf', np.asarray(x), k[::-1, ::-1]).reshape(
    2, 6, 10, 6
  ) + np.arange(6)
  np.testing.assert_allclose(ours.apply(p, x), expect, rtol=1e-5, atol=1e-5)


def test_max_pool_values_and_float32_exact_gradient():
  """2x2 max-pool: values as flax's max_pool, gradient = upstream gradient routed to each window's argmax,
  exactly (no reduced-precision packing), checked against numpy."""
  import flax.linen as nn

  from yiplearn.models.unet import _max_pool_2x2

  rng = np.random.default_rng(1)
  x = jnp.asarray(rng.normal(size=(1, 6, 4, 3)), jnp.float32)
  up = rng.normal(size=(1, 3, 2, 3)).astype(np.float32) * np.float32(
    1 + 1e-6
  )  # not bf16-representable
  np.testing.assert_array_equal(_max_pool_2x2(x), nn.max_pool(x, (2, 2), strides=(2, 2)))
  g = np.asarray(jax.grad(lambda v: jnp.sum(_max_pool_2x2(v) * up))(x))
  xn, expect = np.asarray(x), np.zeros(x.shape, np.float32)
  for i in range(3):
    for j in range(2):
      for c in range(3):
        win = xn[0, 2 * i : 2 * i + 2, 2 * j : 2 * j + 2, c]
        a, b = np.unravel_index(np.argmax(win), (2, 2))
        expect[0, 2 * i + a, 2 * j + b, c] = up[0, i, j, c]
  np.testing.assert_array_equal(g, expect)


def test_conv3x3_value_and_gradients_equal_xla_and_a_numpy_reference():
  from yiplearn.models.unet import conv3x3

  rng = np.random.default_rng(2)
  x = jnp.asarray(rng.normal(size=(2, 5, 6, 3)), jnp.float32)
  k = jnp.asarray(rng.normal(size=(3, 3, 3, 4)), jnp.float32)
  g = jnp.asarray(rng.normal(size=(2, 5, 6, 4)), jnp.float32)
  ref = lambda x, k: jax.lax.conv_general_dilated(
    x, k, (1, 1), 'SAME', dimension_numbers=('NHWC', 'HWIO', 'NHWC')
  )
  np.testing.assert_allclose(conv3x3(x, k), ref(x, k), rtol=1e-5, atol=1e-5)
  dx, dk = jax.vjp(conv3x3, x, k)[1](g)
  rx, rk = jax.vjp(ref, x, k)[1](g)
  np.testing.assert_allclose(dx, rx, rtol=1e-5, atol=1e-4)
  np.testing.assert_allclose(dk, rk, rtol=1e-5, atol=1e-4)
  # numpy: dK[a, b, i, o] = sum_{n,h,w} xpad[n, h + a, w + b, i] g[n, h, w, o]
  xp = np.pad(np.asarray(x, np.float64), ((0, 0), (1, 1), (1, 1), (0, 0)))
  expect = np.array(
    [
      [
        np.einsum('nhwi,nhwo->io', xp[:, a : a + 5, b : b + 6], np.asarray(g, np.float64))
        for b in range(3)
      ]
      for a in range(3)
    ]
  )
  np.testing.assert_allclose(dk, expect, rtol=1e-5, atol=1e-4)


def test_conv_grads_modes_give_the_same_model_gradients():
  x = jnp.asarray(np.random.default_rng(3).normal(size=(1, 16, 16, 3)), jnp.float32)
  models = [
    UNet(num_classes=2, widths=(4, 8), bottleneck=8, conv_grads=m) for m in ('xla', 'matmul')
  ]
  params = _fast_init(models[0], x)
  grads = [
    jax.jit(jax.grad(lambda p, m=m: jnp.mean(m.apply(p, x)[..., 1] ** 2)))(params) for m in models
  ]
  for a, b in zip(jax.tree_util.tree_leaves(grads[0]), jax.tree_util.tree_leaves(grads[1])):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
  with pytest.raises(ValueError, match='conv_grads'):
    UNet(num_classes=2, widths=(4,), bottleneck=4, conv_grads='fast').init(jax.random.PRNGKey(0), x)


def _np_block(x, kernels, biases, eps):
  """2 x (3x3 'SAME' conv + bias -> InstanceNorm(eps, no affine) -> ReLU) in float64 numpy."""
  x = np.asarray(x, np.float64)
  for k, b in zip(kernels, biases):
    n, h, w, _ = x.shape
    xp = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    k = np.asarray(k, np.float64)
    y = sum(
      np.einsum('nhwi,io->nhwo', xp[:, a : a + h, c : c + w], k[a, c])
      for a in range(3)
      for c in range(3)
    ) + np.asarray(b, np.float64)
    mean = y.mean(axis=(1, 2), keepdims=True)
    var = y.var(axis=(1, 2), keepdims=True)
    x = np.maximum((y - mean) / np.sqrt(var + eps), 0.0)
  return x


def test_released_conv_bias_and_instance_norm_eps():
  """conv_bias adds a bias to every 3x3 conv (the released U-Net's parameters), which InstanceNorm
  cancels; norm_eps=1e-5 is PyTorch's InstanceNorm2d eps, pinned against numpy."""
  from yiplearn.models.unet import _Block  # pylint: disable=g-import-not-at-top

  x = jax.random.normal(jax.random.PRNGKey(5), (2, 16, 16, 3))
  plain, biased = UNet(2, (4, 8), 16), UNet(2, (4, 8), 16, conv_bias=True, norm_eps=1e-5)
  n_plain = sum(v.size for v in jax.tree_util.tree_leaves(_fast_init(plain, x)))
  var = _fast_init(biased, x)
  assert sum(v.size for v in jax.tree_util.tree_leaves(var)) - n_plain == 2 * (4 + 8 + 16 + 8 + 4)
  rng = np.random.default_rng(0)
  noisy = jax.tree_util.tree_map_with_path(
    lambda p, v: (
      v + rng.normal(size=v.shape).astype(np.float32)
      if 'Block' in jax.tree_util.keystr(p) and jax.tree_util.keystr(p).endswith("['bias']")
      else v
    ),
    var,
  )
  np.testing.assert_allclose(
    np.asarray(_apply(biased, noisy, x)), np.asarray(_apply(biased, var, x)), atol=2e-4
  )
  small = 1e-3 * x  # variance ~1e-6 per channel: the eps shows
  blk = _Block(4, 'instance', jnp.float32, 'xla', True, 1e-5)
  f = lambda *shape: jnp.asarray(0.3 * rng.normal(size=shape), jnp.float32)  # noqa: E731
  # Small first bias: flax's fast variance E[x^2] - E[x]^2 loses float32 digits when |mean| >> std.
  v = {'params': {'Conv_0': {'kernel': f(3, 3, 3, 4), 'bias': 1e-3 * f(4)}}}
  v['params']['Conv_1'] = {'kernel': f(3, 3, 4, 4), 'bias': f(4)}
  got = np.asarray(jax.jit(lambda v, x: blk.apply(v, x, False))(v, small))
  ks = [v['params'][f'Conv_{i}']['kernel'] for i in range(2)]
  bs = [v['params'][f'Conv_{i}']['bias'] for i in range(2)]
  np.testing.assert_allclose(got, _np_block(small, ks, bs, 1e-5), rtol=1e-3, atol=1e-4)
  assert np.abs(got - _np_block(small, ks, bs, 1e-6)).max() > 0.05
