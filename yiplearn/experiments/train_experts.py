"""Train a shared base model on pooled source domains, then one expert per source domain.

Classifiers (`model.arch` 'resnet' | 'vit', cross-entropy) and segmentation U-Nets (`model.arch`
'unet': image channels only, cross-entropy + soft Dice, `merging.segmentation.SegmentationModel`)
share everything here: the guarded AdamW step, the cosine schedule, checkpoints, resume.

Launch (any merging config; this program only trains):
  python -m launch.run --config configs/merge_digits.py --config.experiment=train_experts \
      --workdir runs/experts_digits      # or configs/merge_seg_lgg.py:quick (segmentation)

Writes to the workdir:
  checkpoints/<family>/{base,expert_<d>,fisher_<d>}/  orbax checkpoints (resumed, not retrained)
  results/expert_accuracy.{md,csv,json}  accuracy (segmentation: mean foreground Dice) of the base and
      every expert on every domain's test split, and the training steps skipped as non-finite
Config fields: seed, data (`merge_data`; segmentation `seg_common.load_domains`), model (arch, widths,
stage_sizes, patch_size, dim, depth, num_heads; unet: widths, bottleneck, norm), train (base_steps,
expert_steps, batch_size, lr, expert_lr, weight_decay, fisher_batches), sources (empty = all domains).
"""

from __future__ import annotations

import functools
import os
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import logging

from yiplearn import errors, losses, optim, parallel
from yiplearn.experiments import merge_data, seg_common
from yiplearn.io import checkpoints, tables
from yiplearn.merging import segmentation, static
from yiplearn.models.classifier import Classifier
from yiplearn.models.resnet import resnet_classifier
from yiplearn.models.vit import vit_classifier


class Family(NamedTuple):
  """A base model, its experts (in `sources` order) and optional diagonal Fisher estimates."""

  model: Classifier | segmentation.SegmentationModel
  sources: list[str]
  base: Any
  experts: list[Any]
  fishers: list[Any] | None
  skipped: dict[str, int] | None = None  # non-finite steps skipped, per 'base' / 'expert_<d>'


ARCHS = ('resnet', 'vit', 'unet')


def is_segmentation(model: Any) -> bool:
  return isinstance(model, segmentation.SegmentationModel)


def make_model(model_cfg: Any, num_classes: int) -> Classifier | segmentation.SegmentationModel:
  arch = model_cfg.get('arch', 'resnet')
  if arch == 'unet':
    return segmentation.SegmentationModel(seg_common.make_unet(model_cfg, num_classes))
  if arch == 'resnet':
    return resnet_classifier(num_classes, tuple(model_cfg.stage_sizes), tuple(model_cfg.widths))
  if arch == 'vit':
    return vit_classifier(
      num_classes,
      int(model_cfg.patch_size),
      int(model_cfg.dim),
      int(model_cfg.depth),
      int(model_cfg.num_heads),
    )
  raise errors.invalid('model.arch', arch, f'one of {ARCHS}')


