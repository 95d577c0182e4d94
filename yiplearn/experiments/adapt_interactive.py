"""Online adaptation of a pre-trained click model on target streams (DESIGN.md 1.1, "Online protocol").

For every target stream in `config.targets` and every method in `config.methods` (frozen, pi, pi_mi,
mi_only, ia_sa, tent, oracle; `config.episodic` resets before each image) the pre-trained model
from `config.checkpoint_dir` (a `pretrain` run's `best/`) is adapted online: one Adam state over
the whole stream, each image scored once with the simulated user (Dice after each of T clicks),
before its own Post-Interaction update. The same clicks seed is used for every method.

Writes
- `per_click.jsonl`: one record per image (target, method, index, id, Dice per report union per click),
  gathered from the per-stream logs `streams/<target>__<method>.jsonl` when every stream is done;
- `results/interactive_<target>.{md,csv,json}`: per method Dice@1/5/10, NoC@80/85/90, AUC,
  updates and skipped (non-finite) updates; `results/interactive_all.*` all rows;
- `plots/dice_vs_clicks_<target>.png`: mean Dice against clicks per method;
- `timing.json`: median seconds per image per (target, method), the only output that is not a
  deterministic function of config and seed (everything under `results/` and `per_click.jsonl` is).
`config.session_unroll` unrolls the click scan (T = all clicks). XLA:CPU differentiates convolutions
~20x slower inside a rolled `lax.scan`; the session then uses the U-Net's forward-style convolution
gradients, so the default rolled loop runs about as fast as an unrolled one and compiles much faster
(benchmarks/NOTES.md).
Progress is checkpointed every `checkpoint_every` images per (target, method) under `streams/`;
a run started again in the same workdir resumes there and skips finished streams.
"""

from __future__ import annotations

import io
import os
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

from yiplearn import metrics
from yiplearn.experiments import seg_common
from yiplearn.interactive import session as session_lib
from yiplearn.interactive import updates
from yiplearn.io import checkpoints, files, plots, progress, tables, writers

CLICKS_REPORTED = (1, 5, 10)
NOC_THRESHOLDS = (0.80, 0.85, 0.90)


def load_pretrained(
  config: ml_collections.ConfigDict, num_classes: int, image_channels: int, size: int
):
  """The pre-trained U-Net and its params from `config.checkpoint_dir` (a `pretrain` run's best/)."""
  if not config.checkpoint_dir:
    raise ValueError(
      "checkpoint_dir='': expected the best/ directory of a pretrain run "
      '(or use stage=all to pre-train first)'
    )
  if not os.path.isdir(config.checkpoint_dir):
    raise FileNotFoundError(
      f'checkpoint_dir={config.checkpoint_dir!r} does not exist: expected the best/ '
      'directory of a pretrain run'
    )
  model = seg_common.make_unet(config.model, num_classes)
  channels = seg_common.input_channels(image_channels, num_classes, config.clicks.prev_mask)
  target = jax.eval_shape(
    lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, size, size, channels)))
  )
  params, _ = checkpoints.Checkpointer(config.checkpoint_dir, max_to_keep=1).restore(None, target)
  return model, params


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


