"""The whole-image interactive session as ONE jitted function (DESIGN.md 1.1, "Online protocol").

``session(state, image, gt, key) -> (new_state, SessionOutput)`` runs the click step of ``step.py``
with any rule of ``rules.py`` (no method-specific code here):

1. the rule's start hook (e.g. an episodic reset); click 1 from the ground truth (against an empty
   prediction) and its click hook (IA+SA / Tent update before the prediction is shown);
2. ``lax.scan`` over clicks: show P_t = f(I, C_t) and score it (Dice per class and per report union),
   the simulated user places click t+1 in P_t's largest error component, the proposal (MI's
   pseudo-label) and the rule's click hook;
3. the last prediction shown and scored, then the rule's end-of-image hook (Post-Interaction, oracle):
   every image is scored before its own end-of-image update.

No host round trip per click. A rule that ``uses_vjp`` gets the displayed forward pass's VJP, so an MI
click costs two forward passes and one backward pass. Keys: ``step.click_key`` / ``step.finish_key``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from yiplearn import checks, errors, parallel
from yiplearn import clicks as clicks_lib
from yiplearn.interactive import rules, step, user
from yiplearn.interactive.spec import SessionSpec

__all__ = ['SessionOutput', 'make_session', 'sharded_session', 'model_for_loop', 'run_stream']


class SessionOutput(NamedTuple):
  """Per-image results (prepend stream axes under vmap).

  Attributes:
    dice: (T, K) float32 Dice of every class after each click (background included).
    union_dice: (T, R) float32 Dice of each ``spec.report_unions`` union after each click.
    clicks: the T clicks placed by the simulated user (Clicks, capacity T).
    click_loss: (T,) float32 loss of the update made because of click t (MI: the update after click t >= 2;
      IA+SA/Tent: the update before P_t is shown); 0 where none.
    image_loss: (2,) float32 per-image update losses (PI stage 1 and 2, or the oracle's in slot 0); 0 if none.
    updates: int32 update attempts in this image. skipped: int32 of them skipped as non-finite.
    final_pred: (H, W) int32 the accepted prediction P_T.
  """

  dice: jax.Array
  union_dice: jax.Array
  clicks: clicks_lib.Clicks
  click_loss: jax.Array
  image_loss: jax.Array
  updates: jax.Array
  skipped: jax.Array
  final_pred: jax.Array


def _apply_fn(model: Any) -> Callable:
  return model.apply if hasattr(model, 'apply') else model


def model_for_loop(model: Any, num_clicks: int, unroll: int | bool) -> Any:
  """The U-Net switched to forward-style convolution gradients on CPU inside a rolled click loop.

  XLA:CPU differentiates convolutions ~20x slower inside a rolled ``lax.scan``; a U-Net with
  ``conv_grads='auto'`` then uses its 'matmul' gradients (same values; models.unet.conv3x3).
  """
  fully_unrolled = unroll is True or int(unroll) >= int(num_clicks) - 1
  if (
    getattr(model, 'conv_grads', None) == 'auto'
    and not fully_unrolled
    and hasattr(model, 'clone')
    and jax.default_backend() == 'cpu'
  ):
    return model.clone(conv_grads='matmul')
  return model


def make_session(
  model: Any,
  spec: SessionSpec,
  rule: rules.Rule,
  *,
  tx=None,
  stream_axes: Sequence[Any] | None = None,
  jit: bool = True,
  unroll: int | bool = 1,
) -> Callable:
  """Builds ``session(state, image, gt, key) -> (state, SessionOutput)``.

  Args:
    model: a flax module (its ``apply``) or ``apply_fn(params, x (N, H, W, Cin)) -> logits (N, H, W, K)``.
    spec: the :class:`~yiplearn.interactive.spec.SessionSpec` (classes, T, policy, encoding, report).
    rule: the method (``rules.make(name)`` or any :class:`~yiplearn.interactive.rules.Rule`).
    tx: optimiser with the structure of the one of ``rules.init_state`` (default
      ``rules.make_optimizer()``; its learning rate is read from the state).
    stream_axes: if given, ``vmap`` in_axes for (state, image, gt, key), e.g. ``(0, None, None, 0)`` for
      independent streams (seeds / learning rates) on the same image.
    jit: jit with the state donated (default). With ``jit=False`` the raw function is returned.
    unroll: ``lax.scan`` unrolling of the click loop (``True``: full); see :func:`model_for_loop`.

  Inputs: image (H, W, C) float32, gt (H, W) int class map, key a PRNG key. The state is donated: keep no
  references to the passed state.
  """
  spec = spec.validate()
  model = model_for_loop(model, spec.num_clicks, unroll)
  if getattr(model, 'num_classes', spec.num_classes) != spec.num_classes:
    raise errors.invalid('spec.num_classes', spec.num_classes, f"the model's {model.num_classes}")
  env = step.Env(_apply_fn(model), tx or rules.make_optimizer(), spec)
  T, K = int(spec.num_clicks), int(spec.num_classes)

  def session(state: rules.State, image: jax.Array, gt: jax.Array, key: jax.Array):
    checks.pixel_dtype('image', image)  # static dtypes, checked at trace time
    checks.label_dtype('gt', gt)
    image = jnp.asarray(image, jnp.float32)
    gt = jnp.asarray(gt, jnp.int32)
    if image.ndim != 3 or gt.shape != image.shape[:2]:
      raise errors.invalid('image/gt', (image.shape, gt.shape), '(H, W, C) and (H, W)')
    step0, skipped0 = state.step, state.skipped
    coord, label, valid = user.first_click(
      step.click_key(key, 1), gt, policy=spec.policy, tie_break=spec.tie_break
    )
    state, view, loss0 = step.start(rule, env, state, image, coord, label, valid, key)

    def body(carry, t):
      """Show and score P_{t+1} (slot t), place click t+2 and run its hooks."""
      state, view = carry
      view = step.show(rule, env, state.params, view)
      d, u = step.score(spec, view.pred, gt)
      c, lab, v = user.correction_click(
        step.click_key(key, t + 2), gt, view.pred, K, policy=spec.policy, tie_break=spec.tie_break
      )
      view = step.place(spec, view, c, lab, v)
      view = step.propose(rule, env, state.params, view)
      state, loss = step.click_hooks(rule, env, state, view)
      return (state, view._replace(pullback=None)), (d, u, loss)

    (state, view), (ds, us, ls) = jax.lax.scan(
      body, (state, view), jnp.arange(T - 1), unroll=unroll
    )
    view = step.show(rule._replace(uses_vjp=False), env, state.params, view)
    d, u = step.score(spec, view.pred, gt)
    state, image_loss = step.finish(rule, env, state, view, gt)
    out = SessionOutput(
      dice=jnp.concatenate([ds, d[None]]),
      union_dice=jnp.concatenate([us, u[None]]),
      clicks=view.clicks,
      click_loss=jnp.concatenate([loss0[None], ls]),
      image_loss=image_loss,
      updates=state.step - step0,
      skipped=state.skipped - skipped0,
      final_pred=view.pred,
    )
    return state, out

  fn = session
  if stream_axes is not None:
    fn = jax.vmap(fn, in_axes=tuple(stream_axes))
  return jax.jit(fn, donate_argnums=(0,)) if jit else fn


def sharded_session(
  model: Any,
  spec: SessionSpec,
  rule: rules.Rule,
  mesh: Any,
  *,
  axis: str | None = None,
  tx=None,
  unroll: int | bool = 1,
) -> Callable:
  """:func:`make_session` over independent streams, the stream axis split over mesh ``axis``.

  ``session(states, image, gt, keys) -> (states, outputs)``: states and keys carry a leading stream
  axis S (any S: padded to a multiple of the axis size and stripped); the image and its ground truth
  are shared by every stream. Jitted with the states donated. Per stream the numbers are those of the
  unsharded vmapped session (each device runs the same program on its streams).
  """
  in_axes = (0, None, None, 0)
  fn = make_session(model, spec, rule, tx=tx, stream_axes=in_axes, jit=False, unroll=unroll)
  return jax.jit(parallel.shard_vmapped(fn, mesh, in_axes, axis=axis), donate_argnums=(0,))


def run_stream(
  session: Callable,
  state: rules.State,
  images: Any,
  gts: Any,
  key: jax.Array,
  *,
  start_index: int = 0,
  callback: Callable[[int, dict], None] | None = None,
) -> tuple[rules.State, list[dict[str, np.ndarray]]]:
  """Runs ``session`` over a stream of images on the host, in order (the online protocol).

  Args:
    session: from :func:`make_session`.
    state: initial AdaptState (donated to the first call).
    images: sequence / array (N, H, W, C); gts: (N, H, W) int.
    key: stream key; image i uses ``fold_in(key, start_index + i)`` (resumable).
    callback: optional ``callback(image_index, result)`` after each image (e.g. progress, checkpoints).
  Returns: (final state, per-image results as dicts of numpy arrays, SessionOutput fields flattened with
    ``clicks`` split into ``click_coords``, ``click_labels``, ``click_valid``).
  """
  if len(images) != len(gts):
    raise errors.invalid('images/gts', (len(images), len(gts)), 'as many masks as images')
  if isinstance(
    images, np.ndarray
  ):  # host arrays: NaN/Inf pixels are refused before the jitted session
    checks.image_batch('images', images)
  results = []
  for i in range(len(images)):
    index = start_index + i
    state, out = session(
      state,
      jnp.asarray(images[i], jnp.float32),
      jnp.asarray(gts[i], jnp.int32),
      jax.random.fold_in(key, index),
    )
    out = jax.device_get(out)
    res = {
      name: np.asarray(getattr(out, name)) for name in SessionOutput._fields if name != 'clicks'
    }
    res.update(
      click_coords=np.asarray(out.clicks.coords),
      click_labels=np.asarray(out.clicks.labels),
      click_valid=np.asarray(out.clicks.valid),
      index=np.asarray(index),
    )
    if callback is not None:
      callback(index, res)
    results.append(res)
  return state, results
