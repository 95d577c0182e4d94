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

import os
import time
from typing import Any

import jax
import ml_collections
import numpy as np
import optax
from absl import logging

from yiplearn import errors, parallel
from yiplearn.data import pipeline
from yiplearn.experiments import interactive_setup, seg_common
from yiplearn.interactive import evaluation, pretraining, rules
from yiplearn.io import checkpoints, loop, tables, writers


def make_optimizer(optim: ml_collections.ConfigDict) -> optax.GradientTransformation:
  """The core's Adam with step decay from the `optim` section (lr, decay_every, decay_rate, schedule)."""
  return pretraining.make_optimizer(
    float(optim.lr),
    int(optim.decay_every),
    float(optim.decay_rate),
    str(optim.get('schedule', rules.defaults(pretraining.make_optimizer)['schedule'])),
  )


def make_train_step(apply_fn, tx, config: ml_collections.ConfigDict, mesh=None):
  """The core's jitted train step with this config's clicks.*, loss.* and sampler.*."""
  spec = interactive_setup.spec_from_config(config)
  loss = interactive_setup.loss_from_config(config)
  sampler = interactive_setup.sampler_from_config(config)
  return pretraining.make_train_step(apply_fn, tx, spec, loss, mesh=mesh, **sampler)


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
  """Checks the fields a user most often gets wrong, with one message each (a UserError)."""
  if int(config.optim.batch_size) < 1:
    raise errors.invalid('optim.batch_size', config.optim.batch_size, 'a positive integer')
  if not float(config.optim.lr) > 0:
    raise errors.invalid('optim.lr', config.optim.lr, 'a positive learning rate')
  if int(config.steps) < 1:
    raise errors.invalid('steps', config.steps, 'a positive number of training steps')
  if int(config.clicks.max_clicks) < 2:
    raise errors.invalid(
      'clicks.max_clicks', config.clicks.max_clicks, 'at least 2 (a GT click + corrections)'
    )
  if int(config.num_classes) < 2:
    raise errors.invalid('num_classes', config.num_classes, 'at least 2 (background + one class)')
  interactive_setup.spec_from_config(config)  # clicks.*, report
  interactive_setup.loss_from_config(config)  # loss.*
  ks = evaluation.clicks_reported(int(config.eval_clicks))
  allowed = [f'{n}@{k}' for n in ['dice', *dict(config.report)] for k in ks] + [
    f'{n}_auc' for n in dict(config.report)
  ]
  if config.select_metric not in allowed:
    raise errors.invalid(
      'select_metric', config.select_metric, f'one of {allowed} (eval_clicks={config.eval_clicks})'
    )


def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Pre-trains (or resumes) the click model; returns the best validation metrics and paths."""
  validate(config)
  mesh = parallel.mesh_from_config(
    config.get('mesh', None)
  )  # data parallel over all devices by default
  parallel.check_divisible('optim.batch_size', int(config.optim.batch_size), mesh)

  num_classes = int(config.num_classes)
  train = seg_common.load_segmentation(config.data, workdir, split=config.data.split)
  val = seg_common.load_segmentation(config.data, workdir, split=config.data.val_split)
  available = len(val['images'])
  if config.val_images:
    if int(config.val_images) > available:
      logging.warning(
        'val_images=%d, but the validation split %r has only %d images: validating on all %d',
        int(config.val_images),
        config.data.val_split,
        available,
        available,
      )
    val = seg_common.take(val, int(config.val_images))
  logging.info(
    'pre-training on %d images (%s split %r), validating on %d of %d (split %r), %d steps of %d',
    len(train['images']),
    config.data.name,
    config.data.split,
    len(val['images']),
    available,
    config.data.val_split,
    int(config.steps),
    int(config.optim.batch_size),
  )
  model = seg_common.make_unet(config.model, num_classes)
  tx = make_optimizer(config.optim)
  key = jax.random.PRNGKey(int(config.seed))
  size = int(config.data.image_size) or int(train['images'].shape[1])
  spec = interactive_setup.spec_from_config(config)
  state = pretraining.init_state(
    model, spec, train['images'].shape[-1], size, tx, jax.random.fold_in(key, 0)
  )
  state, key = parallel.to_global(
    (state, key), parallel.replicated(mesh)
  )  # the same on every process
  steps = int(config.steps)
  items = loop.ItemLoop(
    os.path.join(workdir, 'checkpoints'),
    steps,
    every=int(config.checkpoint_every),
    desc='pre-training steps',
    save_last=True,  # the last state is the result
    max_to_keep=int(config.keep_checkpoints),
  )
  best_ckpt = checkpoints.Checkpointer(os.path.join(workdir, 'best'), max_to_keep=1)
  state, extra = items.restore(state)
  best = extra.get('best', {'metric': -1.0, 'step': -1})
  # Every evaluation so far (kept in the checkpoint: complete after a resume).
  val_rows: list[dict[str, Any]] = [
    row for row in extra.get('val_rows', []) if row['step'] <= items.start
  ]

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
  train_step = make_train_step(model.apply, tx, config, mesh=mesh)
  # Validation: the session's click step with the frozen rule (previous-mask channel included).
  evaluate = evaluation.make_evaluator(
    model.apply, interactive_setup.spec_from_config(config, int(config.eval_clicks))
  )
  writer = writers.MetricWriter(workdir, resume_step=items.start)
  t0 = time.perf_counter()
  for step in items:
    batch = loader[step]
    batch = parallel.from_process_local(
      {
        'image': np.asarray(batch['image'], np.float32),
        'mask': np.asarray(batch['mask'], np.int32),
      },
      parallel.batch_sharding(mesh),
    )
    state, metrics = train_step(state, batch['image'], batch['mask'], key)
    done = step + 1
    if done % int(config.log_every) == 0 or done == steps:
      writer.write(
        done,
        {f'train/{k}': v for k, v in metrics.items()}
        | {
          'train/skipped': state.skipped,
          'train/steps_per_s': (done - items.start) / (time.perf_counter() - t0 + 1e-9),
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
    items.save(done, state, extra={'best': best, 'val_rows': val_rows})
  items.close()
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