def _stream(
  config, model, params, target: str, method: str, images, masks, ids, key, workdir, sessions
):
  """Runs (or resumes) one method over one target stream; returns the per-image union-Dice curves (N, T, R)."""
  hp = updates.hparams_from_config(config, method)
  names = [n for n, _ in hp.report_unions]
  done_path = os.path.join(workdir, 'streams', f'{target}__{method}.npz')
  if os.path.exists(done_path):
    return files.read_npz(done_path)  # never unpickles
  state = updates.init_state(jax.tree.map(jnp.copy, params), hp)  # the session donates its state
  ckpt = checkpoints.Checkpointer(
    os.path.join(workdir, 'streams', f'{target}__{method}'), max_to_keep=1
  )
  n = len(images)
  union = np.zeros((n, hp.num_clicks, len(names)), np.float32)
  counts = np.zeros((n, 3), np.float64)  # updates, skipped, seconds
  start = 0
  if ckpt.latest_step() is not None:
    saved = {'state': state, 'union': union, 'counts': counts}
    saved, extra = ckpt.restore(None, saved)
    state, union, counts = saved['state'], np.asarray(saved['union']), np.asarray(saved['counts'])
    start = int(extra['images_done'])
    logging.info('%s/%s: resumed after %d of %d images', target, method, start, n)
  if (
    method not in sessions
  ):  # one compiled session per method, reused by every target of the same shape
    sessions[method] = session_lib.make_session(
      model, hp, unroll=int(config.get('session_unroll', 1))
    )
  session = sessions[method]
  log = writers.resume_jsonl(
    os.path.join(workdir, 'streams', f'{target}__{method}.jsonl'), 'index', start
  )
  prog = progress.Progress(n, f'{target}/{method} images', start=start)
  for i in range(start, n):
    t0 = time.perf_counter()
    state, out = session(
      state, jnp.asarray(images[i]), jnp.asarray(masks[i]), jax.random.fold_in(key, i)
    )
    out = jax.device_get(out)
    union[i] = out.union_dice
    counts[i] = (int(out.updates), int(out.skipped), time.perf_counter() - t0)
    log.write(
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
    prog.update()
    if (i + 1) % int(config.checkpoint_every) == 0 and i + 1 < n:
      ckpt.save(
        i + 1, {'state': state, 'union': union, 'counts': counts}, extra={'images_done': i + 1}
      )
  log.close()
  result = {'union': union, 'counts': counts, 'names': np.asarray(names)}
  if jax.process_index() == 0:  # every process holds the same result; one writes it
    buf = io.BytesIO()
    np.savez(buf, **result)
    files.atomic_write_bytes(done_path, buf.getvalue())
  return result


def validate(config: ml_collections.ConfigDict) -> None:
  if not config.targets:
    raise ValueError('targets={}: expected at least one target stream')
  if not config.methods:
    raise ValueError('methods=(): expected at least one method')
  updates.check_method_names(list(config.methods))
  if int(config.checkpoint_every) < 1:
    raise ValueError(
      f'checkpoint_every={config.checkpoint_every}: expected a positive number of images'
    )
  if not float(config.optim.lr) > 0:
    raise ValueError(f'optim.lr={config.optim.lr}: expected a positive learning rate')
  if int(config.clicks.max_clicks) < 1:
    raise ValueError(
      f'clicks.max_clicks={config.clicks.max_clicks}: expected a click budget >= 1 per image'
    )
  for method in config.methods:  # every other field of the session, before any data is built
    updates.hparams_from_config(config, method)
  if config.checkpoint_dir and not os.path.isdir(config.checkpoint_dir):
    raise FileNotFoundError(
      f'checkpoint_dir={config.checkpoint_dir!r} does not exist: expected the best/ '
      'directory of a pretrain run'
    )


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
    rows, mean_curves = [], {}
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
      logging.info(
        '%s / %s: %s',
        target,
        method,
        {k: round(v, 4) for k, v in row.items() if isinstance(v, float)},
      )
    md = tables.write_table(
      os.path.join(workdir, 'results', f'interactive_{target}'),
      rows,
      title=f'Interactive segmentation, target {target}',
    )
    print(md)
    for name in next(iter(mean_curves.values())):
      plots.plot_curves(
        os.path.join(workdir, 'plots', f'dice_vs_clicks_{target}_{name}.png'),
        {m: (np.arange(1, len(c[name]) + 1), c[name]) for m, c in mean_curves.items()},
        xlabel='click',
        ylabel=f'Dice ({name})',
        title=f'{target}: {name}',
        ylim=(0, 1),
      )
    all_rows += rows
    summary[target] = rows
  if jax.process_index() == 0:
    per_click = []
    for path in stream_logs:
      with open(path, encoding='utf-8') as f:
        per_click.append(f.read())
    files.atomic_write_text(os.path.join(workdir, 'per_click.jsonl'), ''.join(per_click))
  tables.write_table(
    os.path.join(workdir, 'results', 'interactive_all'), all_rows, title='Interactive segmentation'
  )
  if jax.process_index() == 0:
    files.atomic_write_json(os.path.join(workdir, 'results', 'interactive_summary.json'), summary)
  if jax.process_index() == 0:  # wall-clock seconds: not deterministic, so kept out of results/
    files.atomic_write_json(os.path.join(workdir, 'timing.json'), timing)
  return summary
