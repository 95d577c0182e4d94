"""Entropy-adaptive merging of segmentation U-Nets (DESIGN 1.3) and what merging them needs.

* `SegmentationModel`: a `models.unet.UNet` split into the encoder path (down blocks and bottleneck)
  and the decoder path (up-convolutions, up blocks and the 1x1 head), with the `encode` / `head`
  interface of `models.classifier.Classifier`, so that every `OnlineMethod` (static merges,
  AdaMerging, Tent, ensembles) runs on it unchanged; `decoder_predicate` selects the decoder leaves.
* Pixel-entropy scores of a candidate's logits (B, H, W, C): `'mean'` per-pixel entropy over all
  pixels, or `'foreground'`: over the pixels that some candidate of the same batch predicts as
  foreground (background dominates the mean); optionally minus `marginal_weight` times the entropy
  of the batch's mean predicted class distribution (its foreground fraction), against collapse to
  background.
* `entropy_adaptive`: `merging.entropy_adaptive` with the decoder path as the head and
  `pixel_scorer`: per batch, encoder-path candidates (the decoder at the previous batch's
  coefficients) and then decoder-path candidates on the merged encoder's features, vmapped in
  chunks (`lax.map`); forward passes only; `lam_head` of its state holds the decoder coefficients.
* `evaluate_candidates`: entropy score and Dice of every full-model candidate (labels used only for
  this diagnostic: the best candidate by Dice against entropy's choice, the landscapes).
* `diagonal_fisher`: the Fisher of the per-image log-likelihood (pixels independent, labels sampled
  from the model), through `static.diagonal_fisher`.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from yiplearn import errors, metrics
from yiplearn.merging import entropy_adaptive as ea
from yiplearn.merging import static
from yiplearn.merging import tree as tr
from yiplearn.merging.protocol import OnlineMethod, entropy
from yiplearn.models import unet as unet_lib

PyTree = Any
SCORINGS = ('mean', 'foreground')


def _check(field: str, value: Any, ok: bool, expected: str) -> None:
  if not ok:
    raise errors.invalid(field, value, expected)


@dataclasses.dataclass(frozen=True)
class SegmentationModel:
  """A U-Net with the Classifier interface: `encode` -> features of the encoder path (skips and
  bottleneck), `head` -> logits (B, H, W, C) from them (the decoder path). `head(v, encode(v, x))`
  equals `unet.apply(v, x)`; `encode` reads only encoder leaves, `head` only decoder leaves."""

  unet: unet_lib.UNet

  @property
  def depth(self) -> int:
    return len(self.unet.widths)

  @property
  def num_classes(self) -> int:
    return self.unet.num_classes

  def init(self, key: jax.Array, x: jax.Array) -> PyTree:
    return self.unet.init(key, x)

  def apply(self, variables: PyTree, x: jax.Array, train: bool = False) -> jax.Array:
    return self.head(variables, self.encode(variables, x, train=train), train=train)

  def _part(self, variables: PyTree, x: Any, train: bool, part: str) -> Any:
    if train and 'batch_stats' in variables:
      return self.unet.apply(variables, x, True, part=part, mutable=['batch_stats'])[0]
    return self.unet.apply(variables, x, train, part=part)

  def encode(self, variables: PyTree, x: jax.Array, train: bool = False) -> PyTree:
    """{'skips': per-level features, 'bottleneck': ..., 'size': (0, H, W) marker of the input size}."""
    return self._part(variables, x, train, 'encoder')

  def encode_with_updates(self, variables: PyTree, x: jax.Array) -> tuple[PyTree, PyTree]:
    """Training-mode features and the variables (BatchNorm statistics updated by the full model)."""
    if 'batch_stats' not in variables:
      return self.encode(variables, x, train=True), variables
    feats, enc = self.unet.apply(variables, x, True, part='encoder', mutable=['batch_stats'])
    _, dec = self.unet.apply(variables, feats, True, part='decoder', mutable=['batch_stats'])
    # Each pass returns the whole collection, updated on its own path only.
    names = set(decoder_names(self.depth))
    stats = {k: (dec if k in names else enc)['batch_stats'][k] for k in variables['batch_stats']}
    return feats, dict(variables, batch_stats=stats)

  def head(self, variables: PyTree, feats: PyTree, train: bool = False) -> jax.Array:
    """Logits (B, H, W, C) float32 of the decoder path on `encode`'s features."""
    return self._part(variables, feats, train, 'decoder')