@functools.lru_cache(maxsize=16)
def make_train_step(model, weight_decay: float = 0.0, mesh=None):
  """Jitted (variables, opt_state, x, y, lr) -> (variables, opt_state, loss), state donated.

  The loss is cross-entropy for a classifier (logits (B, C), y (B,)) and cross-entropy + soft Dice
  (foreground classes) for a segmentation model (logits (B, H, W, C), y (B, H, W)). The step is
  `optim.guarded_apply`: a step whose loss, gradient or learning rate is not finite leaves variables
  and optimiser state unchanged and returns a NaN loss (counted by `train` as skipped).

  AdamW with the learning rate passed per step (a traced scalar), so that one compiled step
  serves the base and every expert of a family (cached per model, weight decay and mesh). With a
  `mesh` (data parallelism) x and y are split over its first axis, everything else replicated;
  BatchNorm statistics and the loss are over the global batch, as on one device."""
  tx = optax.inject_hyperparams(
    lambda learning_rate: optax.chain(
      optax.scale_by_adam(),
      optax.add_decayed_weights(weight_decay),
      optax.scale_by_learning_rate(learning_rate),
    )
  )(learning_rate=0.0)

  def loss_fn(params, variables, x, y):
    v = dict(variables, params=params)
    feats, new_v = model.encode_with_updates(v, x)
    logits = model.head(new_v, feats, train=True)
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
    if logits.ndim == 4:  # segmentation: + soft Dice of the foreground classes
      loss = loss + losses.dice_loss(logits, y, logits.shape[-1])
    return loss, new_v

  def step(variables, opt_state, x, y, lr):
    (loss, new_v), g = jax.value_and_grad(loss_fn, has_aux=True)(
      variables['params'], variables, x, y
    )
    opt_state.hyperparams['learning_rate'] = lr
    guard_loss = jnp.where(jnp.isfinite(lr), loss, jnp.nan)  # a non-finite lr skips the step too
    params, new_opt, ok, _ = optim.guarded_apply(tx, variables['params'], opt_state, guard_loss, g)
    new_v = jax.tree.map(lambda a, b: jnp.where(ok, a, b), new_v, variables)
    return dict(new_v, params=params), new_opt, jnp.where(ok, loss, jnp.nan)

  if mesh is None:
    return tx, jax.jit(step, donate_argnums=(0, 1))
  rep, batch = parallel.replicated(mesh), parallel.batch_sharding(mesh)
  return tx, jax.jit(
    step,
    in_shardings=(rep, rep, batch, batch, rep),
    out_shardings=(rep, rep, rep),
    donate_argnums=(0, 1),
  )


def train(
  model,
  variables: Any,
  x: np.ndarray,
  y: np.ndarray,
  *,
  steps: int,
  batch_size: int,
  lr: float,
  seed: int,
  weight_decay: float = 0.0,
  balance: bool = False,
  flip: bool = False,
  mesh=None,
  stats: dict | None = None,
) -> Any:
  """`steps` AdamW steps (cosine-decayed lr) of the model's loss on (x, y) with reshuffled epochs.

  y: class labels (N,) or segmentation masks (N, H, W) (flipped with their images). `balance`
  (classification only): batches drawn with replacement with probability inversely proportional to the class
  frequency (class-balanced sampling). `flip`: each example flipped left-right with p = 0.5.
  `mesh`: data parallelism over its first axis (None: one device). Every process draws the same
  global batches (same seed) and places only its rows (`parallel.local_rows`); multi-process runs
  return host (numpy) variables, identical on every process. `stats` (a dict), if given, receives
  'skipped': the number of steps skipped for a non-finite loss, gradient or update."""
  tx, step_fn = make_train_step(model, float(weight_decay), mesh)
  schedule = optax.cosine_decay_schedule(lr, max(steps, 1))
  variables = jax.tree.map(jnp.array, variables)
  opt_state = tx.init(variables['params'])
  rng = np.random.default_rng(seed)
  bs = min(batch_size, len(x))
  rows = slice(None)
  if mesh is not None:
    parallel.check_divisible('train.batch_size (or the training set size, if smaller)', bs, mesh)
    rep = parallel.replicated(mesh)
    variables, opt_state = parallel.to_global((variables, opt_state), rep)
    rows = parallel.local_rows(bs)
  order, pos, losses = rng.permutation(len(x)), 0, []
  p = None
  if balance and y.ndim == 1:
    counts = np.bincount(y)
    p = 1.0 / counts[y]
    p = p / p.sum()
  for i in range(steps):
    if p is not None:
      idx = rng.choice(len(x), bs, p=p)
    else:
      if pos + bs > len(order):
        order, pos = rng.permutation(len(x)), 0
      idx = order[pos : pos + bs]
      pos += bs
    xb = x[idx]
    if flip:
      f = rng.random(len(idx)) < 0.5
      xb = np.where(f[:, None, None, None], xb[:, :, ::-1], xb)
    yb = y[idx]
    if flip and yb.ndim == 3:
      yb = np.where(f[:, None, None], yb[:, :, ::-1], yb)
    xb, yb = np.asarray(xb), np.asarray(yb)
    if mesh is None:
      xb, yb, lr_i = jnp.asarray(xb), jnp.asarray(yb), jnp.float32(schedule(i))
    else:
      xb, yb = parallel.from_process_local((xb[rows], yb[rows]), parallel.batch_sharding(mesh))
      lr_i = parallel.to_global(np.float32(schedule(i)), rep)
    variables, opt_state, loss = step_fn(variables, opt_state, xb, yb, lr_i)
    losses.append(loss)
  values = np.asarray([float(np.asarray(l)) for l in losses])
  skipped = int(np.sum(~np.isfinite(values)))
  if stats is not None:
    stats['skipped'] = skipped
  if losses:
    last = values[-10:][np.isfinite(values[-10:])]
    logging.info(
      'trained %d steps (%d skipped as non-finite), final loss %.4f',
      steps,
      skipped,
      float(last.mean()) if last.size else float('nan'),
    )
  if mesh is not None and jax.process_count() > 1:  # host copies: later code runs per process
    return parallel.to_host(variables)
  return parallel.local_copy(variables)  # merges and evaluation then run on one device


