"""Output ensembles of the K experts (K forward passes per batch).

`output_ensemble(model, weighting='mean')`: p = (1/K) sum_k p_k.
`weighting='entropy'`: p = sum_k w_k p_k with w = softmax(-H_k / T), H_k the mean prediction
entropy of expert k on the batch (T = 0: the lowest-entropy expert).
Returned logits are log p (B, C). An `OnlineMethod` (see `yiplearn.merging.protocol`).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from yiplearn.merging import bn
from yiplearn.merging import tree as tr
from yiplearn.merging.protocol import (
  BN_MODES,
  OnlineMethod,
  candidate_weights,
  check,
  copy_tree,
  entropy,
)

PyTree = Any


class EnsembleState(NamedTuple):
  experts: PyTree  # stacked (K, ...)
  step: jax.Array


def expert_logits(model, experts: PyTree, x: jax.Array, bn_mode: str = 'merge') -> jax.Array:
  """Logits (K, B, C) of every stacked expert on x (vmapped over the expert axis)."""
  train = bn_mode == 'batch'
  fwd = lambda v: model.head(v, model.encode(v, x, train=train), train=train)
  return jax.vmap(fwd)(experts)


def output_ensemble(
  model,
  *,
  weighting: str = 'mean',
  temperature: float = 0.05,
  bn_mode: str = 'merge',
  calibration: jax.Array | None = None,
) -> OnlineMethod:
  """BatchNorm statistics (`merging.bn`): 'merge' = each expert its own, 'recompute' = each expert's
  re-estimated once on `calibration` source images, 'batch' = the test batch's."""
  check('weighting', weighting, weighting in ('mean', 'entropy'), "'mean' or 'entropy'")
  check('temperature', temperature, temperature >= 0, '>= 0')
  bn.check_mode(bn_mode, calibration, BN_MODES)

  def init(experts, base):
    del base
    tr.num_experts(experts)
    if bn_mode == 'recompute':
      calib = jnp.asarray(calibration, jnp.float32)
      experts = jax.vmap(lambda v: bn.recompute(model, v, calib))(experts)
    return EnsembleState(copy_tree(experts), jnp.zeros((), jnp.int32))

  def update(state: EnsembleState, x: jax.Array):
    logits_k = expert_logits(model, state.experts, x, bn_mode)
    probs = jax.nn.softmax(logits_k.astype(jnp.float32), -1)
    k = logits_k.shape[0]
    h = jnp.mean(entropy(logits_k).reshape(k, -1), axis=1)  # (K,); segmentation: over pixels too
    w = jnp.full((k,), 1.0 / k) if weighting == 'mean' else candidate_weights(h, temperature)
    p = jnp.tensordot(w, probs, axes=1)  # (B, C) or (B, H, W, C)
    logits = jnp.log(jnp.clip(p, 1e-30))
    return (
      EnsembleState(state.experts, state.step + 1),
      logits,
      {'weights': w, 'expert_entropies': h, 'entropy': jnp.mean(entropy(logits))},
    )

  return OnlineMethod(init, update)
