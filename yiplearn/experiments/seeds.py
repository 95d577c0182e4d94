"""`merge_online` over several seeds of base and expert training: mean +- standard deviation.

`config.seeds = (0, 1, 2)` (or the config argument `seeds=0;1;2`) runs the whole experiment once per
seed, each into `<workdir>/seed_<s>/` with `config.seed = s` (base and expert initialisation, training
order, streams, DARE masks, calibration set) and expert checkpoints under
`<experts_workdir>/seed_<s>/` when `experts_workdir` is set. Each seed's run resumes on its own, so a
killed multi-seed run started again continues where it stopped. Then writes

  results/merge_summary_seeds.{md,csv,json}   per method and stream: 'mean +- std' over seeds of the
                                              accuracy averaged over targets (sample std, ddof = 1)
  results/merge_summary_seeds_values.json     the per-seed values behind every cell
"""

from __future__ import annotations

import collections
import os
from collections.abc import Callable
from typing import Any

import numpy as np
from absl import logging

from yiplearn import errors
from yiplearn.io import files, tables


def seed_config(config: Any, seed: int) -> Any:
  """A copy of `config` for one seed (no `seeds` loop of its own)."""
  c = config.copy_and_resolve_references()
  with c.unlocked():
    c.seed = int(seed)
    c.seeds = ()
    if c.get('experts_workdir', ''):
      c.experts_workdir = os.path.join(c.experts_workdir, f'seed_{seed}')
  return c


def aggregate(summaries: dict[int, list[dict]]) -> tuple[list[dict], list[dict]]:
  """Per-seed summary rows ({method, <stream>..., mean}) -> (formatted rows, value rows).

  Formatted cells read 'm +- s' (3 decimals); value rows hold `<col>_mean`, `<col>_std` and the
  per-seed list `<col>_seeds`. A method missing from some seed is averaged over the seeds it has."""
  cells: dict[tuple[str, str], list[float]] = collections.defaultdict(list)
  methods, cols = [], []
  for rows in summaries.values():
    for r in rows:
      if r['method'] not in methods:
        methods.append(r['method'])
      for c, v in r.items():
        if c == 'method':
          continue
        if c not in cols:
          cols.append(c)
        cells[(r['method'], c)].append(float(v))
  fmt_rows, value_rows = [], []
  for m in methods:
    fmt, val = {'method': m}, {'method': m}
    for c in cols:
      v = np.asarray(cells[(m, c)], np.float64)
      mean = float(np.mean(v)) if v.size else float('nan')
      std = float(np.std(v, ddof=1)) if v.size > 1 else 0.0
      fmt[c] = f'{mean:.3f} ± {std:.3f}'
      val.update({f'{c}_mean': mean, f'{c}_std': std, f'{c}_seeds': v.tolist()})
    fmt['seeds'] = len(cells[(m, cols[0])]) if cols else 0
    fmt_rows.append(fmt)
    value_rows.append(val)
  return fmt_rows, value_rows


def run_seeds(run_one: Callable[[Any, str], dict], config: Any, workdir: str) -> dict:
  """Runs `run_one(seed_config(config, s), <workdir>/seed_<s>)` for every seed, then aggregates."""
  seeds = [int(s) for s in config.seeds]
  if len(set(seeds)) != len(seeds):
    raise errors.invalid('seeds', tuple(seeds), 'distinct seeds')
  summaries = {}
  for s in seeds:
    logging.info('seed %d of %s', s, seeds)
    summaries[s] = run_one(seed_config(config, s), os.path.join(workdir, f'seed_{s}'))['summary']
  fmt_rows, value_rows = aggregate(summaries)
  res_dir = os.path.join(workdir, 'results')
  md = tables.write_table(
    os.path.join(res_dir, 'merge_summary_seeds'),
    fmt_rows,
    title=f'Accuracy per method and stream, mean over targets, mean ± std over seeds {seeds}',
  )
  if files.is_writer():
    files.atomic_write_json(
      os.path.join(res_dir, 'merge_summary_seeds_values.json'),
      {'seeds': seeds, 'rows': value_rows},
    )
  logging.info('\n%s', md)
  return {'summaries': summaries, 'summary': fmt_rows, 'values': value_rows}
