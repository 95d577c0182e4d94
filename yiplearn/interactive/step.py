"""The one click step: build the input, predict, call the rule's hooks, score, place the next click.

Shared by the whole-image session (``session.py``), the per-click tool (``tool.py``), validation
(``evaluation.py``, through the session with the frozen rule) and click pre-training
(``pretraining.py``: :func:`build_input` and :func:`predict`). Everything is per image and jittable.

A :class:`View` is the image being segmented. Its life for one click:

1. :func:`place` writes click t+1 into the click set and builds its input x (image ++ guidance maps
   [++ the displayed prediction's foreground]); the display fields (``logits``, ``pred``,
   ``pullback``) still describe the prediction on screen, f(I, C_t);
2. :func:`propose` (only for rules with ``uses_proposal``) adds ``proposal`` = argmax f(I, C_{t+1})
   with the current weights: the Mid-Interaction pseudo-label, one forward pass;
3. :func:`click_hooks` runs the rule's ``click`` hook on the view (MI reads the displayed logits and
   their ``pullback``, IA+SA and Tent the new input);
4. :func:`show` predicts f(I, C_{t+1}) with the updated weights -- through ``jax.vjp`` when the rule
   ``uses_vjp``, so the next MI update needs no second forward pass of the same input.

Click 1 is :func:`start` (the rule's ``start`` hook, then click slot 0, then its click hook). Keys:
click n (1-based) of an image with key k is placed with ``click_key(k, n) = fold_in(k, n)``, the rule's
end-of-image hook gets ``finish_key(k, T) = fold_in(k, T + 1)`` -- the same everywhere.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from yiplearn import clicks as clicks_lib
from yiplearn import metrics
from yiplearn.interactive.spec import SessionSpec

__all__ = [
  'Env',
  'View',
  'predict',
  'build_input',
  'click_key',
  'finish_key',
  'start',
  'place',
  'propose',
  'click_hooks',
  'show',
  'finish',
  'score',
]

ApplyFn = Callable[[Any, jax.Array], jax.Array]


class Env(NamedTuple):
  """What every hook may use: the model, the optimiser (one state over the stream) and the spec."""

  apply_fn: ApplyFn
  tx: optax.GradientTransformation
  spec: SessionSpec


class View(NamedTuple):
  """The image being segmented (a pytree; no batch axis).

  Attributes:
    image: (H, W, C) float32.
    clicks: the clicks so far (capacity ``spec.num_clicks``); slot ``t`` is the newest.
    t: int32 slot of the newest click.
    x: (H, W, Cin) the model input of the newest click set.
    logits: (H, W, K) float32 the displayed prediction's logits (of ``x`` once shown).
    pred: (H, W) int32 the displayed prediction.
    pullback: the VJP of the displayed forward pass with respect to the params (a pytree that can
      leave a jit), or None when the rule does not use it.
    proposal: (H, W) int32 argmax f(x) with the weights before this click's updates (zeros unless the
      rule ``uses_proposal``).
    key: the image's PRNG key.
  """

  image: jax.Array
  clicks: clicks_lib.Clicks
  t: jax.Array
  x: jax.Array
  logits: jax.Array
  pred: jax.Array
  pullback: Any
  proposal: jax.Array
  key: jax.Array


def predict(apply_fn: ApplyFn, params: Any, x: jax.Array) -> jax.Array:
  """Logits (H, W, K) float32 of one input x (H, W, Cin)."""
  return apply_fn(params, x[None])[0].astype(jnp.float32)


def build_input(
  spec: SessionSpec, image: jax.Array, clicks: clicks_lib.Clicks, prev_pred: jax.Array | None = None
) -> jax.Array:
  """Model input (H, W, C + K [+ 1]): image ++ guidance maps [++ foreground of prev_pred (H, W) int]."""
  prev = None
  if spec.prev_mask:
    prev = (
      jnp.zeros(image.shape[:2], jnp.float32)
      if prev_pred is None
      else (prev_pred > 0).astype(jnp.float32)
    )
  return clicks_lib.model_input(
    image,
    clicks,
    spec.num_classes,
    encoding=spec.encoding,
    sigma=spec.sigma,
    radius=spec.radius,
    prev_mask=prev,
    reverse_classes=spec.reverse_classes,
  )


def click_key(key: jax.Array, n: Any) -> jax.Array:
  """The key of click n (1-based) of an image with key ``key``."""
  return jax.random.fold_in(key, n)


def finish_key(key: jax.Array, num_clicks: int) -> jax.Array:
  """The key of the end-of-image hook (e.g. Post-Interaction's artificial clicks)."""
  return jax.random.fold_in(key, int(num_clicks) + 1)


def start(rule, env: Env, state, image, coord, label, valid, key) -> tuple[Any, View, jax.Array]:
  """Click 1: the rule's start hook (e.g. an episodic reset), slot 0 written, its click hook.

  Returns ``(state, view, loss)``; the view is not shown yet (see :func:`show`).
  """
  spec = env.spec
  rstate, train = rule.start(state.rule, state.train, env)
  image = jnp.asarray(image, jnp.float32)
  h, w = image.shape[:2]
  cl = clicks_lib.add_click(clicks_lib.empty_clicks(spec.num_clicks), 0, coord, label, valid)
  zeros = jnp.zeros((h, w), jnp.int32)
  view = View(
    image=image,
    clicks=cl,
    t=jnp.int32(0),
    x=build_input(spec, image, cl),
    logits=jnp.zeros((h, w, spec.num_classes), jnp.float32),
    pred=zeros,
    pullback=None,
    proposal=zeros,
    key=key,
  )
  rstate, train, loss = rule.click(rstate, train, view, env)
  return state._replace(train=train, rule=rstate), view, loss


def place(spec: SessionSpec, view: View, coord, label, valid) -> View:
  """Click t+1 written and its input built (previous mask = the displayed prediction)."""
  t = view.t + 1
  cl = clicks_lib.add_click(view.clicks, t, coord, label, valid)
  return view._replace(clicks=cl, t=t, x=build_input(spec, view.image, cl, view.pred))


def propose(rule, env: Env, params: Any, view: View) -> View:
  """The prediction of the new input with the current weights (one forward), when the rule uses it."""
  if not rule.uses_proposal:
    return view
  logits = predict(env.apply_fn, jax.lax.stop_gradient(params), view.x)
  return view._replace(proposal=jnp.argmax(logits, -1).astype(jnp.int32))


def click_hooks(rule, env: Env, state, view: View) -> tuple[Any, jax.Array]:
  """The rule's click hook on a placed (and proposed) view: ``(state, loss)``."""
  rstate, train, loss = rule.click(state.rule, state.train, view, env)
  return state._replace(train=train, rule=rstate), loss


def show(rule, env: Env, params: Any, view: View) -> View:
  """The displayed prediction of ``view.x`` (with its pullback when the rule uses it)."""
  if rule.uses_vjp:
    logits, pullback = jax.vjp(lambda p: predict(env.apply_fn, p, view.x), params)
  else:
    logits, pullback = predict(env.apply_fn, params, view.x), None
  pred = jnp.argmax(logits, -1).astype(jnp.int32)
  return view._replace(logits=logits, pred=pred, pullback=pullback)


def finish(rule, env: Env, state, view: View, gt: jax.Array | None = None) -> tuple[Any, jax.Array]:
  """The rule's end-of-image hook on the accepted view: ``(state, losses (2,))``."""
  rstate, train, losses = rule.finish(state.rule, state.train, view, env, gt)
  return state._replace(train=train, rule=rstate), losses


def score(spec: SessionSpec, pred: jax.Array, gt: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Dice of every class (K,) and of every report union (R,) of one prediction."""
  d = metrics.dice_per_class(pred, gt, spec.num_classes)
  u = jnp.stack([metrics.foreground_dice(pred, gt, cs) for _, cs in spec.report_unions])
  return d, u
