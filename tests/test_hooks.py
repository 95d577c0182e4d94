"""The rule type and its combinators: chain runs hooks in order and sums losses, episodic resets."""

import jax
import jax.numpy as jnp
import numpy as np
from toys import toy_apply, toy_params

from yiplearn.interactive import hooks, rules, step
from yiplearn.interactive.spec import SessionSpec

SPEC = SessionSpec(num_classes=2, num_clicks=2)
ENV = step.Env(toy_apply, rules.make_optimizer(1e-2), SPEC)


def _equal_trees(a, b):
  return all(
    np.array_equal(np.asarray(x), np.asarray(y))
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b))
  )


def _view(params):
  img = jnp.asarray(np.random.default_rng(0).normal(size=(8, 8, 1)), jnp.float32)
  state = rules.init_state(rules.frozen(), params, ENV.tx)
  return step.start(
    rules.frozen(), ENV, state, img, jnp.array([3, 3]), 1, True, jax.random.PRNGKey(0)
  )[1]


def test_chain_runs_hooks_in_order_and_sums_losses():
  params = toy_params(3)
  view = _view(params)
  a, b = rules.tent(), rules.tent(lr_scale=0.5)
  both = hooks.chain(a, b)
  assert both.name == 'tent+tent' and both.updates_on_click and not both.uses_vjp
  state = rules.init_state(both, params, ENV.tx)
  assert state.rule == ((), ())
  _, train, loss = both.click(state.rule, state.train, view, ENV)
  _, t1, l1 = a.click((), state.train, view, ENV)
  _, t2, l2 = b.click((), t1, view, ENV)
  assert _equal_trees(train.params, t2.params) and int(train.step) == 2
  np.testing.assert_allclose(float(loss), float(l1) + float(l2), rtol=1e-6)
  assert not _equal_trees(train.params, params)


def test_episodic_resets_params_and_optimiser_and_keeps_counters():
  params = toy_params(3)
  rule = rules.make('pi_mi_episodic')
  state = rules.init_state(rule, params, ENV.tx)
  moved = state.train._replace(
    params=jax.tree_util.tree_map(lambda p: p + 1, params), step=state.step + 3
  )
  _, back = rule.start(state.rule, moved, ENV)
  assert _equal_trees(back.params, params) and int(back.step) == 3
  assert _equal_trees(back.opt_state, state.opt_state)
  # The anchor is a copy: donating the train state leaves it intact.
  leaves = jax.tree_util.tree_leaves(state.rule.params)
  assert all(x is not y for x, y in zip(leaves, jax.tree_util.tree_leaves(state.params)))
