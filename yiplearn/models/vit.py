"""Small Vision Transformer encoder (patch embedding, pre-LN blocks, CLS or mean pooling).

`vit_classifier(num_classes, patch_size=4, dim=32, depth=2, num_heads=2)` gives a `Classifier`
with variables `{'params': {'encoder', 'head'}}` (no batch statistics); see
`yiplearn.models.classifier`. Images (B, H, W, C) float32 with H, W divisible by `patch_size`
-> features (B, dim) -> logits.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from yiplearn.models.classifier import Classifier


class EncoderBlock(nn.Module):
  """Pre-LN transformer block: x + MHA(LN(x)); x + MLP(LN(x))."""

  num_heads: int
  mlp_ratio: int = 2

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    dim = x.shape[-1]
    y = nn.LayerNorm(name='LayerNorm_attn')(x)
    y = nn.MultiHeadDotProductAttention(num_heads=self.num_heads, name='attn')(y, y)
    x = x + y
    y = nn.LayerNorm(name='LayerNorm_mlp')(x)
    y = nn.Dense(self.mlp_ratio * dim, name='mlp_in')(y)
    y = nn.Dense(dim, name='mlp_out')(nn.gelu(y))
    return x + y


class ViTEncoder(nn.Module):
  """ViT feature extractor.

  Attributes:
    patch_size: side of the square, non-overlapping patches.
    dim: token width; depth: number of blocks; num_heads: attention heads (divides dim).
    pool: 'cls' (a learned class token) or 'mean' (mean over patch tokens).
  """

  patch_size: int = 4
  dim: int = 32
  depth: int = 2
  num_heads: int = 2
  mlp_ratio: int = 2
  pool: str = 'cls'

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    del train  # no dropout / batch statistics
    if self.pool not in ('cls', 'mean'):
      raise ValueError(f"pool={self.pool!r}; expected 'cls' or 'mean'")
    h, w = x.shape[1:3]
    if h % self.patch_size or w % self.patch_size:
      raise ValueError(f'image size {(h, w)} is not divisible by patch_size={self.patch_size}')
    p = self.patch_size
    x = nn.Conv(self.dim, (p, p), (p, p), padding='VALID', name='patch_embed')(x)
    b = x.shape[0]
    x = x.reshape(b, -1, self.dim)
    if self.pool == 'cls':
      cls = self.param('cls', nn.initializers.zeros_init(), (1, 1, self.dim))
      x = jnp.concatenate([jnp.broadcast_to(cls, (b, 1, self.dim)), x], axis=1)
    pos = self.param('pos_embed', nn.initializers.normal(0.02), (1, x.shape[1], self.dim))
    x = x + pos
    for i in range(self.depth):
      x = EncoderBlock(self.num_heads, self.mlp_ratio, name=f'block{i}')(x)
    x = nn.LayerNorm(name='LayerNorm_final')(x)
    return x[:, 0] if self.pool == 'cls' else jnp.mean(x, axis=1)


def vit_classifier(
  num_classes: int,
  patch_size: int = 4,
  dim: int = 32,
  depth: int = 2,
  num_heads: int = 2,
  mlp_ratio: int = 2,
  pool: str = 'cls',
) -> Classifier:
  """A ViT `Classifier`; see the module docstring."""
  if num_classes < 1:
    raise ValueError(f'num_classes={num_classes}; expected >= 1')
  if dim % num_heads:
    raise ValueError(f'dim={dim} must be divisible by num_heads={num_heads}')
  return Classifier(ViTEncoder(patch_size, dim, depth, num_heads, mlp_ratio, pool), num_classes)