@functools.lru_cache(maxsize=16)
def _predict_fn(model):
  return jax.jit(lambda v, b: jnp.argmax(model.apply(v, b), -1))


def predict(model, variables: Any, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
  """Argmax predictions (N,) or (N, H, W) in eval mode (running BatchNorm statistics)."""
  fn = _predict_fn(model)
  return np.concatenate(
    [
      np.asarray(fn(variables, jnp.asarray(x[i : i + batch_size])))
      for i in range(0, len(x), batch_size)
    ]
  )


def accuracy(model, variables: Any, x: np.ndarray, y: np.ndarray) -> float:
  """Classification accuracy; for a segmentation model the mean per-image foreground Dice."""
  if is_segmentation(model):
    return mean_dice(model, variables, x, y)
  return float(np.mean(predict(model, variables, x) == y))


def mean_dice(model, variables: Any, x: np.ndarray, y: np.ndarray, batch_size: int = 32) -> float:
  """Mean over images of `segmentation.dice` (the mean Dice of the foreground classes)."""
  fn = _dice_fn(model)
  sl = lambda a, i: jnp.asarray(a[i : i + batch_size])  # noqa: E731
  d = [np.asarray(fn(variables, sl(x, i), sl(y, i))) for i in range(0, len(x), batch_size)]
  return float(np.mean(np.concatenate(d)))


_dice_fn = functools.lru_cache(16)(
  lambda model: jax.jit(lambda v, x, y: segmentation.dice(model.apply(v, x), y))
)


def _cached(ckpt_root: str, name: str, target: Any, make, extra: dict | None = None) -> Any:
  """Restores checkpoint `<root>/<name>` into `target`'s structure, or computes and saves it.

  `extra` is saved with the checkpoint after `make()` ran (so `make` may add to it, e.g. skip counts)
  and, on a restore, updated in place with the stored one."""
  ckpt = checkpoints.Checkpointer(os.path.join(ckpt_root, name), max_to_keep=1)
  try:
    if ckpt.latest_step() is not None:
      logging.info('restoring %s from %s', name, ckpt.directory)
      state, saved = ckpt.restore(None, target)
      if extra is not None:
        extra.update(saved)
      return state
    state = make()
    ckpt.save(0, state, extra=extra)
    return state
  finally:
    ckpt.close()


def train_family(
  config: Any,
  data: dict,
  num_classes: int,
  sources: list[str],
  ckpt_root: str,
  *,
  with_fisher: bool = False,
) -> Family:
  """Base on pooled `sources`, then one expert per source, fine-tuned from the base (resumable)."""
  for s in sources:
    if s not in data:
      raise errors.invalid('sources entry', s, f'one of {sorted(data)}')
  t = config.train
  model = make_model(config.model, num_classes)
  mesh = parallel.mesh_from_config(config.get('mesh', None))  # data parallel over all devices
  x0 = jnp.asarray(data[sources[0]]['train'][0][:2])
  init = model.init(jax.random.fold_in(jax.random.key(config.seed), 0), x0)
  pooled_x = np.concatenate([data[s]['train'][0] for s in sources])
  pooled_y = np.concatenate([data[s]['train'][1] for s in sources])
  infos = {'base': {'sources': sources}}  # checkpoint extras, with each model's skipped-step count
  base = _cached(
    ckpt_root,
    'base',
    init,
    lambda: train(
      model,
      init,
      pooled_x,
      pooled_y,
      steps=int(t.base_steps),
      batch_size=int(t.batch_size),
      lr=float(t.lr),
      seed=config.seed,
      weight_decay=float(t.get('weight_decay', 0.0)),
      balance=bool(t.get('balance', False)),
      flip=bool(t.get('flip', False)),
      mesh=mesh,
      stats=infos['base'],
    ),
    extra=infos['base'],
  )
  experts, fishers = [], []
  for i, s in enumerate(sources):
    x, y = data[s]['train']
    info = infos[f'expert_{s}'] = {'domain': s}
    e = _cached(
      ckpt_root,
      f'expert_{s}',
      init,
      lambda x=x, y=y, i=i, info=info: train(
        model,
        base,
        x,
        y,
        steps=int(t.expert_steps),
        batch_size=int(t.batch_size),
        lr=float(t.get('expert_lr', t.lr)),
        seed=config.seed + 1 + i,
        weight_decay=float(t.get('weight_decay', 0.0)),
        balance=bool(t.get('balance', False)),
        flip=bool(t.get('flip', False)),
        mesh=mesh,
        stats=info,
      ),
      extra=info,
    )
    experts.append(e)
    if with_fisher:

      def make_fisher(e=e, x=x, i=i):
        bs = int(t.batch_size)
        nb = max(1, int(t.get('fisher_batches', 4)))
        batches = [x[j * bs : (j + 1) * bs] for j in range(nb) if len(x[j * bs : (j + 1) * bs])]
        key = jax.random.fold_in(jax.random.key(config.seed), 100 + i)
        if is_segmentation(model):
          return segmentation.diagonal_fisher(model, e, batches, key)
        lp = lambda p, b: jax.nn.log_softmax(model.apply(dict(e, params=p), b))
        return static.diagonal_fisher(lp, e['params'], batches, key=key)

      fishers.append(_cached(ckpt_root, f'fisher_{s}', init['params'], make_fisher))
  skipped = {name: int(info.get('skipped', 0)) for name, info in infos.items()}
  return Family(model, list(sources), base, experts, fishers if with_fisher else None, skipped)


def validate(config: Any) -> None:
  """The training fields (`config.train`), checked before any data is built (also by merge_online)."""
  t = config.train
  for name, value in (
    ('train.batch_size', t.batch_size),
    ('train.lr', t.lr),
    ('train.expert_lr', t.get('expert_lr', t.lr)),
  ):
    if not value > 0:
      raise errors.invalid(name, value, 'a positive number')
  for name in ('base_steps', 'expert_steps'):
    if int(t[name]) < 0:
      raise errors.invalid(f'train.{name}', t[name], 'a number of steps >= 0')
  if (arch := config.get('model', {}).get('arch', 'resnet')) not in ARCHS:
    raise errors.invalid('model.arch', arch, f'one of {ARCHS}')


def run(config: Any, workdir: str) -> dict:
  validate(config)
  if config.model.get('arch', 'resnet') == 'unet':
    data, num_classes = seg_common.load_domains(config.data, workdir)
  else:
    data, num_classes = merge_data.load_domains(config.data, workdir)
  sources = list(config.get('sources', []) or []) or list(data)
  fam = train_family(
    config,
    data,
    num_classes,
    sources,
    os.path.join(workdir, 'checkpoints', 'all'),
    with_fisher=bool(config.train.get('save_fisher', False)),
  )
  rows = []
  for name, v in [('base', fam.base)] + [(f'expert_{s}', e) for s, e in zip(sources, fam.experts)]:
    row = {'model': name}
    for d in data:
      row[d] = accuracy(fam.model, v, *data[d]['test'])
    row['skipped'] = fam.skipped.get(name, 0)  # training steps skipped as non-finite
    rows.append(row)
  md = tables.write_table(
    os.path.join(workdir, 'results', 'expert_accuracy'),
    rows,
    ['model'] + list(data) + ['skipped'],
    title=f'Test {"Dice" if is_segmentation(fam.model) else "accuracy"} per domain (rows: models)',
  )
  logging.info('\n%s', md)
  return {'accuracy': rows}
