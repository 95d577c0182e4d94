"""Online adaptation of a pre-trained click model on target streams (DESIGN.md 1.1, "Online protocol").

For every target stream in `config.targets` and every method in `config.methods` (a name of
`rules.METHODS`: frozen, pi, mi, pi_mi, ia_sa, tent, oracle, optionally with '_episodic';
`config.episodic` resets every method before each image) the pre-trained model from `config.checkpoint_dir` (a `pretrain` run's `best/`) is adapted online: one Adam state over
the whole stream, each image scored once with the simulated user (Dice after each of T clicks),
before its own Post-Interaction update. The same clicks seed is used for every method.

Writes
- `per_click.jsonl`: one record per image (target, method, index, id, Dice per report union per click),
  gathered from the per-stream logs `streams/<target>__<method>.jsonl` when every stream is done;
- `results/interactive_<target>.{md,csv,json}`: per method Dice@1/5/10, NoC@80/85/90, AUC,
  updates and skipped (non-finite) updates; `results/interactive_all.*` all rows;
- `plots/dice_vs_clicks_<target>_<union>.png`: mean Dice against clicks per method (the y axis
  scaled to the curves);
- `plots/examples_<target>.png`: for `config.example_images` (default 3) evenly spaced images, the
  image, its ground truth and what frozen and pi_mi showed after clicks 1, 5 and 10, with the clicks
  (`click_examples.py`: the images are replayed through the per-click tool);
- `timing.json`: median seconds per image per (target, method), the only output that is not a
  deterministic function of config and seed (everything under `results/` and `per_click.jsonl` is).
`config.session_unroll` unrolls the click scan (T = all clicks). XLA:CPU differentiates convolutions
~20x slower inside a rolled `lax.scan`; the session then uses the U-Net's forward-style convolution
gradients, so the default rolled loop runs about as fast as an unrolled one and compiles much faster
(benchmarks/NOTES.md).
Progress is checkpointed every `checkpoint_every` images per (target, method) under `streams/`
(`io.loop.ItemLoop`); a run started again in the same workdir resumes there and skips finished
streams. The log gets a compact per-method summary; the full table is in `results/`.
"""

from __future__ import annotations

import os
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

from yiplearn import errors, metrics
from yiplearn.experiments import click_examples, interactive_setup, seg_common
from yiplearn.interactive import rules
from yiplearn.interactive import session as session_lib
from yiplearn.io import checkpoints, files, loop, plots, tables

CLICKS_REPORTED = (1, 5, 10)
NOC_THRESHOLDS = (0.80, 0.85, 0.90)


def _check_checkpoint_dir(path: str) -> None:
  if not os.path.isdir(path):
    raise errors.MissingDataError(
      errors.message('checkpoint_dir', path, 'an existing best/ directory of a pretrain run')
    )


def load_pretrained(
  config: ml_collections.ConfigDict, num_classes: int, image_channels: int, size: int
):
  """The pre-trained U-Net and its params from `config.checkpoint_dir` (a `pretrain` run's best/)."""
  if not config.checkpoint_dir:
    raise errors.invalid(
      'checkpoint_dir',
      '',
      'the best/ directory of a pretrain run (or stage=all to pre-train first)',
    )
  _check_checkpoint_dir(config.checkpoint_dir)
  model = seg_common.make_unet(config.model, num_classes)
  channels = seg_common.input_channels(image_channels, num_classes, config.clicks.prev_mask)
  target = jax.eval_shape(
    lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, size, size, channels)))
  )
  params, _ = checkpoints.Checkpointer(config.checkpoint_dir, max_to_keep=1).restore(None, target)
  # As host arrays: orbax restores the sharding pre-training saved (a NamedSharding over its mesh),
  # which the session's outputs do not have, so its second call would compile again.
  return model, jax.tree.map(np.asarray, params)


def summarize(curves: dict[str, np.ndarray], num_clicks: int) -> dict[str, float]:
  """Dice@k, NoC@thr and AUC (means over images) of per-image Dice curves {union: (N, T)}."""
  row: dict[str, float] = {}
  for name, c in curves.items():
    for k in CLICKS_REPORTED:
      if k <= num_clicks:
        row[f'{name}_dice@{k}'] = float(np.mean(c[:, k - 1]))
    for thr in NOC_THRESHOLDS:
      row[f'{name}_noc@{int(round(thr * 100))}'] = float(np.mean(np.asarray(metrics.noc(c, thr))))
    row[f'{name}_auc'] = float(np.mean(np.asarray(metrics.dice_auc(c))))
  return row


