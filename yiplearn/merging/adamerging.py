"""AdaMerging (Yang et al. 2024): merge coefficients learnt online by entropy minimisation.

theta(lambda) = theta_0 + sum_k lambda_k tau_k with lambda (K,) task-wise or (L, K) layer-wise
(one row per leaf of the variables pytree). Per batch: `steps` optimiser steps (Adam) on the mean
prediction entropy of the merged model w.r.t. lambda (clipped to [clip_min, clip_max]), then
predict the batch with the updated coefficients. Coefficients persist across batches.

BatchNorm statistics (`yiplearn.merging.bn`): 'merge' (default) merges the experts' running statistics
with the coefficients clipped at 0 and normalised to sum 1 (the parameters keep the raw coefficients,
whose sum can reach K * clip_max): merged variances are convex combinations of the experts' and stay
positive; 'recompute' re-estimates them for the current merge on `calibration` source images before
each forward pass (no gradient through the statistics); 'batch' uses the test batch's own.
An `OnlineMethod` (see `yiplearn.merging.protocol`); each step goes through the one guarded step
(`yiplearn.optim.guarded_apply`): a non-finite entropy or gradient skips it and is counted.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from yiplearn import optim
from yiplearn.merging import bn
from yiplearn.merging import tree as tr
from yiplearn.merging.protocol import (
  BN_MODES,
  OnlineMethod,
  check,
  check_num_experts,
  copy_tree,
  entropy,
  entropy_score,
)

PyTree = Any


class AdaMergingState(NamedTuple):
  """lam: (K,) or (L, K) float32 coefficients; opt_state: optax state of lam; skipped: int32 number of
  optimiser steps skipped because the entropy or its gradient was not finite."""

  base: PyTree
  tau: PyTree
  lam: jax.Array
  opt_state: Any
  step: jax.Array
  skipped: Any = 0


def adamerging(
  model,
  num_experts: int,
  *,
  layerwise: bool = False,
  init_value: float | None = None,
  learning_rate: float = 1e-2,
  steps: int = 1,
  clip_min: float = 0.0,
  clip_max: float = 1.0,
  marginal_weight: float = 0.0,
  bn_mode: str = 'merge',
  calibration: jax.Array | None = None,
) -> OnlineMethod:
  """AdaMerging as an (init, update) pair. `init_value` defaults to 1/K (the uniform mean)."""
  check('num_experts', num_experts, num_experts >= 1, '>= 1')
  check('steps', steps, steps >= 1, '>= 1')
  check('learning_rate', learning_rate, learning_rate > 0, '> 0')
  bn.check_mode(bn_mode, calibration, BN_MODES)
  check('clip_max', clip_max, clip_max > clip_min, f'> clip_min={clip_min}')
  opt = optax.adam(learning_rate)
  value = 1.0 / num_experts if init_value is None else init_value
  bn_batch = bn_mode == 'batch'
  prepare = bn.prepare_fn(model, bn_mode, calibration)

  def init(experts, base):
    check_num_experts(experts, num_experts)
    shape = (tr.num_leaves(base), num_experts) if layerwise else (num_experts,)
    lam = jnp.full(shape, value, jnp.float32)
    return AdaMergingState(
      copy_tree(base),
      tr.task_vectors(experts, base),
      lam,
      opt.init(lam),
      jnp.zeros((), jnp.int32),
      jnp.zeros((), jnp.int32),
    )

  def merged(base, tau, lam):
    v = tr.merge(base, tau, bn.merge_coefficients(base, lam))
    if bn_mode == 'recompute' and 'batch_stats' in v:
      v = dict(v, batch_stats=jax.lax.stop_gradient(prepare(v).get('batch_stats')))
    return v

  def forward(base, tau, lam, x):
    v = merged(base, tau, lam)
    return model.head(v, model.encode(v, x, train=bn_batch), train=bn_batch)

  def update(state: AdaMergingState, x: jax.Array):
    loss_fn = lambda lam: entropy_score(forward(state.base, state.tau, lam, x), marginal_weight)

    def body(carry, _):
      lam, opt_state, skipped = carry
      loss, g = jax.value_and_grad(loss_fn)(lam)
      lam, opt_state, _, bad = optim.guarded_apply(opt, lam, opt_state, loss, g)
      lam = jnp.clip(lam, clip_min, clip_max)
      return (lam, opt_state, skipped + bad.astype(jnp.int32)), loss

    (lam, opt_state, skipped), losses = jax.lax.scan(
      body, (state.lam, state.opt_state, jnp.asarray(state.skipped, jnp.int32)), None, length=steps
    )
    logits = forward(state.base, state.tau, lam, x)
    info = {
      'lam': lam if not layerwise else jnp.mean(lam, 0),
      'loss': losses[-1],
      'entropy': jnp.mean(entropy(logits)),
    }
    return (
      AdaMergingState(state.base, state.tau, lam, opt_state, state.step + 1, skipped),
      logits,
      info,
    )

  return OnlineMethod(init, update)
