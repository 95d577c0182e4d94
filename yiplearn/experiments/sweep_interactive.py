"""A sweep of independent online streams (seeds x learning rates) as ONE vmapped, sharded session per image.

One method (`config.method`, e.g. pi_mi) on one target stream (`config.targets`, one entry): the
S = len(seeds) x len(lrs) streams each keep their own parameters and Adam state (learning rate
`lr`) over the whole target stream and see the clicks of their seed; each image is one call of the
stream-vmapped session, the stream axis split over the devices of `config.mesh` (padded to a
multiple of the device count). Stream (seed s, lr) is the `adapt_interactive` run with
`seed=s, optim.lr=lr` on that target: same clicks and updates, to float tolerance.

The model comes from `config.checkpoint_dir` (a `pretrain` run's best/), or, when empty, from a
pre-training with `config.pretrain` in `<workdir>/pretrain` (resumed if present).

Writes `results/sweep_<target>.{md,csv,json}` (one row per stream: seed, lr, Dice@1/5/10, NoC, AUC,
updates, skipped), `results/sweep_<target>_by_lr.*` (mean and standard deviation over seeds) and
checkpoints every `checkpoint_every` images under `sweep/` (a restarted run resumes there).
"""

from __future__ import annotations

import itertools
import os
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

from yiplearn import errors, parallel
from yiplearn.data import registry
from yiplearn.experiments import adapt_interactive, interactive_setup, pretrain, seg_common
from yiplearn.interactive import rules
from yiplearn.interactive import session as session_lib
from yiplearn.io import loop, tables


def validate(config: ml_collections.ConfigDict) -> None:
  if len(config.targets) != 1:
    raise errors.invalid('targets', sorted(config.targets), 'exactly one target stream')
  rules.check_names([config.method], 'method')
  interactive_setup.check_methods(config, [config.method])
  if not config.seeds:
    raise errors.invalid('seeds', (), 'at least one clicks seed')
  if not config.lrs or any(float(lr) <= 0 for lr in config.lrs):
    raise errors.invalid('lrs', tuple(config.lrs), 'one or more positive learning rates')
  if int(config.checkpoint_every) < 1:
    raise errors.invalid('checkpoint_every', config.checkpoint_every, 'a positive number of images')


def _checkpoint_dir(config: ml_collections.ConfigDict, workdir: str) -> str:
  if config.checkpoint_dir:
    return config.checkpoint_dir
  pre = ml_collections.ConfigDict(config.pretrain.to_dict())
  if not pre.data.get('data_dir', ''):
    pre.data.data_dir = registry.default_data_dir(workdir)
  return pretrain.run(pre, os.path.join(workdir, 'pretrain'))['best_dir']


def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  validate(config)
  mesh = parallel.mesh_from_config(config.get('mesh', None))
  target, data_cfg = next(iter(config.targets.items()))
  adapt_cfg = ml_collections.ConfigDict(config.to_dict())
  adapt_cfg.checkpoint_dir = _checkpoint_dir(config, workdir)
  data = seg_common.load_segmentation(data_cfg, workdir)
  images, masks = data['images'], data['masks']
  num_classes = int(config.num_classes)
  model, params = adapt_interactive.load_pretrained(
    adapt_cfg, num_classes, images.shape[-1], images.shape[1]
  )

  spec = interactive_setup.spec_from_config(config)
  rule = interactive_setup.rule_from_config(config, config.method)
  tx = rules.make_optimizer(float(config.lrs[0]))  # the state holds each stream's learning rate
  names = [n for n, _ in spec.report_unions]
  grid = list(itertools.product([int(s) for s in config.seeds], [float(lr) for lr in config.lrs]))
  states = [rules.set_learning_rate(rules.init_state(rule, params, tx), lr) for _, lr in grid]
  states = jax.tree.map(lambda *a: jnp.stack(a), *states)
  # Stream (seed, lr) sees the clicks of adapt_interactive with config.seed = seed (its first target).
  keys = jnp.stack([jax.random.fold_in(jax.random.PRNGKey(seed), 0) for seed, _ in grid])
  s_real = len(grid)
  (states, keys), _ = parallel.pad_leading((states, keys), parallel.data_axis_size(mesh))
  streams = parallel.leading_sharding(mesh)
  states, keys = parallel.to_global((states, keys), streams)
  session = session_lib.sharded_session(
    model, spec, rule, mesh, tx=tx, unroll=int(config.get('session_unroll', 1))
  )
  fold = jax.jit(jax.vmap(jax.random.fold_in, in_axes=(0, None)), out_shardings=streams)

  n = len(images)
  union = np.zeros((s_real, n, spec.num_clicks, len(names)), np.float32)
  counts = np.zeros((s_real, n, 2), np.int64)  # updates, skipped
  items = loop.ItemLoop(
    os.path.join(workdir, 'sweep', target),
    n,
    every=int(config.checkpoint_every),
    desc=f'sweep {target}: {s_real} streams on {mesh.size} device(s), images',
  )
  saved, _ = items.restore({'state': states, 'union': union, 'counts': counts})
  states, union, counts = saved['state'], np.asarray(saved['union']), np.asarray(saved['counts'])
  t0 = time.perf_counter()
  for i in items:
    states, out = session(states, jnp.asarray(images[i]), jnp.asarray(masks[i]), fold(keys, i))
    out = parallel.to_host((out.union_dice, out.updates, out.skipped))
    union[:, i] = out[0][:s_real]
    counts[:, i] = np.stack([out[1][:s_real], out[2][:s_real]], -1)
    items.save(
      i + 1, {'state': states, 'union': union, 'counts': counts}, extra={'images_done': i + 1}
    )
  items.close()
  seconds = time.perf_counter() - t0

  rows = []
  for j, (seed, lr) in enumerate(grid):
    curves = {name: union[j, :, :, r] for r, name in enumerate(names)}
    rows.append(
      {
        'stream': j,
        'seed': seed,
        'lr': lr,
        'method': config.method,
        'images': n,
        **adapt_interactive.summarize(curves, spec.num_clicks),
        'updates': int(counts[j, :, 0].sum()),
        'skipped': int(counts[j, :, 1].sum()),
      }
    )
  metrics = [k for k in rows[0] if '@' in k or k.endswith('_auc')]
  by_lr = []
  for lr in dict.fromkeys(float(x) for x in config.lrs):
    sel = [r for r in rows if r['lr'] == lr]
    row = {'lr': lr, 'seeds': len(sel)}
    for k in metrics:
      vals = np.asarray([r[k] for r in sel])
      row[k], row[f'{k}_std'] = float(vals.mean()), float(vals.std())
    by_lr.append(row)
  title = f'Sweep of {config.method} on {target}: {len(config.seeds)} seeds x {len(config.lrs)} learning rates'
  tables.write_table(os.path.join(workdir, 'results', f'sweep_{target}'), rows, title=title)
  tables.write_table(
    os.path.join(workdir, 'results', f'sweep_{target}_by_lr'),
    by_lr,
    title=f'{title}, mean (and std) over seeds',
  )
  logging.info(
    '%s, mean +- std over seeds (per stream: results/sweep_%s.md):\n%s',
    title,
    target,
    tables.to_markdown(adapt_interactive.compact_rows(by_lr, 'lr'), floatfmt='.3g'),
  )
  return {'rows': rows, 'by_lr': by_lr, 'devices': mesh.size, 'seconds': seconds}