def compact_rows(rows: list[dict], label: str = 'method') -> list[dict]:
  """Per row (method, or learning rate of a sweep), Dice at clicks 1/5/10 in one cell and NoC@85 for
  each report union (with the standard deviation over seeds where the row has one)."""

  def cell(row, key):
    std = row.get(f'{key}_std')
    return f'{row[key]:.3f}' + (f' +- {std:.3f}' if std is not None else '')

  out = []
  for row in rows:
    short = {label: row[label]}
    for name in dict.fromkeys(k.split('_dice@')[0] for k in row if '_dice@' in k):
      ks = [k for k in CLICKS_REPORTED if f'{name}_dice@{k}' in row]
      short[f'{name} Dice@{"/".join(map(str, ks))}'] = ' / '.join(
        cell(row, f'{name}_dice@{k}') for k in ks
      )
      if f'{name}_noc@85' in row:
        short[f'{name} NoC@85'] = cell(row, f'{name}_noc@85')
    out.append(short)
  return out


def _stream(
  config, model, params, target: str, method: str, images, masks, ids, key, workdir, sessions
):
  """Runs (or resumes) one method over one target stream; returns the per-image union-Dice curves (N, T, R)."""
  spec = interactive_setup.spec_from_config(config)
  rule = interactive_setup.rule_from_config(config, method)
  tx = rules.make_optimizer(float(config.optim.lr))
  names = [n for n, _ in spec.report_unions]
  base = os.path.join(workdir, 'streams', f'{target}__{method}')
  n = len(images)
  items = loop.ItemLoop(
    base,
    n,
    every=int(config.checkpoint_every),
    desc=f'{target}/{method} images',
    done_path=base + '.npz',
    log_path=base + '.jsonl',
    log_key='index',
  )
  if items.finished:
    return items.result()  # never unpickles
  state = rules.init_state(rule, params, tx)  # owns copies: the session donates its state
  union = np.zeros((n, spec.num_clicks, len(names)), np.float32)
  counts = np.zeros((n, 3), np.float64)  # updates, skipped, seconds
  examples = click_examples.Recorder(
    model,
    spec,
    rule,
    tx,
    method,
    n,
    masks.shape[1:],
    int(config.get('example_images', 3)),
    sessions,
  )
  carry = {'state': state, 'union': union, 'counts': counts}
  saved, _ = items.restore(carry | examples.carry())
  state, union, counts = saved['state'], np.asarray(saved['union']), np.asarray(saved['counts'])
  examples.restore(saved)
  if (
    method not in sessions
  ):  # one compiled session per method, reused by every target of the same shape
    sessions[method] = session_lib.make_session(
      model, spec, rule, tx=tx, unroll=int(config.get('session_unroll', 1))
    )
  session = sessions[method]
  for i in items:
    before = click_examples.copy_state(state) if examples.wants(i) else None
    t0 = time.perf_counter()
    state, out = session(
      state, jnp.asarray(images[i]), jnp.asarray(masks[i]), jax.random.fold_in(key, i)
    )
    out = jax.device_get(out)
    union[i] = out.union_dice
    counts[i] = (int(out.updates), int(out.skipped), time.perf_counter() - t0)
    if before is not None:  # replayed through the tool for the example pictures
      examples.record(i, before, images[i], out.clicks, jax.random.fold_in(key, i))
    items.log.write(
      {
        'target': target,
        'method': method,
        'index': i,
        'id': str(ids[i]),
        **{f'dice_{name}': union[i, :, r].round(6).tolist() for r, name in enumerate(names)},
        'updates': int(out.updates),
        'skipped': int(out.skipped),
      }
    )
    carry = {'state': state, 'union': union, 'counts': counts}
    items.save(i + 1, carry | examples.carry(), extra={'images_done': i + 1})
  # Every process holds the same result; one writes it.
  result = {'union': union, 'counts': counts, 'names': np.asarray(names), **examples.carry()}
  return items.finish(result)


