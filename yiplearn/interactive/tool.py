"""Per-click functions for an interactive tool driven by a person (DESIGN.md 1.1 and 1.4).

The whole-image session needs the ground truth (its simulated user places the clicks). A person clicks
one point at a time, so a tool runs the same click step (``step.py``) one event at a time, with any rule
of ``rules.py`` except those that need the ground truth (the oracle)::

  tool = make_tool(model, spec, rule)                    # rule = rules.make('pi_mi'), ...
  state = tool.init(params)                              # rules.State
  state, view = tool.start(state, image, coord, label)   # click 1 shown (key=None: PRNGKey(0))
  view, pseudo = tool.propose(state, view, coord, label) # click t+1 placed: argmax f(I, C_{t+1}) with
                                                         # the current weights (one forward pass)
  state, view, pred = tool.adapt(state, view)            # the rule's click update, then the adapted
                                                         # prediction f(I, C_{t+1}) shown
  state = tool.finish(state, view)                       # accepted: end-of-image update (PI)
  state, view = tool.click(state, view, coord, label)    # propose + adapt in one call

A UI shows ``pseudo`` at once (for MI it is the Mid-Interaction pseudo-label, computed before the
update) and ``pred`` when the update is done. ``view`` (:class:`~yiplearn.interactive.step.View`) keeps
the displayed forward pass's VJP (a pytree), so an MI click costs two forward passes and one backward
pass, as in the session. Replaying a session's clicks (start, then propose + adapt per click, finish
with the session's image key) gives the session's predictions and weights.

Every function is jitted once: ``init``; ``start`` = start hooks then ``show``; ``propose``; ``adapt`` =
click hooks then ``show``; ``finish`` (the same ``show`` executable displays every prediction, so the
view's structure never changes and nothing recompiles). Functions that return a state donate the
passed one (keep no reference to it; copy it first to undo); views are never donated. Inputs are
checked on the host: a coordinate outside the image, a label out of range, NaN pixels or a click beyond
the capacity ``spec.num_clicks`` raise a ``UserError``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from yiplearn import checks, errors
from yiplearn.interactive import rules, step
from yiplearn.interactive.spec import SessionSpec
from yiplearn.interactive.step import View

__all__ = ['View', 'Tool', 'make_tool']


class Tool(NamedTuple):
  init: Callable
  start: Callable
  propose: Callable
  adapt: Callable
  click: Callable
  finish: Callable
  spec: SessionSpec
  rule: rules.Rule
  jitted: dict  # the unchecked jitted functions (e.g. to .lower() them): see make_tool


def make_tool(model: Any, spec: SessionSpec, rule: rules.Rule, *, tx=None) -> Tool:
  """Jitted per-click functions for ``model`` (a flax module or an ``apply_fn``) and ``rule``."""
  spec = spec.validate()
  if rule.needs_gt:
    raise errors.invalid('rule', rule.name, 'a rule that needs no ground truth (not the oracle)')
  env = step.Env(
    model.apply if hasattr(model, 'apply') else model, tx or rules.make_optimizer(), spec
  )
  T, K = int(spec.num_clicks), int(spec.num_classes)

  def start_hooks(state, image, coord, label, key):
    state, view, _ = step.start(rule, env, state, image, coord, label, True, key)
    return state, view

  def show(state, view):  # every view it gets has pullback=None: one input structure
    return state, step.show(rule, env, state.params, view)

  def propose(state, view, coord, label):
    view = step.place(spec, view, coord, label, True)
    view = step.propose(rule._replace(uses_proposal=True), env, state.params, view)
    return view, view.proposal

  def adapt_hooks(state, view):  # (state, loss of the click's updates)
    return step.click_hooks(rule, env, state, view)

  def finish(state, view):
    return step.finish(rule, env, state, view)[0]

  j = {
    'init': jax.jit(lambda params: rules.init_state(rule, params, env.tx)),
    'start': jax.jit(start_hooks, donate_argnums=(0,)),
    'show': jax.jit(show, donate_argnums=(0,)),
    'propose': jax.jit(propose),
    'adapt': jax.jit(adapt_hooks, donate_argnums=(0,)),
    'finish': jax.jit(finish, donate_argnums=(0,)),
  }

  def point(coord, label, shape):
    coord = np.asarray(coord)
    if coord.shape != (2,) or not np.issubdtype(coord.dtype, np.integer):
      raise errors.invalid('coord', coord.tolist(), 'an integer (row, col) pair')
    if not (0 <= coord[0] < shape[0] and 0 <= coord[1] < shape[1]):
      raise errors.invalid(
        'coord', tuple(int(c) for c in coord), f'inside the image of shape {tuple(shape[:2])}'
      )
    if isinstance(label, bool) or int(label) != label or not 0 <= int(label) < K:
      raise errors.invalid('label', label, f'a class index in [0, {K})')
    return jnp.asarray(coord, jnp.int32), jnp.int32(label)

  def start_checked(state, image, coord, label, key=None):
    if np.ndim(image) != 3:
      raise errors.invalid('image', f'shape {np.shape(image)}', 'an (H, W, C) image')
    checks.image_batch('image', image, rank=3)  # dtype, NaN / Inf pixels
    key = jax.random.PRNGKey(0) if key is None else key
    state, view = j['start'](state, image, *point(coord, label, np.shape(image)), key)
    return j['show'](state, view)

  def propose_checked(state, view, coord, label):
    if int(view.t) + 1 >= T:
      raise errors.invalid('click', int(view.t) + 2, f'at most spec.num_clicks={T} clicks')
    return j['propose'](state, view, *point(coord, label, view.image.shape))

  def adapt_checked(state, view):
    state, _ = j['adapt'](state, view)
    state, view = j['show'](state, view._replace(pullback=None))
    return state, view, view.pred

  def click_checked(state, view, coord, label):
    view, _ = propose_checked(state, view, coord, label)
    state, view, _ = adapt_checked(state, view)
    return state, view

  return Tool(
    init=j['init'],
    start=start_checked,
    propose=propose_checked,
    adapt=adapt_checked,
    click=click_checked,
    finish=j['finish'],
    spec=spec,
    rule=rule,
    jitted=j,
  )
