"""ResNet encoder with BatchNorm (basic blocks), sized by configuration.

`resnet_classifier(num_classes, stage_sizes=(1, 1), widths=(4, 8))` gives a `Classifier` whose
variables are `{'params': {'encoder', 'head'}, 'batch_stats': {'encoder'}}`; see
`yiplearn.models.classifier`. Images (B, H, W, C) float32 -> features (B, widths[-1]) -> logits.
ResNet-18 is `stage_sizes=(2, 2, 2, 2), widths=(64, 128, 256, 512), stem='imagenet'`.
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from yiplearn.models.classifier import Classifier


class BasicBlock(nn.Module):
  """Two 3x3 conv + BN layers with an identity or 1x1-projection shortcut."""

  width: int
  stride: int = 1
  bn_momentum: float = 0.9

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    norm = lambda name: nn.BatchNorm(
      use_running_average=not train, momentum=self.bn_momentum, name=name
    )
    y = nn.Conv(self.width, (3, 3), (self.stride, self.stride), use_bias=False, name='conv1')(x)
    y = nn.relu(norm('BatchNorm_1')(y))
    y = nn.Conv(self.width, (3, 3), use_bias=False, name='conv2')(y)
    y = norm('BatchNorm_2')(y)
    if x.shape[-1] != self.width or self.stride != 1:
      x = nn.Conv(self.width, (1, 1), (self.stride, self.stride), use_bias=False, name='proj')(x)
      x = norm('BatchNorm_proj')(x)
    return nn.relu(x + y)


class ResNetEncoder(nn.Module):
  """ResNet feature extractor: stem, stages of basic blocks, global average pool.

  Attributes:
    stage_sizes: number of blocks per stage; stage i > 0 downsamples by 2.
    widths: channels per stage (same length as `stage_sizes`).
    stem: 'small' (3x3 conv, for small images) or 'imagenet' (7x7/2 conv + 3x3/2 max-pool).
  """

  stage_sizes: Sequence[int] = (1, 1)
  widths: Sequence[int] = (4, 8)
  stem: str = 'small'
  bn_momentum: float = 0.9

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    if len(self.stage_sizes) != len(self.widths):
      raise ValueError(
        f'stage_sizes={tuple(self.stage_sizes)} and widths={tuple(self.widths)} '
        'must have the same length'
      )
    if self.stem == 'imagenet':
      x = nn.Conv(self.widths[0], (7, 7), (2, 2), use_bias=False, name='stem')(x)
    elif self.stem == 'small':
      x = nn.Conv(self.widths[0], (3, 3), use_bias=False, name='stem')(x)
    else:
      raise ValueError(f"stem={self.stem!r}; expected 'small' or 'imagenet'")
    x = nn.BatchNorm(
      use_running_average=not train, momentum=self.bn_momentum, name='BatchNorm_stem'
    )(x)
    x = nn.relu(x)
    if self.stem == 'imagenet':
      x = nn.max_pool(x, (3, 3), (2, 2), padding='SAME')
    for i, (n, w) in enumerate(zip(self.stage_sizes, self.widths)):
      for j in range(n):
        stride = 2 if (i > 0 and j == 0) else 1
        x = BasicBlock(w, stride, self.bn_momentum, name=f'stage{i}_block{j}')(x, train=train)
    return jnp.mean(x, axis=(1, 2))


def resnet_classifier(
  num_classes: int,
  stage_sizes: Sequence[int] = (1, 1),
  widths: Sequence[int] = (4, 8),
  stem: str = 'small',
  bn_momentum: float = 0.9,
) -> Classifier:
  """A ResNet `Classifier`; see the module docstring."""
  if num_classes < 1:
    raise ValueError(f'num_classes={num_classes}; expected >= 1')
  return Classifier(
    ResNetEncoder(tuple(stage_sizes), tuple(widths), stem, bn_momentum), num_classes
  )
