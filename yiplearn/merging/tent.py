"""Tent (Wang et al. 2021) on the mean-merged model: online entropy minimisation of the
normalisation layers' affine parameters (BatchNorm / LayerNorm scale and bias).

init(experts, base) merges the experts uniformly; each update predicts the batch (with batch
statistics in BatchNorm by default, as Tent does) and takes `steps` optimiser steps on the mean
prediction entropy w.r.t. the selected parameters. The logits returned are those of the forward
pass before the update (Tent's protocol). An `OnlineMethod` (see `merging.protocol`); each step goes through
`yiplearn.optim.guarded_apply` (a non-finite entropy or gradient skips it and is counted).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from yiplearn import errors, optim
from yiplearn.merging import bn, static
from yiplearn.merging import tree as tr
from yiplearn.merging.protocol import (
  BN_MODES,
  OnlineMethod,
  check,
  copy_tree,
  entropy,
  entropy_score,
)

PyTree = Any


class TentState(NamedTuple):
  variables: PyTree
  opt_state: Any
  step: jax.Array
  skipped: jax.Array  # number of updates skipped for a non-finite loss


def tent(
  model,
  *,
  learning_rate: float = 1e-3,
  steps: int = 1,
  optimizer: str = 'adam',
  predicate: tr.PathPredicate = tr.is_norm_affine,
  bn_mode: str = 'batch',
  marginal_weight: float = 0.0,
  calibration: jax.Array | None = None,
) -> OnlineMethod:
  """Tent on the mean merge; `predicate(path)` selects the adapted leaves. BatchNorm statistics
  (`merging.bn`): 'batch' (Tent's own), 'merge' (the experts' mean), 'recompute' (re-estimated once
  for the mean merge on `calibration` source images, then kept)."""
  check('steps', steps, steps >= 1, '>= 1')
  bn.check_mode(bn_mode, calibration, BN_MODES)
  check('optimizer', optimizer, optimizer in ('adam', 'sgd'), "'adam' or 'sgd'")
  opt = optax.adam(learning_rate) if optimizer == 'adam' else optax.sgd(learning_rate, 0.9)
  bn_batch = bn_mode == 'batch'

  def init(experts, base):
    del base
    v = static.mean_merge(experts)
    if bn_mode == 'recompute':
      v = bn.recompute(model, v, jnp.asarray(calibration, jnp.float32))
    v = copy_tree(v)
    train, _ = tr.partition(v, predicate)
    if not jax.tree.leaves(train):
      raise errors.invalid('predicate', 'selects no leaves', 'normalisation scale/bias params')
    return TentState(v, opt.init(train), jnp.zeros((), jnp.int32), jnp.zeros((), jnp.int32))

  def update(state: TentState, x: jax.Array):
    train, frozen = tr.partition(state.variables, predicate)

    def loss_fn(tr_params):
      v = tr.combine(tr_params, frozen)
      logits = model.head(v, model.encode(v, x, train=bn_batch), train=bn_batch)
      return entropy_score(logits, marginal_weight), logits

    def body(carry, i):
      params, opt_state, skipped = carry
      (loss, logits), g = jax.value_and_grad(loss_fn, has_aux=True)(params)
      params, opt_state, _, bad = optim.guarded_apply(opt, params, opt_state, loss, g)
      return (params, opt_state, skipped + bad.astype(jnp.int32)), (loss, logits)

    (params, opt_state, skipped), (losses, all_logits) = jax.lax.scan(
      body, (train, state.opt_state, state.skipped), jnp.arange(steps)
    )
    logits = all_logits[0]
    new_state = TentState(tr.combine(params, frozen), opt_state, state.step + 1, skipped)
    return new_state, logits, {'loss': losses[0], 'entropy': jnp.mean(entropy(logits))}

  return OnlineMethod(init, update)
