"""Click pre-training of the interactive U-Net (DESIGN.md 1.1, "Click pre-training").

Per sample a random number of clicks n in [1, max_clicks]: one click in the ground truth, a
prediction from it (no gradient), then n - 1 clicks in that prediction's error components
(largest first); the loss is DiceFocal + beta * CCG over all n clicks, optimised with Adam and a
step decay. Augmentation is host-side (grain). Every `eval_every` steps the frozen model is scored
on the validation split with the simulated user (Dice after every click, `val/dice@k`), and the
best checkpoint by `config.select_metric` is kept beside the latest ones.

Writes `checkpoints/` (latest, resumable), `best/` (best validation checkpoint), `metrics.jsonl`,
TensorBoard events and `results/pretrain_val.{md,csv,json}` (every validation since step 0, also
after a resume, with the number of training steps skipped as non-finite so far).
"""

from __future__ import annotations

import functools
import os
import time
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging

from yiplearn import clicks as clicks_lib
from yiplearn import losses, parallel
from yiplearn.data import pipeline
from yiplearn.experiments import seg_common
from yiplearn.interactive import updates, user
from yiplearn.io import checkpoints, progress, tables, writers


class TrainState(NamedTuple):
  params: Any
  opt_state: Any
  step: jax.Array
  skipped: jax.Array


def make_optimizer(optim: ml_collections.ConfigDict) -> optax.GradientTransformation:
  """Adam with a step decay: lr * decay_rate ** floor(step / decay_every)."""
  if optim.lr <= 0:
    raise ValueError(f'optim.lr={optim.lr}: expected a positive learning rate')
  schedule = optax.exponential_decay(
    optim.lr,
    transition_steps=max(int(optim.decay_every), 1),
    decay_rate=float(optim.decay_rate),
    staircase=True,
  )
  return optax.adam(schedule)


def sample_training_clicks(key, params, apply_fn, image, gt, *, num_classes, max_clicks, click_cfg):
  """Clicks for one training sample: a GT click, a prediction from it, then error clicks.

  Returns a Clicks pytree of capacity `max_clicks` with a uniformly random number of valid clicks
  in [1, max_clicks] (click 1 always valid when the ground truth has a foreground).
  """
  k_first, k_more, k_n = jax.random.split(key, 3)
  coord, label, valid = user.first_click(k_first, gt, policy=click_cfg.policy)
  first = clicks_lib.add_click(clicks_lib.empty_clicks(1), 0, coord, label, valid)
  x = clicks_lib.model_input(
    image,
    first,
    num_classes,
    encoding=click_cfg.encoding,
    sigma=click_cfg.sigma,
    radius=click_cfg.radius,
  )
  pred = jnp.argmax(apply_fn(jax.lax.stop_gradient(params), x[None])[0], axis=-1).astype(jnp.int32)
  more = user.simulate_clicks(
    k_more, gt, pred, num_classes, max_clicks - 1, policy=click_cfg.policy
  )
  n_more = jax.random.randint(k_n, (), 0, max_clicks)  # 0 .. max_clicks-1 extra clicks
  more = clicks_lib.select(more, jnp.arange(max_clicks - 1) < n_more)
  return clicks_lib.Clicks(
    coords=jnp.concatenate([first.coords, more.coords]),
    labels=jnp.concatenate([first.labels, more.labels]),
    valid=jnp.concatenate([first.valid, more.valid]),
  )


