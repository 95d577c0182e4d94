"""One experiment over several seeds: one resumable run per seed, then mean +- standard deviation.

`config.seeds = (0, 1, 2)` (or the config argument `seeds=0;1;2`) runs the whole experiment once per
seed, each into `<workdir>/seed_<s>/` with every `seed` field of the config set to `s` (for the
interactive driver: pre-training and adaptation; for merging: base and expert initialisation, training
order, streams, DARE masks, calibration set) and shared checkpoint folders such as `experts_workdir`
moved to `<folder>/seed_<s>/`. Each seed's run resumes on its own, so a killed multi-seed run started
again continues where it stopped. The experiment names the rows to aggregate and their key columns
(merging: per method; interactive: per target and method); this module writes

  results/<name>.{md,csv,json}    per row: 'mean +- std' over seeds of every numeric column
                                  (sample std, ddof = 1)
  results/<name>_values.json      the per-seed values behind every cell
"""

from __future__ import annotations

import collections
import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from absl import logging

from yiplearn import errors
from yiplearn.io import files, tables

SEED_PATHS = ('experts_workdir',)  # shared folders that get a seed_<s>/ of their own


def _set_seeds(c: Any, seed: int) -> None:
  for key in list(c.keys()):
    value = c[key]
    if key == 'seed':
      c.seed = int(seed)
    elif key in SEED_PATHS and value:
      c[key] = os.path.join(value, f'seed_{seed}')
    elif hasattr(value, 'keys') and hasattr(value, 'unlocked'):
      _set_seeds(value, seed)


def seed_config(config: Any, seed: int) -> Any:
  """A copy of `config` for one seed (no `seeds` loop of its own)."""
  c = config.copy_and_resolve_references()
  with c.unlocked():
    _set_seeds(c, seed)
    c.seeds = ()
  return c


def aggregate(
  summaries: dict[int, list[dict]], keys: Sequence[str] = ('method',)
) -> tuple[list[dict], list[dict]]:
  """Per-seed rows ({<keys>..., <numeric columns>...}) -> (formatted rows, value rows).

  Formatted cells read 'm ± s' (3 decimals); value rows hold `<col>_mean`, `<col>_std` and the
  per-seed list `<col>_seeds`. A row missing from some seed is averaged over the seeds it has;
  non-numeric columns other than the keys are left out."""
  cells: dict[tuple, list[float]] = collections.defaultdict(list)
  row_keys, cols = [], []
  for rows in summaries.values():
    for r in rows:
      rk = tuple(r[k] for k in keys)
      if rk not in row_keys:
        row_keys.append(rk)
      for c, v in r.items():
        if c in keys or isinstance(v, (str, bool)) or v is None:
          continue
        if c not in cols:
          cols.append(c)
        cells[(rk, c)].append(float(v))
  fmt_rows, value_rows = [], []
  for rk in row_keys:
    fmt, val = dict(zip(keys, rk)), dict(zip(keys, rk))
    for c in cols:
      v = np.asarray(cells[(rk, c)], np.float64)
      if not v.size:
        continue
      mean = float(np.mean(v))
      std = float(np.std(v, ddof=1)) if v.size > 1 else 0.0
      fmt[c] = f'{mean:.3f} ± {std:.3f}'
      val.update({f'{c}_mean': mean, f'{c}_std': std, f'{c}_seeds': v.tolist()})
    fmt['seeds'] = max((len(cells[(rk, c)]) for c in cols), default=0)
    fmt_rows.append(fmt)
    value_rows.append(val)
  return fmt_rows, value_rows


def run_seeds(
  run_one: Callable[[Any, str], dict],
  config: Any,
  workdir: str,
  *,
  rows: Callable[[dict], list[dict]] = lambda out: out['summary'],
  keys: Sequence[str] = ('method',),
  name: str = 'merge_summary_seeds',
  title: str = 'mean ± std over seeds',
) -> dict:
  """Runs `run_one(seed_config(config, s), <workdir>/seed_<s>)` for every seed, then aggregates
  `rows(result)` of every seed per `keys` into `results/<name>.*`."""
  seeds = [int(s) for s in config.seeds]
  if len(set(seeds)) != len(seeds):
    raise errors.invalid('seeds', tuple(seeds), 'distinct seeds')
  summaries = {}
  for s in seeds:
    logging.info('seed %d of %s', s, seeds)
    summaries[s] = rows(run_one(seed_config(config, s), os.path.join(workdir, f'seed_{s}')))
  fmt_rows, value_rows = aggregate(summaries, keys)
  res_dir = os.path.join(workdir, 'results')
  md = tables.write_table(
    os.path.join(res_dir, name), fmt_rows, title=f'{title}, mean ± std over seeds {seeds}'
  )
  if files.is_writer():
    files.atomic_write_json(
      os.path.join(res_dir, f'{name}_values.json'), {'seeds': seeds, 'rows': value_rows}
    )
  logging.info('\n%s', md)
  return {'summaries': summaries, 'summary': fmt_rows, 'values': value_rows}
