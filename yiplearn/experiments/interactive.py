"""The whole interactive pipeline in one workdir: pre-train (or resume), then adapt online.

`config.pretrain` is a `pretrain` config and runs in `<workdir>/pretrain`; `config.adapt` is an
`adapt_interactive` config that loads the best pre-training checkpoint and writes its results
to `<workdir>`. A run started again in the same workdir resumes where it stopped.

`config.seeds = (0, 1, 2)` runs the whole pipeline once per pre-training seed under
`<workdir>/seed_<s>/` (pre-training and adaptation seeded with `s`), then writes
`results/interactive_seeds.{md,csv,json}`: per target and method, mean ± std over the seeds
(`experiments/seeds.py`).
"""

from __future__ import annotations

import os
from typing import Any

import ml_collections

from yiplearn.data import registry
from yiplearn.experiments import adapt_interactive, pretrain, seeds


def _rows(out: dict[str, Any]) -> list[dict]:
  return [row for rows in out['adapt'].values() for row in rows]


def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  if tuple(config.get('seeds', ()) or ()):
    return seeds.run_seeds(
      run,
      config,
      workdir,
      rows=_rows,
      keys=('target', 'method'),
      name='interactive_seeds',
      title='Interactive segmentation per target and method',
    )
  pre_dir = os.path.join(workdir, 'pretrain')
  pre_cfg = ml_collections.ConfigDict(config.pretrain.to_dict())
  if not pre_cfg.data.get('data_dir', ''):  # one data dir for both halves: datasets are built once
    pre_cfg.data.data_dir = registry.default_data_dir(workdir)
  summary = {'pretrain': pretrain.run(pre_cfg, pre_dir)}
  adapt_cfg = ml_collections.ConfigDict(config.adapt.to_dict())
  adapt_cfg.checkpoint_dir = os.path.join(pre_dir, 'best')
  summary['adapt'] = adapt_interactive.run(adapt_cfg, workdir)
  return summary
