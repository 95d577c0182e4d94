"""Leave-one-domain-out online merging: every method on every test stream of every target domain.

Launch (see configs/merge_digits.py, merge_lgg.py, merge_fundus.py):
  python -m launch.run --config configs/merge_digits.py --workdir runs/merge_digits
  python -m launch.run --config configs/merge_digits.py:quick --workdir runs/merge_digits_quick

For each target in `config.targets` (default: every domain) the experts are the other domains
(base + experts trained by `train_experts.train_family`, checkpointed under
`checkpoints/<target>/`, or read from `config.experts_workdir`). Streams (`config.streams`):
'iid' and 'dirichlet' (label shift, `stream.alpha`) over the target's test split; 'mixed' and
'continual' over the test splits of ALL domains (target + sources), i.e. a heterogeneous stream
whose best merge changes over time ('continual' takes the domains in order, target first, with
`stream.continual_within` = 'iid' or 'dirichlet' inside each domain).

BatchNorm statistics: `config.bn` and the methods' `:<mode>` suffixes (`merge_methods`). `config.seeds`:
one run per seed under `<workdir>/seed_<s>/`, then mean +- std over seeds (`experiments/seeds.py`).

Writes to the workdir:
  results/merge_accuracy.{md,csv,json}   accuracy per target x stream x method (+ best single expert),
                                         with the updates skipped as non-finite (Tent, AdaMerging)
  results/merge_summary.{md,csv,json}    accuracy per method x stream, averaged over targets
  results/lambda_trace.jsonl             per batch: coefficients (lambda_enc, lambda_head / AdaMerging
                                         lambda / ensemble weights), batch accuracy, majority domain
  results/partial/<target>.json          finished targets (a restarted run skips them)
  streams/<target>/<method>__<stream>/   checkpoint every `checkpoint_every` batches (merging state,
                                         batches done, sum of hits, n); `.json` when finished, `.jsonl`
                                         its trace (trimmed to the checkpoint on resume). A run killed
                                         at any point and started again ends with the same results.
  plots/entropy_landscape_<target>.png   for K = 3: mean prediction entropy over the simplex (grid of
                                         `landscape_resolution`) on the first batch of the first stream,
                                         with the entropy-adaptive lambda_enc for that batch marked
"""

from __future__ import annotations

import collections
import itertools
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from yiplearn import errors
from yiplearn.data import streams as stream_lib
from yiplearn.experiments import merge_data, merge_methods, seeds, train_experts
from yiplearn.experiments.merge_landscape import entropy_landscape
from yiplearn.io import files, loop, tables
from yiplearn.io.progress import Progress
from yiplearn.merging import tree as tr


def build_streams(config: Any, data: dict, target: str, sources: list[str]) -> dict:
  s = config.stream
  out = {}
  tx, ty = data[target]['test']
  for kind in config.streams:
    if kind in ('iid', 'dirichlet'):
      out[kind] = stream_lib.make_stream(
        kind,
        tx,
        ty,
        np.full(len(tx), target),
        batch_size=int(s.batch_size),
        seed=config.seed,
        alpha=float(s.alpha),
      )
    elif kind in ('mixed', 'continual'):
      doms = [target] + sources
      xs = np.concatenate([data[d]['test'][0] for d in doms])
      ys = np.concatenate([data[d]['test'][1] for d in doms])
      ds = np.concatenate([np.full(len(data[d]['test'][0]), d) for d in doms])
      out[kind] = stream_lib.make_stream(
        kind,
        xs,
        ys,
        ds,
        batch_size=int(s.batch_size),
        seed=config.seed,
        alpha=float(s.alpha),
        domain_order=doms,
        within=s.get('continual_within', 'iid'),
      )
    else:
      raise errors.invalid('streams entry', kind, f'one of {stream_lib.KINDS}')
  return out


def trace_values(info: dict) -> dict:
  """The merging coefficients / ensemble weights of a method's `info`, rounded, for the trace."""
  out = {}
  for k in ('lam_enc', 'lam_head', 'lam', 'weights'):
    if k in info:
      out[k] = np.round(np.asarray(info[k], np.float64), 4).tolist()
  return out


