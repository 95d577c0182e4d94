"""Why entropy-adaptive merging of segmentation models wins or loses (labels used here only).

Per batch of every stream, every fixed full-model candidate of the entropy-adaptive method is run
(the same candidates it chooses among): its Dice, and its score under each pixel-entropy scoring
('mean', 'foreground', 'marginal' = mean minus gamma times the marginal entropy). A record holds the
best candidate's Dice (how good the best available merge is), the Dice of each scoring's argmin, the
mean merge's Dice, the entropy-adaptive method's own batch Dice (from its trace), the gap between the
best candidate and that, and the Spearman correlation of -score with Dice over the candidates.
For K = 3 the landscapes (entropy and Dice over a simplex grid) on the first batch of the first stream.

`run` returns one summary row per stream; `write` writes results/merge_seg_candidates.* and
results/merge_seg_best_candidate.jsonl.
"""

from __future__ import annotations

import collections
import json
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from yiplearn.experiments import merge_methods
from yiplearn.io import files, tables
from yiplearn.merging import candidates as cand_lib
from yiplearn.merging import segmentation
from yiplearn.merging import tree as tr

SCORINGS = {
  'mean': ('mean', False),
  'foreground': ('foreground', False),
  'marginal': ('mean', True),
}


def _rank(a: np.ndarray) -> np.ndarray:
  order = np.argsort(a, kind='stable')
  r = np.empty(len(a), np.float64)
  r[order] = np.arange(len(a))
  return r


def spearman(a: np.ndarray, b: np.ndarray) -> float:
  ra, rb = _rank(np.asarray(a)), _rank(np.asarray(b))
  if ra.std() == 0 or rb.std() == 0:
    return 0.0
  return float(np.corrcoef(ra, rb)[0, 1])


def _evaluator(model, gamma: float, chunk: int):
  def fn(base, tau, x, cands, labels):
    stats = jax.lax.map(
      lambda lam: _one(model, base, tau, x, labels, lam), cands, batch_size=min(chunk, len(cands))
    )
    out = {'dice': stats.pop('dice')}
    for name, (scoring, marginal) in SCORINGS.items():
      out[name] = segmentation.scores_from_stats(stats, scoring, gamma if marginal else 0.0)
    return out

  return jax.jit(fn)


def _one(model, base, tau, x, labels, lam):
  logits = model.apply(tr.merge(base, tau, lam), x)
  out = segmentation.pixel_stats(logits)
  out['dice'] = jnp.mean(segmentation.dice(logits, labels))
  return out


def _read_trace(path: str) -> dict[int, dict]:
  with open(path, encoding='utf-8') as f:
    return {r['batch']: r for r in map(json.loads, f.read().splitlines())}


def _path(workdir: str, kind: str, seed: int, target: str, name: str) -> str:
  return os.path.join(workdir, kind, f'seed{seed}', target, name)


def run(
  config, fam, experts, base, streams: dict, workdir: str, target: str, eam: str
) -> list[dict]:
  e = config.eam
  k = len(fam.experts)
  cands = cand_lib.make_candidates(
    k,
    grid_resolution=None if int(e.grid_resolution) < 0 else int(e.grid_resolution),
    num_random=int(e.num_random),
  )
  mean_idx = int(np.argmin(np.abs(cands - 1.0 / k).sum(1)))
  tau = tr.task_vectors(experts, base)
  evaluate = _evaluator(
    fam.model, float(e.gamma_ablation), merge_methods.auto_chunk(int(e.chunk_size))
  )
  records, rows = [], []
  for sname, stream in streams.items():
    trace = _read_trace(_path(workdir, 'streams', config.seed, target, f'{eam}__{sname}.jsonl'))
    for i, batch in enumerate(stream):
      out = {
        n: np.asarray(v)
        for n, v in evaluate(
          base, tau, jnp.asarray(batch['image']), jnp.asarray(cands), jnp.asarray(batch['label'])
        ).items()
      }
      dice = out['dice']
      rec = {
        'seed': int(config.seed),
        'target': target,
        'stream': sname,
        'batch': i,
        'best_dice': float(dice.max()),
        'best_lambda': np.round(cands[int(np.argmax(dice))], 4).tolist(),
        'mean_dice': float(dice[mean_idx]),
        'eam_dice': float(trace[i]['dice']),
      }
      for name in SCORINGS:
        rec[f'argmin_{name}_dice'] = float(dice[int(np.argmin(out[name]))])
        rec[f'spearman_{name}'] = spearman(-out[name], dice)
      rec['gap'] = rec['best_dice'] - rec['eam_dice']
      records.append(rec)
    these = [r for r in records if r['stream'] == sname]
    row = {'seed': int(config.seed), 'target': target, 'stream': sname, 'batches': len(these)}
    for key in these[0]:
      if key.endswith('_dice') or key.startswith('spearman') or key == 'gap':
        row[key] = float(np.mean([r[key] for r in these]))
    rows.append(row)
  if k == 3 and config.get('landscape', True):
    first = next(iter(streams.values()))
    x = next(iter(first))
    chosen = _read_trace(
      _path(workdir, 'streams', config.seed, target, f'{eam}__{next(iter(streams))}.jsonl')
    )
    landscape(config, fam, base, tau, x, chosen[0]['lam_enc'], workdir, target, evaluate)
  files.atomic_write_text(
    _path(workdir, 'partial', config.seed, target, 'candidates.jsonl'),
    ''.join(json.dumps(r) + '\n' for r in records),
  )
  return rows


