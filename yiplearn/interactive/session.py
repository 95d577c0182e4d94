"""The whole-image interactive session as ONE jitted function (DESIGN.md 1.1, "Online protocol").

``session(state, image, gt, key) -> (new_state, SessionOutput)``:

1. (episodic methods) reset params and optimiser state to the pre-trained ones;
2. click 1 from the ground truth (largest foreground component, against an empty prediction);
3. ``lax.scan`` over clicks t = 1..T: [IA+SA / Tent update on the current input], predict P_t = f(I, C_t),
   score it (Dice per class and per report union), simulate click t+1 in P_t's largest error component and,
   for MI methods, the Mid-Interaction update;
4. Post-Interaction (P_final = argmax P_T) or the oracle update; both after the image was scored.

No host round trip per click. Forward passes are shared where exact: the displayed prediction
f(I, C_t; theta_t) is computed once with ``jax.vjp`` and its pull-back gives the gradient of the next MI loss
(whose P_prev is exactly that prediction), so an MI click costs two forward and one backward pass.

A Mid-Interaction update is made only when the new click is valid (the simulated user found an error);
without one the image is finished and nothing is counted. ``key`` drives the clicks: click t uses
``fold_in(key, t)``, PI's artificial clicks ``fold_in(key, T + 1)``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from yiplearn import checks, metrics
from yiplearn import clicks as clicks_lib
from yiplearn.interactive import updates as U
from yiplearn.interactive import user

__all__ = ['SessionOutput', 'make_session', 'run_stream']


class SessionOutput(NamedTuple):
  """Per-image results (prepend stream axes under vmap).

  Attributes:
    dice: (T, K) float32 Dice of every class after each click (background included).
    union_dice: (T, R) float32 Dice of each ``hp.report_unions`` union after each click.
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