def accuracy(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """Per-example hits (B,) float32 of argmax(logits) against labels (B,)."""
  return (jnp.argmax(logits, -1) == labels).astype(jnp.float32)


def run_stream(
  update,
  state,
  stream,
  *,
  metric=accuracy,
  metric_name: str = 'accuracy',
  trace=None,
  meta=None,
  start: int = 0,
  total: float = 0.0,
  n: int = 0,
  on_batch=None,
) -> tuple[float, int]:
  """Runs `update` over the batches of `stream` from batch `start` (with `total`/`n` summed
  before it); `metric(logits, labels)` gives per-example values (B,) (accuracy: hits; segmentation:
  per-image Dice). `on_batch(i, state, total, n)` is called after batch i (the checkpoint hook);
  returns (the metric's mean over examples, n)."""
  batches = (
    stream.batches(start)
    if isinstance(stream, stream_lib.Stream)  # skipped batches not gathered
    else itertools.islice(stream, start, None)
  )
  for i, batch in enumerate(batches, start):
    state, logits, info = update(state, jnp.asarray(batch['image']))
    values = np.asarray(metric(logits, jnp.asarray(batch['label'])), np.float64)
    total += float(values.sum())
    n += len(values)
    if trace is not None:
      dom = collections.Counter(batch['domain'].tolist()).most_common(1)[0][0]
      score = {metric_name: round(float(values.mean()), 6)}
      trace.write(dict(meta, batch=i, domain=dom, **score, **trace_values(info)))
    if on_batch is not None:
      state = on_batch(i, state, total, n)
  return total / max(n, 1), n


def run_stream_resumable(
  update,
  init_state,
  stream,
  *,
  stream_dir: str,
  name: str,
  meta: dict,
  checkpoint_every: int,
  metric=accuracy,
  metric_name: str = 'accuracy',
) -> tuple[dict, str]:
  """One (method, stream) pair as an `io.loop.ItemLoop` over its batches: checkpointed every
  `checkpoint_every` batches under `stream_dir/name/` (merging state, batches done, the metric's
  running sum, n) and finished into `stream_dir/name.json`.

  A run killed at any point and started again continues from the last checkpoint; its trace
  (`stream_dir/name.jsonl`: per batch the metric, majority domain, coefficients) is trimmed to the
  checkpoint, so the result and trace equal an uninterrupted run's. Returns ({<metric_name>, n,
  skipped}, trace path).
  """
  log_path = os.path.join(stream_dir, f'{name}.jsonl')
  items = loop.ItemLoop(
    os.path.join(stream_dir, name),
    len(stream),
    every=checkpoint_every,
    desc=f'{meta.get("target", "")} {name} batches',
    done_path=os.path.join(stream_dir, f'{name}.json'),
    log_path=log_path,
    log_key='batch',
    log_every_s=60.0,
  )
  if items.finished:
    return items.result(), log_path
  state, extra = items.restore(init_state())
  total, n = float(extra.get('total', 0.0)), int(extra.get('n', 0))
  # Updates skipped for a non-finite loss or gradient (Tent, AdaMerging; 0 for forward-only methods).
  skipped = [int(np.asarray(getattr(state, 'skipped', 0)))]

  def on_batch(i, state, total, n):
    items.save(i + 1, state, extra={'batches_done': i + 1, 'total': total, 'n': n})
    skipped[0] = int(np.asarray(getattr(state, 'skipped', 0)))
    return state

  value, n = run_stream(
    update,
    state,
    stream,
    metric=metric,
    metric_name=metric_name,
    trace=items.log,
    meta=meta,
    start=items.start,
    total=total,
    n=n,
    on_batch=on_batch,
  )
  return items.finish({metric_name: value, 'n': n, 'skipped': skipped[0]}), log_path


def validate(config: Any) -> None:
  """Checks the fields a user sets most often, before any data is built or model trained."""
  methods, kinds = tuple(config.methods), tuple(config.streams)
  if not methods:
    raise errors.invalid('methods', (), 'at least one of ' + ', '.join(merge_methods.KNOWN))
  for m in methods:
    merge_methods.split_name(m)  # a known method, optionally with a BatchNorm suffix
  if not kinds:
    raise errors.invalid('streams', (), f'at least one of {stream_lib.KINDS}')
  for k in kinds:
    if k not in stream_lib.KINDS:
      raise errors.invalid('streams entry', k, f'one of {stream_lib.KINDS}')
  domains = tuple(config.data.get('domains', ()) or ())
  if domains and len(domains) < 3:
    raise errors.invalid(
      'data.domains', domains, 'at least 3 domains (a held-out target and K >= 2 experts to merge)'
    )
  train_experts.validate(config)
  positive = [
    ('stream.batch_size', config.stream.batch_size),
    ('tent.lr', config.tent.lr),
    ('ada.lr', config.ada.lr),
    ('ada.steps', config.ada.steps),
    ('checkpoint_every', config.get('checkpoint_every', 20)),
  ]
  for name, value in positive:
    if not value > 0:
      raise errors.invalid(name, value, 'a positive number')


def run(config: Any, workdir: str) -> dict:
  validate(config)
  if tuple(config.get('seeds', ()) or ()):  # one run per seed, then mean +- std
    return seeds.run_seeds(
      run, config, workdir, title='Accuracy per method and stream, mean over targets'
    )
  data, num_classes = merge_data.load_domains(config.data, workdir)
  targets = list(config.get('targets', []) or []) or list(data)
  for t in targets:
    if t not in data:
      raise errors.invalid('targets entry', t, f'one of {sorted(data)}')
  res_dir = os.path.join(workdir, 'results')
  os.makedirs(os.path.join(res_dir, 'partial'), exist_ok=True)
  every = int(config.get('checkpoint_every', 20))
  if every < 1:
    raise errors.invalid('checkpoint_every', every, 'a positive number of batches')
  rows: list[dict] = []
  trace_paths: list[str] = []
  for target in targets:
    partial = os.path.join(res_dir, 'partial', f'{target}.json')
    if os.path.exists(partial):
      logging.info('target %s already done; loading %s', target, partial)
      target_rows = files.read_json(partial)
      rows.extend(target_rows)
      trace_paths.extend(
        os.path.join(workdir, 'streams', target, f'{r["method"]}__{r["stream"]}.jsonl')
        for r in target_rows
        if r['method'] != 'best_expert'
      )
      continue
    sources = [d for d in data if d != target]
    root = config.get('experts_workdir', '') or workdir
    fam = train_experts.train_family(
      config,
      data,
      num_classes,
      sources,
      os.path.join(root, 'checkpoints', target),
      with_fisher='fisher' in config.methods,
    )
    tr.check_experts(fam.experts, fam.sources)  # one architecture, finite weights
    experts, base = tr.stack(fam.experts), fam.base
    calib = None  # fixed source images for re-estimated BatchNorm statistics
    if merge_methods.needs_calibration(config):
      calib = merge_methods.calibration_images(config, data, sources)
    methods = merge_methods.build(config, fam, calib)
    streams = build_streams(config, data, target, sources)
    target_rows = []
    prog = Progress(len(methods) * sum(len(s) for s in streams.values()), f'target {target}')
    stream_dir = os.path.join(workdir, 'streams', target)
    for mname, method in methods.items():
      update = jax.jit(method.update, donate_argnums=0)
      for sname, stream in streams.items():
        meta = {'target': target, 'stream': sname, 'method': mname}
        res, log_path = run_stream_resumable(
          update,
          lambda method=method: method.init(experts, base),
          stream,
          stream_dir=stream_dir,
          name=f'{mname}__{sname}',
          meta=meta,
          checkpoint_every=every,
        )
        trace_paths.append(log_path)
        prog.update(len(stream))
        target_rows.append(
          dict(meta, accuracy=res['accuracy'], n=res['n'], skipped=res.get('skipped', 0))
        )
    for sname in streams:  # oracle: the best single expert on this stream
      singles = [
        r for r in target_rows if r['stream'] == sname and r['method'].startswith('expert_')
      ]
      if not singles:
        continue
      best = max(singles, key=lambda r: r['accuracy'])
      target_rows.append(
        {
          'target': target,
          'stream': sname,
          'method': 'best_expert',
          'accuracy': best['accuracy'],
          'n': best['n'],
          'skipped': 0,
        }
      )
    if len(sources) == 3 and 'eam' in methods and config.get('landscape', True):
      x = next(iter(streams[next(iter(streams))]))['image']  # the first batch of the first stream
      _, _, info = jax.jit(methods['eam'].update)(
        methods['eam'].init(experts, base), jnp.asarray(x)
      )
      os.makedirs(os.path.join(workdir, 'plots'), exist_ok=True)
      entropy_landscape(
        os.path.join(workdir, 'plots', f'entropy_landscape_{target}.png'),
        fam,
        experts,
        base,
        x,
        np.asarray(info['lam_enc']),
        f'target {target}: experts {", ".join(sources)}',
        resolution=int(config.get('landscape_resolution', 12)),
      )
    if files.is_writer():  # multi-host: one process writes results
      files.atomic_write_json(partial, target_rows)
    rows.extend(target_rows)
    logging.info(
      'target %s: %s',
      target,
      {(r['stream'], r['method']): round(r['accuracy'], 4) for r in target_rows},
    )
  if files.is_writer():  # the per-stream traces, gathered in run order
    text = []
    for path in trace_paths:
      if os.path.exists(path):
        with open(path, encoding='utf-8') as f:
          text.append(f.read())
    files.atomic_write_text(os.path.join(res_dir, 'lambda_trace.jsonl'), ''.join(text))
  tables.write_table(
    os.path.join(res_dir, 'merge_accuracy'),
    rows,
    ['target', 'stream', 'method', 'accuracy', 'n', 'skipped'],
    title='Online accuracy per target domain, stream and method',
  )
  summary = summarize(rows)
  md = tables.write_table(
    os.path.join(res_dir, 'merge_summary'),
    summary,
    title='Accuracy per method and stream, mean over target domains',
  )
  logging.info('\n%s', md)
  return {'rows': rows, 'summary': summary}


def summarize(rows: list[dict]) -> list[dict]:
  """One row per method: mean accuracy over targets per stream (expert_<d> rows are dropped,
  since each target has different experts; `best_expert` is kept)."""
  acc = collections.defaultdict(list)
  stream_names, methods = [], []
  for r in rows:
    if r['method'].startswith('expert_'):
      continue
    acc[(r['method'], r['stream'])].append(r['accuracy'])
    if r['stream'] not in stream_names:
      stream_names.append(r['stream'])
    if r['method'] not in methods:
      methods.append(r['method'])
  out = []
  for m in methods:
    row = {'method': m}
    for s in stream_names:
      row[s] = float(np.mean(acc[(m, s)])) if acc[(m, s)] else float('nan')
    row['mean'] = float(np.nanmean([row[s] for s in stream_names]))
    out.append(row)
  return out
