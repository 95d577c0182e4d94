"""Segmentation losses for click-conditioned models (DESIGN.md section 1.1).

All functions take per-image logits ``(H, W, K)`` float and integer class maps ``(H, W)``; they also accept
any number of leading batch dimensions ``(..., H, W, K)`` / ``(..., H, W)`` (per-image values are averaged
over the leading dimensions). Every function is pure, jittable and differentiable in ``logits``.

Numerics: probabilities come from ``log_softmax`` (no ``log(0)``), powers of ``1 - p`` are taken on a
clamped base, and divisions use ``max(denominator, 1)``-style guards, so finite logits always give a
finite loss and finite gradients. (Non-finite *inputs* propagate; the update rules skip such steps.)
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from yiplearn import errors
from yiplearn.clicks import Clicks

__all__ = [
  'dice_loss',
  'focal_loss',
  'dice_focal',
  'cross_entropy',
  'ccg_weights',
  'ccg_loss',
  'entropy_loss',
  'clicked_pixel_ce',
  'soft_cross_entropy',
]

_CCG_VARIANTS = ('paper', 'released')


def _check_ranks(logits: jax.Array, target: jax.Array) -> None:
  if logits.ndim < 3:
    raise errors.invalid('logits.shape', tuple(logits.shape), '(..., H, W, K)')
  if target.shape != logits.shape[:-1]:
    raise errors.invalid(
      'target.shape', tuple(target.shape), f'{tuple(logits.shape[:-1])} (logits.shape without K)'
    )


def _log_probs(logits: jax.Array) -> jax.Array:
  return jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)


def _target_log_prob(logp: jax.Array, target: jax.Array) -> jax.Array:
  """log p of the target class per pixel: (..., H, W)."""
  idx = jnp.clip(target.astype(jnp.int32), 0, logp.shape[-1] - 1)
  return jnp.take_along_axis(logp, idx[..., None], axis=-1)[..., 0]


def cross_entropy(logits: jax.Array, target: jax.Array) -> jax.Array:
  """Per-pixel cross-entropy ``-log softmax(logits)[target]``: (..., H, W) float32."""
  _check_ranks(logits, target)
  return -_target_log_prob(_log_probs(logits), target)


def dice_loss(
  logits: jax.Array,
  target: jax.Array,
  num_classes: int,
  *,
  exclude_background: bool = True,
  eps: float = 1e-5,
) -> jax.Array:
  """Soft Dice loss on softmax probabilities against the one-hot target.

  Per image and class k: ``1 - (2 sum p_k g_k + eps) / (sum p_k + sum g_k + eps)`` over the H x W pixels;
  the loss is the mean over classes (classes 1..K-1 when ``exclude_background``) and leading dimensions.

  Args:
    logits: (..., H, W, K) float logits, K == num_classes.
    target: (..., H, W) int class indices in [0, K).
    num_classes: K (static).
  Returns: scalar float32.
  """
  _check_ranks(logits, target)
  if logits.shape[-1] != num_classes:
    raise errors.invalid('num_classes', num_classes, f"the logits' last dim {logits.shape[-1]}")
  if exclude_background and num_classes < 2:
    raise errors.invalid('num_classes', num_classes, '>= 2 when exclude_background=True')
  p = jnp.exp(_log_probs(logits))
  g = jax.nn.one_hot(target, num_classes, dtype=jnp.float32)
  inter = jnp.sum(p * g, axis=(-3, -2))
  denom = jnp.sum(p, axis=(-3, -2)) + jnp.sum(g, axis=(-3, -2))
  per_class = 1.0 - (2.0 * inter + eps) / (denom + eps)  # (..., K)
  if exclude_background:
    per_class = per_class[..., 1:]
  return jnp.mean(per_class)


def focal_loss(logits: jax.Array, target: jax.Array, *, gamma: float = 2.0) -> jax.Array:
  """Focal loss ``-(1 - p_t)^gamma log p_t`` averaged over all pixels (and leading dims); gamma=0 is CE.

  Args: logits (..., H, W, K) float; target (..., H, W) int. Returns: scalar float32.
  """
  _check_ranks(logits, target)
  logpt = _target_log_prob(_log_probs(logits), target)
  if gamma == 0:
    return -jnp.mean(logpt)
  q = jnp.maximum(-jnp.expm1(logpt), 0.0)  # 1 - p_t, accurate near p_t = 1
  # Differentiable power at q == 0 for any gamma > 0 (d/dq q^gamma is inf there for gamma < 1).
  safe_q = jnp.where(q > 0, q, 1.0)
  weight = jnp.where(q > 0, safe_q**gamma, 0.0)
  return -jnp.mean(weight * logpt)


def dice_focal(
  logits: jax.Array,
  target: jax.Array,
  num_classes: int,
  *,
  alpha: float = 0.7,
  gamma: float = 2.0,
  exclude_background: bool = True,
) -> jax.Array:
  """``(1 - alpha) * dice_loss + alpha * focal_loss`` [alpha 0.7, gamma 2]. Scalar float32."""
  return (1.0 - alpha) * dice_loss(
    logits, target, num_classes, exclude_background=exclude_background
  ) + alpha * focal_loss(logits, target, gamma=gamma)


def _default_window(variant: str, sigma: float) -> float:
  return 3.0 * sigma if variant == 'paper' else 10.0


def ccg_weights(
  clicks: Clicks,
  target: jax.Array,
  num_classes: int,
  *,
  sigma: float = 3.0,
  window: float | None = None,
) -> jax.Array:
  """Summed click-centred Gaussian weights ``sum_c G_c(i, j) I_c(i, j)``: (H, W) float32.

  ``G_c`` is an unnormalised Gaussian (peak 1) around click c, zero outside the square window
  ``|i - i'| <= window and |j - j'| <= window``; ``I_c = [target == label_c]``; invalid clicks contribute 0.
  Computed per class via a separable einsum, O(T (H + W) + H W K) instead of O(T H W).

  Args:
    clicks: Clicks with coords (T, 2) int32, labels (T,), valid (T,) (no batch dim).
    target: (H, W) int class map (the (pseudo-)ground truth P).
    num_classes: K, labels >= K never match.
  """
  if window is None:
    window = 3.0 * sigma
  h, w = target.shape
  coords = clicks.coords.astype(jnp.float32)
  rows = jnp.arange(h, dtype=jnp.float32)[None, :] - coords[:, 0:1]  # (T, H)
  cols = jnp.arange(w, dtype=jnp.float32)[None, :] - coords[:, 1:2]  # (T, W)
  inv = 1.0 / (2.0 * sigma * sigma)
  gr = jnp.where(jnp.abs(rows) <= window, jnp.exp(-rows * rows * inv), 0.0)
  gc = jnp.where(jnp.abs(cols) <= window, jnp.exp(-cols * cols * inv), 0.0)
  gr = gr * clicks.valid.astype(jnp.float32)[:, None]
  onehot = jax.nn.one_hot(clicks.labels, num_classes, dtype=jnp.float32)  # (T, K)
  per_class = jnp.einsum('ti,tj,tk->ijk', gr, gc, onehot)  # (H, W, K)
  idx = jnp.clip(target.astype(jnp.int32), 0, num_classes - 1)
  return jnp.take_along_axis(per_class, idx[..., None], axis=-1)[..., 0]


def ccg_loss(
  logits: jax.Array,
  target: jax.Array,
  clicks: Clicks,
  *,
  sigma: float = 3.0,
  variant: str = 'paper',
  window: float | None = None,
) -> jax.Array:
  """Click-Centred Gaussian loss (DESIGN.md 1.1), per image.

  ``paper``:    sum_c sum_ij G_c I_c (-log p_ij[P_ij]) / (|C| H W), window 3 sigma.
  ``released``: sum_c sum_ij G_c I_c (log(e + K - 1) - p_ij[P_ij]) / (H W), window +-10 px: the
  authors' code calls ``CrossEntropyLoss(one_hot(P), softmax(P_hat))`` (arguments swapped), i.e.
  -sum_k p_k log_softmax(one_hot(P))_k, a linear penalty (the gradient of 1 - p) whose logged
  value carries the constant; with sigma = 10 // 3 = 3 its window is 21 x 21.
  |C| = number of valid clicks (the loss is 0 without valid clicks).

  Args:
    logits: (H, W, K) float logits P_hat.
    target: (H, W) int (pseudo-)ground truth P.
    clicks: Clicks pytree, (T,) clicks, no batch dim (vmap for batches).
    sigma: Gaussian std in pixels [3]. variant: 'paper' | 'released' (static).
    window: half-width of the square window in pixels; None -> the variant's default.
  Returns: scalar float32.
  """
  if variant not in _CCG_VARIANTS:
    raise errors.invalid('variant', variant, f'one of {_CCG_VARIANTS}')
  if logits.ndim != 3:
    raise errors.invalid('logits.shape', tuple(logits.shape), '(H, W, K) (vmap for batches)')
  _check_ranks(logits, target)
  if window is None:
    window = _default_window(variant, sigma)
  h, w, k = logits.shape
  weights = ccg_weights(clicks, target, k, sigma=sigma, window=window)
  logpt = _target_log_prob(_log_probs(logits), target)
  if variant == 'paper':
    n = jnp.maximum(jnp.sum(clicks.valid.astype(jnp.float32)), 1.0)
    return jnp.sum(weights * -logpt) / (n * h * w)
  const = jnp.log(jnp.e + (k - 1)).astype(jnp.float32)
  return jnp.sum(weights * (const - jnp.exp(logpt))) / (h * w)


def entropy_loss(logits: jax.Array) -> jax.Array:
  """Mean per-pixel Shannon entropy (nats) of softmax(logits); logits (..., K). Scalar float32."""
  logp = _log_probs(logits)
  return -jnp.mean(jnp.sum(jnp.exp(logp) * logp, axis=-1))


def clicked_pixel_ce(logits: jax.Array, clicks: Clicks) -> jax.Array:
  """Cross-entropy on the clicked pixels only (IA+SA's sparse-annotation loss), mean over valid clicks.

  Args: logits (H, W, K) float; clicks (T,) with labels the clicked classes. Returns: scalar float32
  (0 when no click is valid). Click coordinates are clipped into the image.
  """
  if logits.ndim != 3:
    raise errors.invalid('logits.shape', tuple(logits.shape), '(H, W, K) (vmap for batches)')
  h, w, _ = logits.shape
  logp = _log_probs(logits)
  r = jnp.clip(clicks.coords[:, 0], 0, h - 1)
  c = jnp.clip(clicks.coords[:, 1], 0, w - 1)
  lab = jnp.clip(clicks.labels.astype(jnp.int32), 0, logits.shape[-1] - 1)
  lp = logp[r, c, lab]  # (T,)
  v = clicks.valid.astype(jnp.float32)
  return -jnp.sum(v * lp) / jnp.maximum(jnp.sum(v), 1.0)


def soft_cross_entropy(logits: jax.Array, ref_logits: jax.Array) -> jax.Array:
  """Mean per-pixel ``-sum_k softmax(ref)_k log softmax(logits)_k`` (CE to a reference model's soft
  prediction; equals KL(ref || model) up to the constant entropy of ref). (..., K) inputs -> scalar."""
  ref = jax.lax.stop_gradient(jax.nn.softmax(ref_logits.astype(jnp.float32), axis=-1))
  return -jnp.mean(jnp.sum(ref * _log_probs(logits), axis=-1))