def decoder_names(depth: int) -> tuple[str, ...]:
  """Top-level module names of a U-Net's decoder path (up-convs, up blocks, the 1x1 head)."""
  blocks = tuple(f'_Block_{i}' for i in range(depth + 1, 2 * depth + 1))
  return blocks + tuple(f'ConvTranspose_{j}' for j in range(depth)) + ('Conv_0',)


def decoder_predicate(depth: int) -> tr.PathPredicate:
  """Leaves of the decoder path: the module directly under the collection ('params', ...) is one of
  `decoder_names(depth)` (nested names such as a block's own 'Conv_0' do not count)."""
  names = set(decoder_names(depth))
  return lambda path: len(path) > 1 and tr.path_names(path)[1] in names


def pixel_stats(logits: jax.Array) -> dict[str, jax.Array]:
  """Per-pixel entropy (B, H, W), foreground prediction (B, H, W) bool, mean class distribution (C,)."""
  p = jax.nn.softmax(logits.astype(jnp.float32), -1)
  return {
    'entropy': entropy(logits),
    'foreground': jnp.argmax(logits, -1) > 0,
    'p_bar': jnp.mean(p.reshape(-1, p.shape[-1]), 0),
  }


def _marginal_entropy(p_bar: jax.Array) -> jax.Array:
  return -jnp.sum(p_bar * jnp.log(jnp.clip(p_bar, 1e-12)), -1)


def scores_from_stats(
  stats: dict[str, jax.Array], scoring: str = 'mean', marginal_weight: float = 0.0
) -> jax.Array:
  """Scores (J,) of J candidates' `pixel_stats` (leaves with a leading J axis); see the module doc.

  'foreground': the pixels where any candidate predicts foreground (all pixels where none does)."""
  ent = stats['entropy']
  j = ent.shape[0]
  if scoring == 'foreground':
    mask = jnp.any(stats['foreground'], axis=0).astype(jnp.float32)  # (B, H, W)
    total = jnp.sum(mask)
    mask = jnp.where(total > 0, mask, jnp.ones_like(mask))
    score = jnp.sum(ent * mask, axis=(1, 2, 3)) / jnp.sum(mask)
  else:
    score = jnp.mean(ent.reshape(j, -1), axis=1)
  if marginal_weight:
    score = score - marginal_weight * _marginal_entropy(stats['p_bar'])
  return score


def pixel_entropy_score(
  logits: jax.Array, scoring: str = 'mean', marginal_weight: float = 0.0
) -> jax.Array:
  """The score of one model's logits (B, H, W, C) (for 'foreground': its own foreground pixels)."""
  stats = jax.tree.map(lambda a: a[None], pixel_stats(logits))
  return scores_from_stats(stats, scoring, marginal_weight)[0]


