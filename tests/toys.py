"""A tiny click model shared by the update, session and tool tests: fast to compile, every rule runs on it."""

import jax
import jax.numpy as jnp
import numpy as np


def toy_apply(params, x):
  """3x3 conv -> tanh -> 1x1, plus a linear skip: (N, H, W, C) -> (N, H, W, K)."""
  h = jax.lax.conv_general_dilated(
    x, params['w1'], (1, 1), 'SAME', dimension_numbers=('NHWC', 'HWIO', 'NHWC')
  )
  return jnp.tanh(h + params['b1']) @ params['w2'] + x @ params['w0'] + params['b2']


def toy_params(cin, seed=0, k=2):
  rng = np.random.default_rng(seed)
  f = lambda *s: jnp.asarray(rng.normal(size=s) * 0.3, jnp.float32)
  return {'w1': f(3, 3, cin, 6), 'b1': f(6), 'w2': f(6, k), 'w0': f(cin, k), 'b2': f(k)}