def validate(config: ml_collections.ConfigDict) -> None:
  if not config.targets:
    raise errors.invalid('targets', {}, 'at least one target stream')
  if not config.methods:
    raise errors.invalid('methods', (), 'at least one method')
  if int(config.checkpoint_every) < 1:
    raise errors.invalid('checkpoint_every', config.checkpoint_every, 'a positive number of images')
  if not float(config.optim.lr) > 0:
    raise errors.invalid('optim.lr', config.optim.lr, 'a positive learning rate')
  if int(config.clicks.max_clicks) < 1:
    raise errors.invalid('clicks.max_clicks', config.clicks.max_clicks, 'a click budget >= 1')
  # every method name and hyper-parameter, before any data is built
  interactive_setup.check_methods(config, config.methods)
  if config.checkpoint_dir:
    _check_checkpoint_dir(config.checkpoint_dir)


def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  validate(config)
  num_classes = int(config.num_classes)
  key = jax.random.PRNGKey(int(config.seed))
  stream_logs = []
  all_rows, summary, timing = [], {}, []
  model = params = None
  sessions: dict[str, Any] = {}
  for t_index, (target, data_cfg) in enumerate(sorted(config.targets.items())):
    data = seg_common.load_segmentation(data_cfg, workdir)
    images, masks = data['images'], data['masks']
    if model is None:
      model, params = load_pretrained(config, num_classes, images.shape[-1], images.shape[1])
    logging.info(
      'target %s: %d images x %d methods (%s), %d simulated clicks per image',
      target,
      len(images),
      len(config.methods),
      ', '.join(config.methods),
      int(config.clicks.max_clicks),
    )
    rows, mean_curves, results = [], {}, {}
    for method in config.methods:
      res = _stream(
        config,
        model,
        params,
        target,
        method,
        images,
        masks,
        data['ids'],
        jax.random.fold_in(key, t_index),
        workdir,
        sessions,
      )
      results[method] = res
      stream_logs.append(os.path.join(workdir, 'streams', f'{target}__{method}.jsonl'))
      names = [str(n) for n in res['names']]
      curves = {name: res['union'][:, :, r] for r, name in enumerate(names)}
      counts = res['counts']
      row = {
        'target': target,
        'method': method,
        'images': len(images),
        **summarize(curves, curves[names[0]].shape[1]),
        'updates': int(counts[:, 0].sum()),
        'skipped': int(counts[:, 1].sum()),
      }
      rows.append(row)
      timing.append(
        {'target': target, 'method': method, 's_per_image': float(np.median(counts[:, 2]))}
      )
      mean_curves[method] = {name: c.mean(axis=0) for name, c in curves.items()}
    tables.write_table(
      os.path.join(workdir, 'results', f'interactive_{target}'),
      rows,
      title=f'Interactive segmentation, target {target}',
    )
    # The terminal gets one short line per method; the full table is in the files.
    logging.info(
      'target %s (%d images; full table in results/interactive_%s.md):\n%s',
      target,
      len(images),
      target,
      tables.to_markdown(compact_rows(rows), floatfmt='.3f'),
    )
    click_examples.plot(
      os.path.join(workdir, 'plots', f'examples_{target}.png'), target, images, masks, results
    )
    for name in next(iter(mean_curves.values())):
      plots.plot_curves(
        os.path.join(workdir, 'plots', f'dice_vs_clicks_{target}_{name}.png'),
        {m: (np.arange(1, len(c[name]) + 1), c[name]) for m, c in mean_curves.items()},
        xlabel='click',
        ylabel=f'Dice ({name})',
        title=f'{target}: {name}',
        bounds=(0, 1),  # the axis scales to the curves
      )
    all_rows += rows
    summary[target] = rows
  if files.is_writer():
    per_click = []
    for path in stream_logs:
      with open(path, encoding='utf-8') as f:
        per_click.append(f.read())
    files.atomic_write_text(os.path.join(workdir, 'per_click.jsonl'), ''.join(per_click))
  tables.write_table(
    os.path.join(workdir, 'results', 'interactive_all'), all_rows, title='Interactive segmentation'
  )
  if files.is_writer():
    files.atomic_write_json(os.path.join(workdir, 'results', 'interactive_summary.json'), summary)
  if files.is_writer():  # wall-clock seconds: not deterministic, so kept out of results/
    files.atomic_write_json(os.path.join(workdir, 'timing.json'), timing)
  return summary
