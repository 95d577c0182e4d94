"""2-D U-Net for click-conditioned segmentation (DESIGN.md 1.1, "Model").

Encoder: one block per entry of ``widths`` [12, 72, 144, 288], each followed by a 2x2 max-pool; a bottleneck
block [576]; decoder: 2x2 stride-2 transposed conv, concatenate the skip, block; a 1x1 conv to class logits.
A block is 2 x (3x3 conv -> norm -> ReLU). ``norm``:

* ``'instance'`` [default]: InstanceNorm without scale/bias (no parameters, no state);
* ``'group'``: GroupNorm with affine, ``min(8, C)`` groups reduced to a divisor of C;
* ``'batch'``: BatchNorm (needs ``mutable=['batch_stats']`` when ``train=True``);
* ``'none'``: no normalisation (the convs then carry biases).

Convolutions followed by a normalisation have no bias (it would be cancelled), unless ``conv_bias``: the
authors' released PyTorch U-Net keeps them (and InstanceNorm's eps 1e-5, ``norm_eps``), so its weights load
one to one. Input spatial sizes that are not
multiples of ``2 ** len(widths)`` are edge-padded at the bottom/right and the logits cropped back.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from yiplearn import errors

__all__ = ['UNet', 'NORMS', 'CONV_GRADS', 'conv3x3']

NORMS = ('instance', 'group', 'batch', 'none')
CONV_GRADS = ('auto', 'xla', 'matmul')
PARTS = ('all', 'encoder', 'decoder')


def _num_groups(channels: int, max_groups: int = 8) -> int:
  return math.gcd(channels, max_groups) if channels % max_groups else max_groups


_NHWC = ('NHWC', 'HWIO', 'NHWC')


def _conv_same(x: jax.Array, k: jax.Array) -> jax.Array:
  return jax.lax.conv_general_dilated(x, k, (1, 1), 'SAME', dimension_numbers=_NHWC)


@jax.custom_vjp
def conv3x3(x: jax.Array, k: jax.Array) -> jax.Array:
  """3x3 stride-1 'SAME' convolution (NHWC x HWIO), the same map and gradients as XLA's, with the
  backward pass written as forward-style ops.

  dX is the forward convolution of the output gradient with the spatially flipped, in/out-transposed kernel;
  dK[a, b] = sum over pixels of x_pad[h + a, w + b] (x) g[h, w]: nine (C_in, pixels) x (pixels, C_out) matrix
  products. XLA:CPU runs its native weight-gradient convolution ~40x slower inside a ``lax.scan``/``while``
  body than outside one (and the input gradient ~7x slower), which made the whole-image session with its
  click loop as a rolled scan crawl; these formulations run at full speed in both places
  (benchmarks/NOTES.md). Selected by ``UNet.conv_grads='matmul'``.
  """
  return _conv_same(x, k)


def _conv3x3_fwd(x, k):
  return _conv_same(x, k), (x, k)


def _conv3x3_bwd(res, g):
  x, k = res
  dx = _conv_same(g, jnp.flip(k, (0, 1)).transpose(0, 1, 3, 2).astype(g.dtype))
  h, w = x.shape[1:3]
  xp = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
  dk = jnp.stack(
    [
      jnp.stack(
        [
          jnp.einsum(
            'nhwi,nhwo->io', xp[:, a : a + h, b : b + w], g, preferred_element_type=jnp.float32
          )
          for b in range(3)
        ]
      )
      for a in range(3)
    ]
  )
  return dx.astype(x.dtype), dk.astype(k.dtype)


conv3x3.defvjp(_conv3x3_fwd, _conv3x3_bwd)


def _flax_conv3x3(
  lhs,
  rhs,
  window_strides,
  padding,
  *,
  lhs_dilation=None,
  rhs_dilation=None,
  dimension_numbers=None,
  feature_group_count=1,
  precision=None,
):
  """``nn.Conv(conv_general_dilated=...)`` hook: :func:`conv3x3` for the U-Net's 3x3 'SAME' convolutions."""
  simple = (
    tuple(window_strides) == (1, 1)
    and padding == 'SAME'
    and tuple(rhs.shape[:2]) == (3, 3)
    and tuple(lhs_dilation or (1, 1)) == (1, 1)
    and tuple(rhs_dilation or (1, 1)) == (1, 1)
    and feature_group_count == 1
    and precision is None
    and dimension_numbers == jax.lax.conv_dimension_numbers(lhs.shape, rhs.shape, _NHWC)
  )
  if not simple:
    raise errors.invalid('conv_grads', 'matmul', "only with 3x3 stride-1 'SAME' NHWC convolutions")
  return conv3x3(lhs, rhs)


