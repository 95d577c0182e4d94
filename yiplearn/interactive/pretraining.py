"""Click pre-training of the interactive U-Net (DESIGN.md 1.1, "Click pre-training"): the jitted step.

Per sample a random number of clicks n in [1, spec.num_clicks]: one click in the ground truth
(``step.click_key(key, 1)``), a prediction from it (no gradient), then n - 1 clicks in that
prediction's error components (largest first, ``step.click_key(key, 2)``); the input is built by the
click step (``step.build_input``: with ``spec.prev_mask`` the previous-mask channel holds the first
prediction's foreground when n > 1, zeros otherwise, as in a session); the loss is DiceFocal + beta CCG
over all n clicks (``rules.objective``), optimised through ``optim.guarded_update`` (a non-finite step
is skipped and counted). The program around it is ``yiplearn/experiments/pretrain.py``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

from yiplearn import clicks as clicks_lib
from yiplearn import errors, optim, parallel
from yiplearn.interactive import rules, step, user
from yiplearn.interactive.spec import Loss, SessionSpec

__all__ = ['make_optimizer', 'init_state', 'sample_training_clicks', 'make_train_step']


def make_optimizer(lr: float, decay_every: int, decay_rate: float) -> optax.GradientTransformation:
  """Adam with a step decay: lr * decay_rate ** floor(step / decay_every)."""
  if not lr > 0:
    raise errors.invalid('optim.lr', lr, 'a positive learning rate')
  schedule = optax.exponential_decay(
    lr, transition_steps=max(int(decay_every), 1), decay_rate=float(decay_rate), staircase=True
  )
  return optax.adam(schedule)


def init_state(
  model: Any, spec: SessionSpec, image_channels: int, size: int, tx, key
) -> optim.TrainState:
  """Fresh parameters for inputs of ``spec.input_channels(image_channels)`` channels."""
  x = jnp.zeros((1, size, size, spec.input_channels(image_channels)))
  params = jax.jit(model.init)(key, x)  # one compiled init: eager init dispatches op by op
  return optim.init_train_state(params, tx)


def sample_training_clicks(
  key: jax.Array,
  params: Any,
  apply_fn: Callable,
  image: jax.Array,
  gt: jax.Array,
  spec: SessionSpec,
) -> tuple[clicks_lib.Clicks, jax.Array]:
  """Clicks for one training sample and the previous prediction the input shows.

  Returns ``(clicks, prev_pred)``: clicks of capacity ``spec.num_clicks`` with a uniformly random
  number of valid clicks in [1, T] (click 1 valid when the ground truth has a foreground); prev_pred
  (H, W) int32 the first click's prediction when more clicks follow, else zeros.
  """
  T, K = int(spec.num_clicks), int(spec.num_classes)
  coord, label, valid = user.first_click(step.click_key(key, 1), gt, policy=spec.policy)
  first = clicks_lib.add_click(clicks_lib.empty_clicks(1), 0, coord, label, valid)
  one = spec._replace(num_clicks=1)
  logits = step.predict(
    apply_fn, jax.lax.stop_gradient(params), step.build_input(one, image, first)
  )
  pred = jnp.argmax(logits, -1).astype(jnp.int32)
  more = user.simulate_clicks(step.click_key(key, 2), gt, pred, K, T - 1, policy=spec.policy)
  n_more = jax.random.randint(jax.random.fold_in(key, 0), (), 0, T)  # 0 .. T-1 extra clicks
  more = clicks_lib.select(more, jnp.arange(T - 1) < n_more)
  clicks = clicks_lib.Clicks(
    coords=jnp.concatenate([first.coords, more.coords]),
    labels=jnp.concatenate([first.labels, more.labels]),
    valid=jnp.concatenate([first.valid, more.valid]),
  )
  return clicks, jnp.where(n_more > 0, pred, 0)


def make_train_step(
  apply_fn: Callable, tx, spec: SessionSpec, loss: Loss = Loss(), *, mesh=None
) -> Callable:
  """The jitted ``state, images, masks, key -> state, metrics`` update (state donated).

  Sample i of step s uses key ``split(fold_in(key, s), B)[i]``. With a ``mesh`` (data parallelism)
  images and masks are split over its first axis and the state, key and metrics are replicated; the
  loss is the mean over the global batch, as on one device.
  """
  spec, loss = spec.validate(), loss.validate()
  if spec.num_clicks < 2:
    raise errors.invalid('clicks.max_clicks', spec.num_clicks, '>= 2 (a GT click + corrections)')
  K = int(spec.num_classes)

  def per_sample_loss(params, image, gt, clicks, prev):
    logits = step.predict(apply_fn, params, step.build_input(spec, image, clicks, prev))
    seg, ccg = rules.seg_loss(loss, logits, gt, K), rules.ccg(loss, logits, gt, clicks)
    return seg + loss.beta * ccg, (seg, ccg)

  def train_step(state: optim.TrainState, images, masks, key):
    keys = jax.random.split(jax.random.fold_in(key, state.step), images.shape[0])
    sample = lambda k, im, gt: sample_training_clicks(k, state.params, apply_fn, im, gt, spec)
    batch_clicks, prev = jax.vmap(sample)(keys, images, masks)

    def loss_fn(params):
      total, (seg, ccg) = jax.vmap(per_sample_loss, in_axes=(None, 0, 0, 0, 0))(
        params, images, masks, batch_clicks, prev
      )
      return jnp.mean(total), (jnp.mean(seg), jnp.mean(ccg))

    (value, (seg, ccg)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    new_state = optim.guarded_update(tx, state, value, grads)
    metrics = {
      'loss': value,
      'dice_focal': seg,
      'ccg': ccg,
      'clicks': jnp.mean(jnp.sum(batch_clicks.valid, axis=-1).astype(jnp.float32)),
    }
    return new_state, metrics

  if mesh is None:
    return jax.jit(train_step, donate_argnums=(0,))
  rep, batch = parallel.replicated(mesh), parallel.batch_sharding(mesh)
  return jax.jit(
    train_step,
    in_shardings=(rep, batch, batch, rep),
    out_shardings=(rep, rep),
    donate_argnums=(0,),
  )
