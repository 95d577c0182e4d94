"""Per-click functions for an interactive tool driven by a person (DESIGN.md 1.1, "Online protocol").

The whole-image :func:`~yiplearn.interactive.session.make_session` needs the ground truth (its simulated user
places the clicks). A person clicks one point at a time and waits for each prediction, so a tool needs one
jitted function per event, with the same update rules in the same order as the session:

    tool = make_tool(model, hp)
    state = tool.init(params)                          # AdaptState (jitted: one cached executable)
    state, view = tool.start(state, image, coord, label)   # click 1: [IA+SA/Tent update], show P_1
    state, view = tool.click(state, view, coord, label)    # click t+1: [MI update], [IA+SA/Tent], show P_{t+1}
    state = tool.finish(state, view, key)               # the image is accepted: Post-Interaction update

``view`` (:class:`View`) is the image being segmented: its clicks (capacity ``hp.num_clicks``), the input and the
prediction on display. ``click`` makes the Mid-Interaction update of the session -- pseudo-label
argmax f(I, C_{t+1}), loss DiceFocal + beta CCG on f(I, C_t) (the displayed prediction's input) -- then shows
f(I, C_{t+1}) with the updated weights: three forward passes and one backward pass (the session shares the
displayed forward pass and needs two). Replaying a session's clicks through a tool gives the session's
predictions and weights (tests/test_tool.py). Every function donates the state; the view is not donated.
A click beyond the capacity raises; coordinates outside the image or labels out of range are refused.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from yiplearn import checks
from yiplearn import clicks as clicks_lib
from yiplearn.interactive import updates as U

__all__ = ['View', 'Tool', 'make_tool']


class View(NamedTuple):
  """The image being segmented.

  Attributes: image (H, W, C) float32; clicks (capacity T); t int32 slot of the newest click;
  x (H, W, Cin) the input of the displayed prediction; pred (H, W) int32 the displayed prediction.
  """

  image: jax.Array
  clicks: clicks_lib.Clicks
  t: jax.Array
  x: jax.Array
  pred: jax.Array


class Tool(NamedTuple):
  init: Callable
  start: Callable
  click: Callable
  finish: Callable
  hp: U.HParams
  jitted: dict  # the unchecked jitted functions {'init', 'start', 'click', 'finish'} (e.g. to .lower() them)


def make_tool(model: Any, hp: U.HParams, *, tx=None) -> Tool:
  """Jitted per-click functions for ``model`` (a flax module or an ``apply_fn``) and the method of ``hp``.

  The oracle method needs the ground truth and has no tool; every other method of ``updates.METHODS`` does.
  """
  hp = hp.validate()
  rule = hp.rule
  if rule.oracle:
    raise ValueError(
      f'hp.method={hp.method!r}: the oracle needs the ground truth; expected an online method'
    )
  tx = tx or U.make_optimizer(hp)
  apply_fn = model.apply if hasattr(model, 'apply') else model
  T, K = int(hp.num_clicks), int(hp.num_classes)

  def per_click_update(state, cl, x):
    if rule.per_click == 'ia_sa':
      return U.ia_sa_step(apply_fn, tx, hp, state, x, cl)[0]
    if rule.per_click == 'tent':
      return U.tent_step(apply_fn, tx, hp, state, x)[0]
    return state

  def show(state, image, cl, t, x):
    state = per_click_update(state, cl, x)
    pred = jnp.argmax(U.predict(apply_fn, state.params, x), -1).astype(jnp.int32)
    return state, View(image, cl, t, x, pred)

  def start(state, image, coord, label):
    if rule.episodic:
      state = U.episodic_reset(state)
    image = jnp.asarray(image, jnp.float32)
    cl = clicks_lib.add_click(clicks_lib.empty_clicks(T), 0, coord, label, True)
    return show(state, image, cl, jnp.int32(0), U.make_input(hp, image, cl))

  def click(state, view, coord, label):
    t = view.t + 1
    cl = clicks_lib.add_click(view.clicks, t, coord, label, True)
    x = U.make_input(hp, view.image, cl, view.pred)
    if rule.mi:
      params = jax.lax.stop_gradient(state.params)
      pseudo = jnp.argmax(U.predict(apply_fn, params, x), -1).astype(jnp.int32)
      newest = clicks_lib.select(cl, jnp.arange(T) == t)
      loss, grads = jax.value_and_grad(
        lambda p: U.mi_loss_from_logits(hp, U.predict(apply_fn, p, view.x), pseudo, newest)
      )(state.params)
      state = U.guarded_update(tx, state, loss, grads)
    return show(state, view.image, cl, t, x)

  def finish(state, view, key):
    if rule.pi:
      state = U.pi_step(apply_fn, tx, hp, state, view.image, view.clicks, view.pred, key)[0]
    return state

  j_start = jax.jit(start, donate_argnums=(0,))
  j_click = jax.jit(click, donate_argnums=(0,))
  j_finish = jax.jit(finish, donate_argnums=(0,))
  j_init = jax.jit(lambda params: U.init_state(params, hp, tx))

  def _point(name, coord, label, shape):
    coord = np.asarray(coord)
    if coord.shape != (2,) or not np.issubdtype(coord.dtype, np.integer):
      raise ValueError(f'{name}: got {coord!r}, expected an integer (row, col) pair')
    if not (0 <= coord[0] < shape[0] and 0 <= coord[1] < shape[1]):
      raise ValueError(
        f'{name}={tuple(int(c) for c in coord)}: outside the image of shape {tuple(shape[:2])}'
      )
    if int(label) != label or not 0 <= int(label) < K:
      raise ValueError(f'label={label!r}: expected a class index in [0, {K})')
    return jnp.asarray(coord, jnp.int32), jnp.int32(label)

  def start_checked(state, image, coord, label):
    if np.ndim(image) != 3:
      raise ValueError(f'image: got shape {np.shape(image)}, expected (H, W, C)')
    checks.image_batch('image', image, rank=3)  # dtype, NaN / Inf pixels
    return j_start(state, image, *_point('coord', coord, label, np.shape(image)))

  def click_checked(state, view, coord, label):
    if int(view.t) + 1 >= T:
      raise ValueError(f'click {int(view.t) + 2}: the view holds at most hp.num_clicks={T} clicks')
    return j_click(state, view, *_point('coord', coord, label, view.image.shape))

  return Tool(
    init=j_init,
    start=start_checked,
    click=click_checked,
    finish=j_finish,
    hp=hp,
    jitted={'init': j_init, 'start': j_start, 'click': j_click, 'finish': j_finish},
  )
