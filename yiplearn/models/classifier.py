"""Encoder/head classifier wrapper shared by the ResNet and ViT backbones.

A classifier is an encoder module (image -> feature vector) and a linear head (features -> logits),
kept as two separate flax modules so that their parameters live under two top-level keys that merging
code can address by path::

    variables = {'params': {'encoder': ..., 'head': ...},
                 'batch_stats': {'encoder': ...}}        # only for encoders with BatchNorm

`encode(variables, x, train=False)` reads only the `encoder` entries and `head(variables, feats)` only
the `head` entries, so head candidates can be scored on cached features. With `train=True` BatchNorm
layers normalise with the statistics of the batch itself (the running statistics are not updated;
use `encode_with_updates` for training).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

Variables = dict[str, Any]


@dataclasses.dataclass(frozen=True)
class Classifier:
  """An (encoder, head) pair of flax modules with pure helper functions.

  Attributes:
    encoder: flax module mapping images (B, H, W, C) float32 to features (B, D); it takes a
      `train: bool` keyword argument.
    num_classes: number of output logits of the linear head.
  """

  encoder: nn.Module
  num_classes: int

  @property
  def head_module(self) -> nn.Module:
    return nn.Dense(self.num_classes)

  def init(self, key: jax.Array, x: jax.Array) -> Variables:
    """Initialises all variables from example images `x` (B, H, W, C)."""
    k_enc, k_head = jax.random.split(key)
    enc_vars = self.encoder.init(k_enc, x, train=False)
    feats = self.encoder.apply(enc_vars, x, train=False)
    head_vars = self.head_module.init(k_head, feats)
    out: Variables = {'params': {'encoder': enc_vars['params'], 'head': head_vars['params']}}
    if 'batch_stats' in enc_vars:
      out['batch_stats'] = {'encoder': enc_vars['batch_stats']}
    return out

  @staticmethod
  def _encoder_vars(variables: Variables) -> Variables:
    out = {'params': variables['params']['encoder']}
    if 'batch_stats' in variables:
      out['batch_stats'] = variables['batch_stats']['encoder']
    return out

  def encode(self, variables: Variables, x: jax.Array, train: bool = False) -> jax.Array:
    """Features (B, D) float32 of images `x` (B, H, W, C); `train` = batch statistics in BN."""
    enc_vars = self._encoder_vars(variables)
    if train and 'batch_stats' in enc_vars:
      feats, _ = self.encoder.apply(enc_vars, x, train=True, mutable=['batch_stats'])
      return feats
    return self.encoder.apply(enc_vars, x, train=train)

  def encode_with_updates(
    self, variables: Variables, x: jax.Array, momentum_update: bool = True
  ) -> tuple[jax.Array, Variables]:
    """Training-mode features (B, D) and the variables with updated BatchNorm running statistics."""
    enc_vars = self._encoder_vars(variables)
    if 'batch_stats' not in enc_vars:
      return self.encoder.apply(enc_vars, x, train=True), variables
    feats, upd = self.encoder.apply(enc_vars, x, train=True, mutable=['batch_stats'])
    new_vars = dict(variables)
    new_vars['batch_stats'] = {'encoder': upd['batch_stats']}
    return feats, new_vars

  def head(self, variables: Variables, feats: jax.Array, train: bool = False) -> jax.Array:
    """Logits (B, num_classes) float32 from features (B, D) (`train`: the Dense head has no
    statistics; accepted for heads that do, such as a U-Net's decoder path)."""
    return self.head_module.apply({'params': variables['params']['head']}, feats)

  def apply(self, variables: Variables, x: jax.Array, train: bool = False) -> jax.Array:
    """Logits (B, num_classes) of images `x` (B, H, W, C)."""
    return self.head(variables, self.encode(variables, x, train=train))


def preprocess(images: jax.Array) -> jax.Array:
  """uint8 (B, H, W, C) in [0, 255] -> float32 in [-1, 1]; float inputs are returned as float32."""
  images = jnp.asarray(images)
  if images.dtype == jnp.uint8:
    return images.astype(jnp.float32) / 127.5 - 1.0
  return images.astype(jnp.float32)