def landscape(config, fam, base, tau, batch, chosen, workdir, target, evaluate) -> None:
  """Entropy (mean, foreground) and Dice over a simplex grid for K = 3: JSON and a 3-panel plot."""
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

  from yiplearn.io.plots import save_figure  # pylint: disable=g-import-not-at-top

  grid = cand_lib.simplex_grid(3, int(config.get('landscape_resolution', 8)))
  out = evaluate(
    base, tau, jnp.asarray(batch['image']), jnp.asarray(grid), jnp.asarray(batch['label'])
  )
  out = {n: np.asarray(v, np.float64) for n, v in out.items()}
  name = f'landscape_{target}_seed{config.seed}'
  files.atomic_write_json(
    os.path.join(workdir, 'results', f'{name}.json'),
    {
      'experts': fam.sources,
      'grid': grid.tolist(),
      'entropy_mean': out['mean'].round(6).tolist(),
      'entropy_foreground': out['foreground'].round(6).tolist(),
      'dice': out['dice'].round(6).tolist(),
      'eam_lam_enc': chosen,
    },
  )
  to_xy = lambda lam: (lam[..., 1] + 0.5 * lam[..., 2], (np.sqrt(3) / 2) * lam[..., 2])
  gx, gy = to_xy(grid)
  fig, axes = plt.subplots(1, 3, figsize=(13, 4.2))
  panels = (
    ('mean', 'mean pixel entropy', 'viridis', np.argmin),
    ('foreground', 'foreground-pixel entropy', 'viridis', np.argmin),
    ('dice', 'Dice (labels)', 'magma', np.argmax),
  )
  for ax, (key, label, cmap, best) in zip(axes, panels):
    sc = ax.tricontourf(gx, gy, out[key], levels=16, cmap=cmap)
    fig.colorbar(sc, ax=ax, label=label, shrink=0.8)
    ax.plot(*to_xy(grid[best(out[key])]), 'w^', ms=9, label='optimum')
    ax.plot(*to_xy(np.asarray(chosen)), 'r*', ms=13, label='EAM $\\lambda_{enc}$')
    for (px, py), src in zip([(0, 0), (1, 0), (0.5, np.sqrt(3) / 2)], fam.sources):
      ax.annotate(src, (px, py), ha='center', va='top' if py == 0 else 'bottom', fontsize=9)
    ax.set_aspect('equal')
    ax.axis('off')
  axes[0].legend(loc='upper left', fontsize=8)
  fig.suptitle(
    f'target {target} (seed {config.seed}): first batch, experts {", ".join(fam.sources)}'
  )
  save_figure(fig, os.path.join(workdir, 'plots', f'{name}.png'))


def write(workdir: str, rows: list[dict]) -> None:
  """results/merge_seg_candidates.* (per seed, target, stream) and the per-batch JSONL."""
  if not rows:
    return
  tables.write_table(
    os.path.join(workdir, 'results', 'merge_seg_candidates'),
    rows,
    title='Best candidate by Dice per batch against entropy choices (means over batches)',
  )
  tables.write_table(
    os.path.join(workdir, 'results', 'merge_seg_candidates_summary'),
    summarize(rows),
    title='The same, mean over seeds and targets, per stream',
  )
  text = []
  seen = collections.OrderedDict(((r['seed'], r['target']), None) for r in rows)
  for seed, target in seen:
    path = _path(workdir, 'partial', seed, target, 'candidates.jsonl')
    if os.path.exists(path):
      with open(path, encoding='utf-8') as f:
        text.append(f.read())
  files.atomic_write_text(
    os.path.join(workdir, 'results', 'merge_seg_best_candidate.jsonl'), ''.join(text)
  )


def summarize(rows: list[dict]) -> list[dict[str, Any]]:
  """Mean over seeds and targets of the per-stream diagnostic rows, one row per stream."""
  by = collections.defaultdict(list)
  for r in rows:
    by[r['stream']].append(r)
  out = []
  for s, rs in by.items():
    row = {'stream': s}
    for key in rs[0]:
      if isinstance(rs[0][key], float):
        row[key] = float(np.mean([r[key] for r in rs]))
    out.append(row)
  return out