def make_session(
  model: Any,
  hp: U.HParams,
  *,
  tx=None,
  stream_axes: Sequence[Any] | None = None,
  jit: bool = True,
  unroll: int | bool = 1,
) -> Callable:
  """Builds ``session(state, image, gt, key) -> (state, SessionOutput)``.

  Args:
    model: a flax module (its ``apply``) or ``apply_fn(params, x (N, H, W, Cin)) -> logits (N, H, W, K)``.
    hp: static :class:`~yiplearn.interactive.updates.HParams` (method, T, losses, clicks, lr, ...).
    tx: optimiser; default ``make_optimizer(hp)`` (must match the one of ``init_state``).
    stream_axes: if given, ``vmap`` in_axes for (state, image, gt, key), e.g. ``(0, None, None, 0)`` for
      independent streams (seeds / learning rates) on the same image.
    jit: jit with the state donated (default). With ``jit=False`` the raw function is returned.
    unroll: ``lax.scan`` unrolling of the click loop (``True``: full). XLA:CPU differentiates convolutions
      ~20x slower inside a rolled scan than outside; a U-Net with ``conv_grads='auto'`` is therefore switched to
      its forward-style gradients ('matmul') on CPU unless the loop is fully unrolled, which makes the rolled
      loop about as fast as the unrolled one at a fraction of its compile time.

  Inputs: image (H, W, C) float32, gt (H, W) int class map, key a PRNG key. The state is donated: keep no
  references to the passed state.
  """
  hp = hp.validate()
  rule = hp.rule
  tx = tx or U.make_optimizer(hp)
  fully_unrolled = unroll is True or int(unroll) >= int(hp.num_clicks) - 1
  if (
    getattr(model, 'conv_grads', None) == 'auto'
    and not fully_unrolled
    and hasattr(model, 'clone')
    and jax.default_backend() == 'cpu'
  ):
    # XLA:CPU differentiates convolutions ~20x slower inside a rolled scan; the U-Net's forward-style
    # gradients avoid that (same values; models.unet.conv3x3).
    model = model.clone(conv_grads='matmul')
  apply_fn = _apply_fn(model)
  if getattr(model, 'num_classes', hp.num_classes) != hp.num_classes:
    raise ValueError(
      f"hp.num_classes: got {hp.num_classes}, expected the model's {model.num_classes}"
    )
  T, K = int(hp.num_clicks), int(hp.num_classes)
  unions = hp.report_unions

  def score(pred, gt):
    d = metrics.dice_per_class(pred, gt, K)
    u = jnp.stack([metrics.foreground_dice(pred, gt, cs) for _, cs in unions])
    return d, u

  def per_click_update(state, cl, x):
    """IA+SA / Tent: an update on the current input before the prediction is shown."""
    if rule.per_click == 'ia_sa':
      return U.ia_sa_step(apply_fn, tx, hp, state, x, cl)
    if rule.per_click == 'tent':
      return U.tent_step(apply_fn, tx, hp, state, x)
    return state, jnp.float32(0.0)

  def session(state: U.AdaptState, image: jax.Array, gt: jax.Array, key: jax.Array):
    checks.pixel_dtype('image', image)  # static dtypes, checked at trace time
    checks.label_dtype('gt', gt)
    image = jnp.asarray(image, jnp.float32)
    gt = jnp.asarray(gt, jnp.int32)
    if image.ndim != 3 or gt.shape != image.shape[:2]:
      raise ValueError(f'image/gt: expected (H, W, C) and (H, W), got {image.shape} and {gt.shape}')
    if rule.episodic:
      state = U.episodic_reset(state)
    step0, skipped0 = state.step, state.skipped
    coord, label, valid = user.first_click(jax.random.fold_in(key, 1), gt, policy=hp.policy)
    cl = clicks_lib.add_click(clicks_lib.empty_clicks(T), 0, coord, label, valid)
    x = U.make_input(hp, image, cl)

    def click(state, cl, x, t, last: bool):
      """Slot t (click t+1) is placed: show and score P_{t+1}; unless last, place click t+2 (+ MI)."""
      state, pc_loss = per_click_update(state, cl, x)
      if rule.mi and not last:
        logits, pullback = jax.vjp(lambda p: U.predict(apply_fn, p, x), state.params)
      else:
        logits, pullback = U.predict(apply_fn, state.params, x), None
      pred = jnp.argmax(logits, -1).astype(jnp.int32)
      d, u = score(pred, gt)
      if last:
        return (state, cl, x), pred, (d, u, pc_loss, jnp.float32(0.0))
      c2, l2, v2 = user.correction_click(
        jax.random.fold_in(key, t + 2), gt, pred, K, policy=hp.policy
      )
      cl = clicks_lib.add_click(cl, t + 1, c2, l2, v2)
      x_next = U.make_input(hp, image, cl, pred)
      if rule.mi:
        params = jax.lax.stop_gradient(state.params)
        pseudo = jnp.argmax(U.predict(apply_fn, params, x_next), -1).astype(jnp.int32)
        newest = clicks_lib.select(cl, jnp.arange(T) == t + 1)
        mi_loss, dlogits = jax.value_and_grad(
          lambda lg: U.mi_loss_from_logits(hp, lg, pseudo, newest)
        )(logits)
        (grads,) = pullback(dlogits)
        state = U.guarded_update(tx, state, mi_loss, grads, enabled=v2)
        mi_loss = jnp.where(v2, mi_loss, 0.0)
      else:
        mi_loss = jnp.float32(0.0)
      return (state, cl, x_next), pred, (d, u, pc_loss, mi_loss)

    def body(carry, t):
      carry, _, out = click(*carry, t, last=False)
      return carry, out

    (state, cl, x), (ds, us, pls, mls) = jax.lax.scan(
      body, (state, cl, x), jnp.arange(T - 1), unroll=unroll
    )
    (state, cl, x), final_pred, (d, u, pl, _) = click(state, cl, x, T - 1, last=True)
    dice = jnp.concatenate([ds, d[None]])
    union = jnp.concatenate([us, u[None]])
    # Per-click update losses (IA+SA/Tent at slot t) + the MI loss at the slot of the click that triggered it.
    click_loss = jnp.concatenate([pls, pl[None]]) + jnp.concatenate(
      [jnp.zeros((1,), jnp.float32), mls]
    )

    image_loss = jnp.zeros((2,), jnp.float32)
    if rule.pi:
      state, image_loss, _ = U.pi_step(
        apply_fn, tx, hp, state, image, cl, final_pred, jax.random.fold_in(key, T + 1)
      )
    if rule.oracle:
      state, oloss = U.oracle_step(apply_fn, tx, hp, state, x, gt)
      image_loss = image_loss.at[0].set(oloss)
    out = SessionOutput(
      dice=dice,
      union_dice=union,
      clicks=cl,
      click_loss=click_loss,
      image_loss=image_loss,
      updates=state.step - step0,
      skipped=state.skipped - skipped0,
      final_pred=final_pred,
    )
    return state, out

  fn = session
  if stream_axes is not None:
    fn = jax.vmap(fn, in_axes=tuple(stream_axes))
  return jax.jit(fn, donate_argnums=(0,)) if jit else fn


def run_stream(
  session: Callable,
  state: U.AdaptState,
  images: Any,
  gts: Any,
  key: jax.Array,
  *,
  start_index: int = 0,
  callback: Callable[[int, dict], None] | None = None,
) -> tuple[U.AdaptState, list[dict[str, np.ndarray]]]:
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
    raise ValueError(
      f'images/gts: got {len(images)} images and {len(gts)} masks, expected equal lengths'
    )
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
