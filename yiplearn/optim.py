"""The train state and the one guarded optimiser step used by every trainer.

Interactive rules, click pre-training, expert training, merging's Tent and AdaMerging all step through
:func:`guarded_update`: the step is applied only where it is enabled and the loss and every gradient are
finite (``optax.apply_if_finite``'s rule, plus the loss check and an ``enabled`` mask, which lets a
``lax.scan`` over a fixed number of click slots step on the valid ones only); a skipped step leaves params
and optimiser state untouched and is counted in ``skipped``.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

__all__ = ['TrainState', 'all_finite', 'guarded_update', 'guarded_apply', 'init_train_state']


class TrainState(NamedTuple):
  """Parameters with their optimiser state (a pytree; vmap it for independent streams).

  Attributes:
    params: the pytree being trained (e.g. flax variables); every leaf the optimiser sees is updated.
    opt_state: the optax state of ``params``.
    step: int32 number of enabled update attempts so far.
    skipped: int32 number of enabled attempts skipped because the loss or a gradient was not finite.
  """

  params: Any
  opt_state: Any
  step: jax.Array
  skipped: jax.Array


def init_train_state(params: Any, tx: optax.GradientTransformation) -> TrainState:
  """Fresh state owning copies of ``params`` (callers may donate the state and keep their arrays)."""
  params = jax.tree_util.tree_map(lambda a: jnp.array(a, copy=True), params)
  return TrainState(params, tx.init(params), jnp.zeros((), jnp.int32), jnp.zeros((), jnp.int32))


def all_finite(tree: Any) -> jax.Array:
  """True when every element of every leaf is finite (True for an empty tree)."""
  leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree_util.tree_leaves(tree)]
  return jnp.all(jnp.stack(leaves)) if leaves else jnp.bool_(True)


def guarded_apply(
  tx: optax.GradientTransformation,
  params: Any,
  opt_state: Any,
  loss: jax.Array,
  grads: Any,
  *,
  enabled: Any = True,
  scale: float = 1.0,
) -> tuple[Any, Any, jax.Array, jax.Array]:
  """One step on bare ``(params, opt_state)``: returns ``(params, opt_state, applied, skipped)``.

  ``applied`` is True where the step was taken; ``skipped`` is True where it was enabled but the loss or
  a gradient was not finite. ``scale`` multiplies the updates (a static learning-rate multiplier).
  """
  enabled = jnp.asarray(enabled, bool)
  finite = jnp.isfinite(loss) & all_finite(grads)
  ok = enabled & finite
  safe = jax.tree_util.tree_map(lambda g: jnp.where(ok, g, jnp.zeros_like(g)), grads)
  updates, new_opt = tx.update(safe, opt_state, params)
  if scale != 1.0:
    updates = jax.tree_util.tree_map(lambda u: u * scale, updates)
  new_params = optax.apply_updates(params, updates)
  pick = lambda new, old: jax.tree_util.tree_map(lambda a, b: jnp.where(ok, a, b), new, old)
  return pick(new_params, params), pick(new_opt, opt_state), ok, enabled & ~finite


def guarded_update(
  tx: optax.GradientTransformation,
  state: Any,
  loss: jax.Array,
  grads: Any,
  enabled: Any = True,
  scale: float = 1.0,
) -> Any:
  """One optimiser step on a state with ``params, opt_state, step, skipped`` fields (a NamedTuple).

  ``step`` counts enabled attempts, ``skipped`` the enabled attempts with a non-finite loss or gradient;
  params and optimiser state are unchanged unless the step is enabled and finite.
  """
  params, opt_state, _, skipped = guarded_apply(
    tx, state.params, state.opt_state, loss, grads, enabled=enabled, scale=scale
  )
  enabled = jnp.asarray(enabled, bool)
  return state._replace(
    params=params,
    opt_state=opt_state,
    step=state.step + enabled.astype(jnp.int32),
    skipped=state.skipped + skipped.astype(jnp.int32),
  )