def make_train_step(
  apply_fn, tx, *, num_classes: int, config: ml_collections.ConfigDict, mesh=None
):
  """The jitted `state, images, masks, key -> state, metrics` update (state donated).

  With a `mesh` (data parallelism) images and masks are split over its first axis and the state,
  key and metrics are replicated; the loss is the mean over the global batch, as on one device.
  """
  click_cfg, loss_cfg, max_clicks = config.clicks, config.loss, int(config.clicks.max_clicks)

  def per_sample_loss(params, image, gt, clicks):
    x = clicks_lib.model_input(
      image,
      clicks,
      num_classes,
      encoding=click_cfg.encoding,
      sigma=click_cfg.sigma,
      radius=click_cfg.radius,
    )
    logits = apply_fn(params, x[None])[0]
    seg = losses.dice_focal(logits, gt, num_classes, alpha=loss_cfg.alpha, gamma=loss_cfg.gamma)
    ccg = losses.ccg_loss(
      logits, gt, clicks, sigma=loss_cfg.ccg_sigma, variant=loss_cfg.ccg_variant
    )
    return seg + loss_cfg.beta * ccg, (seg, ccg)

  def step(state: TrainState, images, masks, key):
    keys = jax.random.split(jax.random.fold_in(key, state.step), images.shape[0])
    sample = functools.partial(
      sample_training_clicks,
      apply_fn=apply_fn,
      num_classes=num_classes,
      max_clicks=max_clicks,
      click_cfg=click_cfg,
    )
    batch_clicks = jax.vmap(lambda k, im, gt: sample(k, state.params, image=im, gt=gt))(
      keys, images, masks
    )

    def loss_fn(params):
      total, (seg, ccg) = jax.vmap(per_sample_loss, in_axes=(None, 0, 0, 0))(
        params, images, masks, batch_clicks
      )
      return jnp.mean(total), (jnp.mean(seg), jnp.mean(ccg))

    (loss, (seg, ccg)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    new_state = updates.guarded_update(
      tx, state, loss, grads
    )  # a non-finite step is skipped and counted
    metrics = {
      'loss': loss,
      'dice_focal': seg,
      'ccg': ccg,
      'clicks': jnp.mean(jnp.sum(batch_clicks.valid, axis=-1).astype(jnp.float32)),
    }
    return new_state, metrics

  if mesh is None:
    return jax.jit(step, donate_argnums=(0,))
  rep, batch = parallel.replicated(mesh), parallel.batch_sharding(mesh)
  return jax.jit(
    step, in_shardings=(rep, batch, batch, rep), out_shardings=(rep, rep), donate_argnums=(0,)
  )


def init_state(
  config: ml_collections.ConfigDict, model, image_channels: int, num_classes: int, tx, key
):
  size = int(config.data.image_size) or 64
  x = jnp.zeros(
    (1, size, size, seg_common.input_channels(image_channels, num_classes, config.clicks.prev_mask))
  )
  params = jax.jit(model.init)(
    key, x
  )  # one compiled init: eager init dispatches op by op (slow on CPU)
  return TrainState(
    params=params,
    opt_state=tx.init(params),
    step=jnp.zeros((), jnp.int32),
    skipped=jnp.zeros((), jnp.int32),
  )


def make_augment(config: ml_collections.ConfigDict):
  if not config.augment.enabled:
    return None
  from yiplearn.data.augment import SegAugment  # pylint: disable=g-import-not-at-top

  gamma = (1.0, 1.0) if config.data.norm == 'zscore' else tuple(config.augment.gamma_range)
  return SegAugment(
    flip_lr=config.augment.flip_lr,
    affine=config.augment.affine,
    max_rotate=config.augment.max_rotate,
    scale_range=tuple(config.augment.scale_range),
    brightness=config.augment.brightness,
    contrast_range=tuple(config.augment.contrast_range),
    gamma_range=gamma,
    p_noise=config.augment.p_noise,
    noise_std=config.augment.noise_std,
  )


def validate(config: ml_collections.ConfigDict) -> None:
  """Checks the fields a user most often gets wrong, with one message each."""
  if int(config.optim.batch_size) < 1:
    raise ValueError(f'optim.batch_size={config.optim.batch_size}: expected a positive integer')
  if not float(config.optim.lr) > 0:
    raise ValueError(f'optim.lr={config.optim.lr}: expected a positive learning rate')
  if int(config.steps) < 1:
    raise ValueError(f'steps={config.steps}: expected a positive number of training steps')
  if int(config.clicks.max_clicks) < 2:
    raise ValueError(
      f'clicks.max_clicks={config.clicks.max_clicks}: expected at least 2 (a GT click + corrections)'
    )
  if int(config.num_classes) < 2:
    raise ValueError(
      f'num_classes={config.num_classes}: expected at least 2 (background + one class)'
    )
  ks = sorted({k for k in (1, 5, int(config.eval_clicks)) if 1 <= k <= int(config.eval_clicks)})
  allowed = [f'{n}@{k}' for n in ['dice', *dict(config.report)] for k in ks] + [
    f'{n}_auc' for n in dict(config.report)
  ]
  if config.select_metric not in allowed:
    raise ValueError(
      f'select_metric={config.select_metric!r}: expected one of {allowed} (eval_clicks='
      f'{config.eval_clicks})'
    )
  for name, classes in dict(config.report).items():
    bad = [c for c in classes if not 0 < int(c) < int(config.num_classes)]
    if bad:
      raise ValueError(
        f'report.{name}={list(classes)}: expected foreground classes in [1, {config.num_classes})'
      )


def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Pre-trains (or resumes) the click model; returns the best validation metrics and paths."""
  validate(config)
  mesh = parallel.mesh_from_config(
    config.get('mesh', None)
  )  # data parallel over all devices by default
  parallel.check_divisible('optim.batch_size', int(config.optim.batch_size), mesh)
  from yiplearn.interactive import evaluation  # pylint: disable=g-import-not-at-top

  num_classes = int(config.num_classes)
  train = seg_common.load_segmentation(config.data, workdir, split=config.data.split)
  val = seg_common.load_segmentation(config.data, workdir, split=config.data.val_split)
  if config.val_images:
    val = seg_common.take(val, int(config.val_images))
  model = seg_common.make_unet(config.model, num_classes)
  tx = make_optimizer(config.optim)
  key = jax.random.PRNGKey(int(config.seed))
  state = init_state(
    config, model, train['images'].shape[-1], num_classes, tx, jax.random.fold_in(key, 0)
  )
  state, key = parallel.to_global(
    (state, key), parallel.replicated(mesh)
  )  # the same on every process
  ckpt = checkpoints.Checkpointer(
    os.path.join(workdir, 'checkpoints'), max_to_keep=int(config.keep_checkpoints)
  )
  best_ckpt = checkpoints.Checkpointer(os.path.join(workdir, 'best'), max_to_keep=1)
  best = {'metric': -1.0, 'step': -1}
  val_rows: list[
    dict[str, Any]
  ] = []  # every evaluation so far (kept in the checkpoint: complete after a resume)
  if ckpt.latest_step() is not None:
    state, extra = ckpt.restore(None, state)
    best = extra.get('best', best)
    val_rows = [row for row in extra.get('val_rows', []) if row['step'] <= int(state.step)]
    logging.info('resumed pre-training at step %d from %s', int(state.step), ckpt.directory)

  source = pipeline.ArraySource({'image': train['images'], 'mask': train['masks']})
  loader = pipeline.make_loader(
    source,
    batch_size=int(config.optim.batch_size),
    seed=int(config.seed),
    shuffle=True,
    num_epochs=None,
    transform=make_augment(config),
    drop_remainder=True,
    process_rows=True,
  )  # each process loads its rows of the global batch
  train_step = make_train_step(model.apply, tx, num_classes=num_classes, config=config, mesh=mesh)
  evaluate = evaluation.make_evaluator(
    model.apply,
    num_classes=num_classes,
    num_clicks=int(config.eval_clicks),
    click_cfg=config.clicks,
    report=dict(config.report),
  )
  writer = writers.MetricWriter(workdir)
  steps = int(config.steps)
  prog = progress.Progress(steps, 'pre-training steps', start=int(state.step))
  t0 = time.perf_counter()
  while int(state.step) < steps:
    step = int(state.step)
    batch = loader[step]
    batch = parallel.from_process_local(
      {
        'image': np.asarray(batch['image'], np.float32),
        'mask': np.asarray(batch['mask'], np.int32),
      },
      parallel.batch_sharding(mesh),
    )
    state, metrics = train_step(state, batch['image'], batch['mask'], key)
    prog.update()
    done = step + 1
    if done % int(config.log_every) == 0 or done == steps:
      writer.write(
        done,
        {f'train/{k}': v for k, v in metrics.items()}
        | {
          'train/skipped': state.skipped,
          'train/steps_per_s': done / (time.perf_counter() - t0 + 1e-9),
        },
      )
    if done % int(config.eval_every) == 0 or done == steps:
      scores = evaluate(
        parallel.local_copy(state.params),
        val['images'],
        val['masks'],
        jax.random.fold_in(parallel.local_copy(key), 10**6),
      )  # on one device per process
      writer.write(done, {f'val/{k}': v for k, v in scores.items()})
      metric = float(scores[config.select_metric])
      val_rows.append(
        {'step': done, **{k: float(v) for k, v in scores.items()}, 'skipped': int(state.skipped)}
      )  # training steps skipped as non-finite so far
      if metric > best['metric']:
        best = {'metric': metric, 'step': done}
        best_ckpt.save(done, state.params, extra={'best': best, 'scores': val_rows[-1]})
      logging.info(
        'step %d: %s (best %s=%.4f at step %d)',
        done,
        ', '.join(f'{k}={float(v):.4f}' for k, v in scores.items()),
        config.select_metric,
        best['metric'],
        best['step'],
      )
    if done % int(config.checkpoint_every) == 0 or done == steps:
      ckpt.save(done, state, extra={'best': best, 'val_rows': val_rows})
  writer.close()
  if val_rows:
    tables.write_table(
      os.path.join(workdir, 'results', 'pretrain_val'),
      val_rows,
      title=f'Pre-training validation ({config.data.name}, {config.eval_clicks} simulated clicks)',
    )
  return {
    'best': best,
    'best_dir': best_ckpt.directory,
    'skipped': int(state.skipped),
    'image_channels': int(train['images'].shape[-1]),
  }
