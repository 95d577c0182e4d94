"""The rule type of the interactive wing: a NamedTuple of pure hooks, the stream state, combinators.

A :class:`Rule` is what the factories of ``rules.py`` return (optax's GradientTransformation in
spirit); :func:`chain` runs several rules' hooks in order, :func:`episodic` resets the weights
before every image. The hook signatures are documented in ``rules.py``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from yiplearn import optim

__all__ = ['Rule', 'State', 'make_rule', 'copy_tree', 'chain', 'episodic']


class Rule(NamedTuple):
  """The hooks of an update rule and what the click step must compute for it (static flags).

  Attributes:
    init, start, click, finish: the hooks (signatures in ``rules.py``).
    name: the method's name.
    uses_vjp: the click hook reads ``view.pullback`` (the displayed forward pass's VJP).
    uses_proposal: the click hook reads ``view.proposal`` (argmax f(I, C_t) before the update).
    updates_on_click: the click hook may change the weights.
    needs_gt: the finish hook needs the ground truth (no per-click tool).
  """

  init: Callable
  start: Callable
  click: Callable
  finish: Callable
  name: str = 'rule'
  uses_vjp: bool = False
  uses_proposal: bool = False
  updates_on_click: bool = False
  needs_gt: bool = False


class State(NamedTuple):
  """The adaptation state of one stream (a pytree; vmap it for independent streams)."""

  train: optim.TrainState
  rule: Any = ()

  params = property(lambda self: self.train.params)
  opt_state = property(lambda self: self.train.opt_state)
  step = property(lambda self: self.train.step)
  skipped = property(lambda self: self.train.skipped)


def copy_tree(tree: Any) -> Any:
  """Fresh copies of every leaf (a rule state must not share buffers with the donated train state)."""
  return jax.tree_util.tree_map(lambda a: jnp.array(a, copy=True), tree)


def _no_start(rstate, train, env):
  del env
  return rstate, train


def _no_click(rstate, train, view, env):
  del view, env
  return rstate, train, jnp.float32(0.0)


def _no_finish(rstate, train, view, env, gt):
  del view, env, gt
  return rstate, train, jnp.zeros((2,), jnp.float32)


def make_rule(name: str, **hooks) -> Rule:
  """A Rule with no-op defaults for the hooks not given."""
  hooks.setdefault('init', lambda train: ())
  hooks.setdefault('start', _no_start)
  hooks.setdefault('click', _no_click)
  hooks.setdefault('finish', _no_finish)
  return Rule(name=name, **hooks)


def chain(*rules: Rule, name: str | None = None) -> Rule:
  """The rules' hooks in order (losses summed); the rule state is the tuple of theirs."""

  def init(train):
    return tuple(r.init(train) for r in rules)

  def start(rstate, train, env):
    out = []
    for r, s in zip(rules, rstate):
      s, train = r.start(s, train, env)
      out.append(s)
    return tuple(out), train

  def click(rstate, train, view, env):
    out, total = [], jnp.float32(0.0)
    for r, s in zip(rules, rstate):
      s, train, value = r.click(s, train, view, env)
      out.append(s)
      total = total + value
    return tuple(out), train, total

  def finish(rstate, train, view, env, gt):
    out, total = [], jnp.zeros((2,), jnp.float32)
    for r, s in zip(rules, rstate):
      s, train, values = r.finish(s, train, view, env, gt)
      out.append(s)
      total = total + values
    return tuple(out), train, total

  return Rule(
    init,
    start,
    click,
    finish,
    name=name or '+'.join(r.name for r in rules),
    uses_vjp=any(r.uses_vjp for r in rules),
    uses_proposal=any(r.uses_proposal for r in rules),
    updates_on_click=any(r.updates_on_click for r in rules),
    needs_gt=any(r.needs_gt for r in rules),
  )


class _Episode(NamedTuple):
  params: Any
  opt_state: Any
  inner: Any


def episodic(rule: Rule) -> Rule:
  """``rule`` with params and optimiser state reset to the initial ones before every image (counters
  kept); the anchor lives in the rule state."""

  def init(train):
    return _Episode(copy_tree(train.params), copy_tree(train.opt_state), rule.init(train))

  def start(rstate, train, env):
    train = train._replace(params=rstate.params, opt_state=rstate.opt_state)
    inner, train = rule.start(rstate.inner, train, env)
    return rstate._replace(inner=inner), train

  def click(rstate, train, view, env):
    inner, train, value = rule.click(rstate.inner, train, view, env)
    return rstate._replace(inner=inner), train, value

  def finish(rstate, train, view, env, gt):
    inner, train, values = rule.finish(rstate.inner, train, view, env, gt)
    return rstate._replace(inner=inner), train, values

  return rule._replace(
    init=init, start=start, click=click, finish=finish, name=f'{rule.name}_episodic'
  )
