"""The online-method protocol every merging method follows, and the helpers they share.

Every online method is an `(init, update)` pair closing over its hyper-parameters (optax style):

    init(experts, base) -> state          # experts: stacked variables (K, ...); base: theta_0
    update(state, x) -> (state, logits, info)   # x: (B, H, W, C) float32; logits: (B, C)

`update` is pure and jittable (jit it with `donate_argnums=0`; `init` copies its inputs with
`copy_tree`, so donation never invalidates the caller's arrays). `model` is any object with
`encode(variables, x, train) -> (B, D)` reading only encoder leaves and
`head(variables, feats, train) -> (B, C)` reading only head leaves (see `yiplearn.models.classifier`;
`train`: batch statistics in a head that has them, such as a U-Net's decoder path).

Implementations: `entropy_adaptive` (yiplearn.merging.entropy_adaptive), `adamerging`, `tent`,
`ensemble.output_ensemble` and `fixed_model` below (a static merge or one expert);
`yiplearn.merging.online` gathers them in one namespace.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from yiplearn import errors
from yiplearn.merging import bn
from yiplearn.merging import tree as tr

PyTree = Any
InitFn = Callable[[PyTree, PyTree], Any]
UpdateFn = Callable[[Any, jax.Array], tuple[Any, jax.Array, dict]]

BN_MODES = bn.MODES  # BatchNorm statistics of merged models, see `yiplearn.merging.bn`


class OnlineMethod(NamedTuple):
  init: InitFn
  update: UpdateFn


def entropy(logits: jax.Array) -> jax.Array:
  """Shannon entropy (nats) of softmax(logits) over the last axis."""
  logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  return -jnp.sum(jnp.exp(logp) * logp, axis=-1)


def entropy_score(logits: jax.Array, marginal_weight: float = 0.0) -> jax.Array:
  """mean_i H(p_i) - marginal_weight * H(mean_i p_i) for logits (B, C); a scalar."""
  score = jnp.mean(entropy(logits))
  if marginal_weight:
    p_bar = jnp.mean(jax.nn.softmax(logits.astype(jnp.float32), -1), axis=0)
    score = score - marginal_weight * -jnp.sum(p_bar * jnp.log(jnp.clip(p_bar, 1e-12)))
  return score


def candidate_weights(scores: jax.Array, temperature: float) -> jax.Array:
  """softmax(-scores / T) over candidates (J,); T = 0 gives the one-hot of the argmin.
  Non-finite scores get weight 0."""
  scores = jnp.where(jnp.isfinite(scores), scores, jnp.inf)
  if temperature == 0:
    return jax.nn.one_hot(jnp.argmin(scores), scores.shape[0], dtype=jnp.float32)
  return jax.nn.softmax(-scores / temperature)


def copy_tree(tree: PyTree) -> PyTree:
  """Fresh buffers for every leaf (a state built from them can be donated)."""
  return jax.tree.map(lambda x: jnp.array(x, copy=True), tree)


def check(field: str, value: Any, ok: bool, expected: str) -> None:
  """Raises `errors.invalid(field, value, expected)` (a UserError) unless `ok`."""
  if not ok:
    raise errors.invalid(field, value, expected)


def check_num_experts(experts: PyTree, num_experts: int) -> None:
  """The stacked experts' leading axis must equal the method's `num_experts`."""
  k = tr.num_experts(experts)
  check('experts (leading axis)', k, k == num_experts, f'{num_experts} experts')


@functools.lru_cache(maxsize=16)
def _recompute_jit(model):
  return jax.jit(functools.partial(bn.recompute, model))


class FixedState(NamedTuple):
  variables: PyTree
  step: jax.Array


def fixed_model(
  model,
  merge_fn: Callable[[PyTree, PyTree], PyTree],
  bn_mode: str = 'merge',
  calibration: jax.Array | None = None,
) -> OnlineMethod:
  """A static merge (or a single expert) as an online method: init merges once with
  `merge_fn(experts, base)`; update only predicts. BatchNorm statistics (`merging.bn`): 'merge'
  keeps those `merge_fn` returns, 'recompute' re-estimates them once on `calibration` images
  (N, H, W, C) for the merged weights, 'batch' uses each test batch's own."""
  bn.check_mode(bn_mode, calibration)

  def init(experts, base):
    v = merge_fn(experts, base)
    if bn_mode == 'recompute':
      v = _recompute_jit(model)(v, jnp.asarray(calibration, jnp.float32))
    return FixedState(copy_tree(v), jnp.zeros((), jnp.int32))

  def update(state, x):
    train = bn_mode == 'batch'
    v = state.variables
    logits = model.head(v, model.encode(v, x, train=train), train=train)
    return (
      FixedState(state.variables, state.step + 1),
      logits,
      {'entropy': jnp.mean(entropy(logits))},
    )

  return OnlineMethod(init, update)