class _Block(nn.Module):
  features: int
  norm: str
  dtype: Any
  conv_grads: str = 'xla'
  conv_bias: bool = False
  norm_eps: float | None = None

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    hook = _flax_conv3x3 if self.conv_grads == 'matmul' else None
    eps = {} if self.norm_eps is None else {'epsilon': float(self.norm_eps)}
    for _ in range(2):
      x = nn.Conv(
        self.features,
        (3, 3),
        padding='SAME',
        use_bias=self.conv_bias or self.norm == 'none',
        dtype=self.dtype,
        conv_general_dilated=hook,
      )(x)
      if self.norm == 'instance':
        x = nn.InstanceNorm(use_scale=False, use_bias=False, dtype=self.dtype, **eps)(x)
      elif self.norm == 'group':
        x = nn.GroupNorm(num_groups=_num_groups(self.features), dtype=self.dtype, **eps)(x)
      elif self.norm == 'batch':
        x = nn.BatchNorm(use_running_average=not train, momentum=0.9, dtype=self.dtype, **eps)(x)
      x = nn.relu(x)
    return x


class _UpConv(nn.Module):
  """2x2 stride-2 transposed convolution as one matrix product (the same map, parameters and initialiser as
  ``nn.ConvTranspose(features, (2, 2), strides=(2, 2))``, whose kernel is applied spatially flipped).

  Every output pixel receives exactly one input pixel, so ``y[2i+a, 2j+b] = x[i, j] @ K[1-a, 1-b] + bias``:
  a dense (N H W, C) x (C, 4 F) product instead of XLA's convolution over a zero-dilated input, which on
  CPU costs several times more (benchmarks/NOTES.md).
  """

  features: int
  dtype: Any

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    kernel = self.param(
      'kernel', nn.initializers.lecun_normal(), (2, 2, x.shape[-1], self.features)
    )
    bias = self.param('bias', nn.initializers.zeros_init(), (self.features,))
    n, h, w, _ = x.shape
    y = jnp.einsum('nhwc,abcf->nhawbf', x, kernel[::-1, ::-1].astype(self.dtype))
    return y.reshape(n, 2 * h, 2 * w, self.features) + bias.astype(self.dtype)


def _max_pool_2x2(x: jax.Array) -> jax.Array:
  """2x2 stride-2 max-pool (even H, W) as a reshape and a max: its gradient is exact in float32 (JAX's
  ``reduce_window`` max gradient packs values and tangents at reduced precision) and faster on CPU. Among
  tied maxima the gradient is shared equally (ties occur in all-zero windows after ReLU, where it is zero)."""
  n, h, w, c = x.shape
  return x.reshape(n, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))