def dice(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """Per-image Dice (B,) of argmax(logits) against labels (B, H, W), mean over foreground classes."""
  return jnp.mean(
    metrics.dice_per_class(jnp.argmax(logits, -1), labels, logits.shape[-1])[..., 1:], -1
  )


def pixel_scorer(scoring: str = 'mean', marginal_weight: float = 0.0) -> ea.Scorer:
  """The `merging.entropy_adaptive.Scorer` of pixel maps: `pixel_stats`, then `scores_from_stats`."""
  _check('scoring', scoring, scoring in SCORINGS, f'one of {SCORINGS}')
  return ea.Scorer(pixel_stats, lambda stats: scores_from_stats(stats, scoring, marginal_weight))


def entropy_adaptive(
  model: SegmentationModel,
  num_experts: int,
  *,
  scoring: str = 'mean',
  marginal_weight: float = 0.0,
  score_decoder: str = 'previous',
  decouple: bool = True,
  decoder: tr.PathPredicate | None = None,
  **kwargs,
) -> OnlineMethod:
  """Entropy-adaptive merging of segmentation experts, decoupled encoder / decoder paths:
  `merging.entropy_adaptive` with the decoder path as its head and pixel-entropy scores.

  Args:
    scoring: 'mean' or 'foreground' (see `scores_from_stats`); marginal_weight: gamma.
    score_decoder: decoder used while scoring encoder candidates: 'previous' (the previous batch's
      decoder coefficients, uniform at the start) or 'same' (the candidate itself).
    decouple: False = one coefficient vector for the whole model (full-model candidates).
    decoder: predicate of the decoder-path leaves (default `decoder_predicate(model.depth)`).
    **kwargs: the other arguments of `merging.entropy_adaptive.entropy_adaptive` (candidates,
      temperature, scale, refine_radius, ema, bn_mode, calibration, chunk_size, mesh, ...).
  """
  return ea.entropy_adaptive(
    model,
    num_experts,
    scorer=pixel_scorer(scoring, marginal_weight),
    score_head=score_decoder,
    decouple_head=decouple,
    head_predicate=decoder if decoder is not None else decoder_predicate(model.depth),
    **kwargs,
  )


def evaluate_candidates(
  model: SegmentationModel,
  base: PyTree,
  tau: PyTree,
  x: jax.Array,
  cands: jax.Array,
  labels: jax.Array | None = None,
  *,
  scoring: str = 'mean',
  marginal_weight: float = 0.0,
  chunk_size: int = 8,
) -> dict[str, jax.Array]:
  """Full-model candidates theta_0 + sum_k lambda_jk tau_k (J, K): {'score': (J,), 'dice': (J,)}
  (Dice, the batch mean of per-image Dice, only when `labels` (B, H, W) are given)."""

  def one(lam):
    logits = model.apply(tr.merge(base, tau, lam), x)
    out = pixel_stats(logits)
    if labels is not None:
      out['dice'] = jnp.mean(dice(logits, labels))
    return out

  stats = jax.lax.map(one, cands, batch_size=min(chunk_size, cands.shape[0]))
  out = {'score': scores_from_stats(stats, scoring, marginal_weight)}
  if labels is not None:
    out['dice'] = stats['dice']
  return out


def diagonal_fisher(
  model: SegmentationModel,
  variables: PyTree,
  batches: list[np.ndarray],
  key: jax.Array,
) -> PyTree:
  """Diagonal Fisher of `variables['params']`: E_x E_y [(d/dtheta sum_pixels log p(y_pix | x))^2],
  y sampled per pixel from the model. Through `static.diagonal_fisher`: each example carries its
  sampled mask as an extra channel and its 'log-probabilities' are the one per-image log-likelihood."""
  c = batches[0].shape[-1]

  def log_probs_fn(params, xm):
    logits = model.apply(dict(variables, params=params), xm[..., :c])
    logp = jax.nn.log_softmax(logits, -1)
    y = xm[..., c].astype(jnp.int32)
    ll = jnp.take_along_axis(logp, y[..., None], -1)[..., 0]
    return jnp.sum(ll, axis=(1, 2))[:, None]

  apply = jax.jit(lambda v, x: model.apply(v, x))
  with_masks, labels = [], []
  for i, x in enumerate(batches):
    logits = apply(variables, jnp.asarray(x))
    y = jax.random.categorical(jax.random.fold_in(key, i), logits)
    with_masks.append(np.concatenate([x, np.asarray(y, np.float32)[..., None]], -1))
    labels.append(np.zeros(len(x), np.int32))
  return static.diagonal_fisher(log_probs_fn, variables['params'], with_masks, labels=labels)
