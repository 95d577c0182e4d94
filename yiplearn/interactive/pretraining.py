"""Click pre-training of the interactive U-Net (DESIGN.md 1.1, "Click pre-training"): the jitted step.

Per sample a random number of clicks n in [1, spec.num_clicks]: one click in the ground truth, a
prediction from it (no gradient), then clicks in that prediction's error components, chosen by
``interactive/sampler.py`` ('paper' [default] or the released code's 'released'); the input is built by
the click step (``step.build_input``: with ``spec.prev_mask`` the previous-mask channel holds the first
prediction's foreground when n > 1, zeros otherwise, as in a session); the loss is DiceFocal + beta CCG
over all n clicks (``rules.objective``), optimised through ``optim.guarded_update`` (a non-finite step
is skipped and counted). The program around it is ``yiplearn/experiments/pretrain.py``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import optax

from yiplearn import clicks as clicks_lib
from yiplearn import errors, optim, parallel
from yiplearn.interactive import rules, step
from yiplearn.interactive import sampler as sampler_lib
from yiplearn.interactive.spec import Loss, SessionSpec

__all__ = [
  'SCHEDULES',
  'RELEASED_LR_STEPS',
  'make_optimizer',
  'init_state',
  'sample_training_clicks',
  'make_train_step',
]


SCHEDULES = ('step', 'released')
# The released code's LambdaLR: lr x 1 / 0.5 / 0.25 / 0.1 / 0.01 from these steps on.
RELEASED_LR_STEPS = ((45_000, 0.5), (55_000, 0.25), (65_000, 0.1), (75_000, 0.01))


def make_optimizer(
  lr: float, decay_every: int, decay_rate: float, schedule: str = 'step'
) -> optax.GradientTransformation:
  """Adam with a step decay.

  ``schedule='step'`` [default]: lr * decay_rate ** floor(step / decay_every). ``'released'``: the
  authors' piecewise-constant multipliers :data:`RELEASED_LR_STEPS` (decay_every/rate unused).
  """
  if not lr > 0:
    raise errors.invalid('optim.lr', lr, 'a positive learning rate')
  if schedule not in SCHEDULES:
    raise errors.invalid('optim.schedule', schedule, f'one of {SCHEDULES}')
  if schedule == 'released':
    scales, last = {}, 1.0
    for boundary, factor in RELEASED_LR_STEPS:  # optax multiplies the scales cumulatively
      scales[boundary], last = factor / last, factor
    return optax.adam(optax.piecewise_constant_schedule(lr, scales))
  decay = optax.exponential_decay(
    lr, transition_steps=max(int(decay_every), 1), decay_rate=float(decay_rate), staircase=True
  )
  return optax.adam(decay)


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
  n: jax.Array,
  *,
  sampler: str = 'paper',
  min_area: int | Sequence[int] = 150,
) -> tuple[clicks_lib.Clicks, jax.Array]:
  """Clicks for one training sample and the previous prediction its input shows.

  ``sampler.pretraining_clicks`` chooses them (first click, the model's prediction from it through the
  click step, then clicks in its error components); ``n`` valid clicks of capacity
  ``spec.num_clicks``. Returns ``(clicks, prev_pred)``: prev_pred (H, W) int32 is the first click's
  prediction when a training click follows it ('paper': n > 1; 'released': always), else zeros.
  """
  one = spec._replace(num_clicks=1)
  seen = []

  def predict(first):
    x = step.build_input(one, image, first)
    pred = jnp.argmax(step.predict(apply_fn, jax.lax.stop_gradient(params), x), -1)
    seen.append(pred.astype(jnp.int32))
    return seen[-1]

  clicks = sampler_lib.pretraining_clicks(
    key,
    gt,
    predict,
    spec.num_classes,
    spec.num_clicks,
    n,
    policy=spec.policy,
    sampler=sampler,
    tie_break=spec.tie_break,
    min_area=min_area,
  )
  if not seen:  # a 'paper' capacity of 1: nothing but the first click
    return clicks, jnp.zeros(gt.shape, jnp.int32)
  follows = (n > 1) if sampler == 'paper' else jnp.bool_(True)
  return clicks, jnp.where(follows, seen[0], 0)


def make_train_step(
  apply_fn: Callable,
  tx,
  spec: SessionSpec,
  loss: Loss = Loss(),
  *,
  sampler: str = 'paper',
  min_area: int | Sequence[int] = 150,
  mesh=None,
) -> Callable:
  """The jitted ``state, images, masks, key -> state, metrics`` update (state donated).

  Sample i of step s uses key ``split(fold_in(key, s), B)[i]``; its click count n is uniform in
  [1, T], drawn per sample ('paper') or once per batch ('released', the authors' code).
  ``sampler`` and ``min_area``: see ``interactive/sampler.py``. With a ``mesh`` (data parallelism)
  images and masks are split over its first axis and the state, key and metrics are replicated; the
  loss is the mean over the global batch, as on one device.
  """
  spec, loss = spec.validate(), loss.validate()
  if spec.num_clicks < 2:
    raise errors.invalid('clicks.max_clicks', spec.num_clicks, '>= 2 (a GT click + corrections)')
  K, T = int(spec.num_classes), int(spec.num_clicks)
  if sampler not in sampler_lib.SAMPLERS:
    raise errors.invalid('sampler', sampler, f'one of {sampler_lib.SAMPLERS}')

  def per_sample_loss(params, image, gt, clicks, prev):
    logits = step.predict(apply_fn, params, step.build_input(spec, image, clicks, prev))
    seg, ccg = rules.seg_loss(loss, logits, gt, K), rules.ccg(loss, logits, gt, clicks)
    return seg + loss.beta * ccg, (seg, ccg)

  def train_step(state: optim.TrainState, images, masks, key):
    step_key = jax.random.fold_in(key, state.step)
    keys = jax.random.split(step_key, images.shape[0])
    if sampler == 'paper':
      ns = jax.vmap(lambda k: jax.random.randint(jax.random.fold_in(k, 0), (), 1, T + 1))(keys)
    else:
      n = jax.random.randint(jax.random.fold_in(step_key, 2**31 - 1), (), 1, T + 1)
      ns = jnp.full((images.shape[0],), n)
    sample = lambda k, im, gt, n: sample_training_clicks(
      k, state.params, apply_fn, im, gt, spec, n, sampler=sampler, min_area=min_area
    )
    batch_clicks, prev = jax.vmap(sample)(keys, images, masks, ns)

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