class UNet(nn.Module):
  """Click-conditioned U-Net.

  Attributes:
    num_classes: K, number of output logit channels.
    widths: encoder block widths; ``len(widths)`` is the depth (number of pooling steps).
    bottleneck: width of the bottleneck block.
    norm: one of NORMS.
    dtype: computation dtype (params stay float32; logits are returned as float32).
    conv_grads: how the 3x3 convolutions are differentiated: 'xla' (XLA's own transposed convolutions: the
      fastest outside loops), 'matmul' (:func:`conv3x3`: forward-style ops, ~20x faster than 'xla' inside a
      ``lax.scan`` on CPU, ~1.3x slower outside one) or 'auto' [default]: 'xla', except that
      ``session.make_session`` switches an 'auto' U-Net to 'matmul' on CPU when its click loop is a rolled scan.
      Values and gradients are the same up to float rounding.
    conv_bias: biases on the 3x3 convolutions before a normalisation too [False]; the released code's
      U-Net has them (True loads its weights; with InstanceNorm they cancel in the forward pass).
    norm_eps: the normalisation's epsilon; None [default] = flax's (1e-6 instance/group, 1e-5 batch),
      1e-5 = PyTorch's InstanceNorm2d, as in the released code.

  Call: ``x (N, H, W, Cin)`` float -> logits ``(N, H, W, K)`` float32. ``train`` only matters for 'batch'.
  ``apply(params, x)`` needs no mutable collections for 'instance', 'group' and 'none'. ``part``
  runs one path: 'encoder' (x -> features ``{'skips', 'bottleneck', 'size'}``, 'size' a (0, H, W)
  marker of the input size) or 'decoder' (those features -> logits); 'all' [default] is both.
  Each path reads only its own variables (the decoder: up-convolutions, up blocks, the 1x1 head).
  """

  num_classes: int
  widths: Sequence[int] = (12, 72, 144, 288)
  bottleneck: int = 576
  norm: str = 'instance'
  dtype: Any = jnp.float32
  conv_grads: str = 'auto'
  conv_bias: bool = False
  norm_eps: float | None = None

  @nn.compact
  def __call__(self, x: Any, train: bool = False, part: str = 'all') -> Any:
    if self.norm not in NORMS:
      raise errors.invalid('norm', self.norm, f'one of {NORMS}')
    if self.conv_grads not in CONV_GRADS:
      raise errors.invalid('conv_grads', self.conv_grads, f'one of {CONV_GRADS}')
    grads = self.conv_grads
    if grads == 'auto':
      grads = 'xla'
    if self.num_classes < 1 or not self.widths or min(self.widths) < 1 or self.bottleneck < 1:
      raise errors.invalid(
        'UNet(num_classes, widths, bottleneck)',
        (self.num_classes, tuple(self.widths), self.bottleneck),
        'num_classes >= 1 and positive widths and bottleneck',
      )
    if self.norm_eps is not None and not self.norm_eps > 0:
      raise errors.invalid('norm_eps', self.norm_eps, 'None or > 0')
    if part not in PARTS:
      raise errors.invalid('part', part, f'one of {PARTS}')
    depth = len(self.widths)

    def block(index, features):
      return _Block(
        features,
        self.norm,
        self.dtype,
        grads,
        self.conv_bias,
        self.norm_eps,
        name=f'_Block_{index}',
      )

    if part == 'decoder':
      feats = x
    else:
      if x.ndim != 4:
        raise errors.invalid('x.shape', tuple(x.shape), '(N, H, W, C)')
      _, h, w, _ = x.shape
      m = 2**depth
      ph, pw = (-h) % m, (-w) % m
      if ph or pw:
        x = jnp.pad(x, ((0, 0), (0, ph), (0, pw), (0, 0)), mode='edge')
      x = x.astype(self.dtype)
      skips = []
      for index, width in enumerate(self.widths):
        x = block(index, width)(x, train)
        skips.append(x)
        x = _max_pool_2x2(x)
      x = block(depth, self.bottleneck)(x, train)
      feats = {'skips': tuple(skips), 'bottleneck': x, 'size': jnp.zeros((0, h, w), jnp.float32)}
      if part == 'encoder':
        return feats
    x = feats['bottleneck']
    pairs = zip(reversed(self.widths), reversed(feats['skips']))
    for up_index, (width, skip) in enumerate(pairs):
      x = _UpConv(width, self.dtype, name=f'ConvTranspose_{up_index}')(x)
      x = jnp.concatenate([x, skip], axis=-1)
      x = block(depth + 1 + up_index, width)(x, train)
    x = nn.Conv(self.num_classes, (1, 1), dtype=self.dtype, name='Conv_0')(x)
    _, h, w = feats['size'].shape
    return x[:, :h, :w, :].astype(jnp.float32)
