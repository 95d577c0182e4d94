"""The whole interactive pipeline in one workdir: pre-train (or resume), then adapt online.

`config.pretrain` is a `pretrain` config and runs in `<workdir>/pretrain`; `config.adapt` is an
`adapt_interactive` config that loads the best pre-training checkpoint and writes its results
to `<workdir>`. A run started again in the same workdir resumes where it stopped.
"""

from __future__ import annotations

import os
from typing import Any

import ml_collections

from yiplearn.data import registry
from yiplearn.experiments import adapt_interactive, pretrain


def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  pre_dir = os.path.join(workdir, 'pretrain')
  pre_cfg = ml_collections.ConfigDict(config.pretrain.to_dict())
  if not pre_cfg.data.get('data_dir', ''):  # one data dir for both halves: datasets are built once
    pre_cfg.data.data_dir = registry.default_data_dir(workdir)
  summary = {'pretrain': pretrain.run(pre_cfg, pre_dir)}
  adapt_cfg = ml_collections.ConfigDict(config.adapt.to_dict())
  adapt_cfg.checkpoint_dir = os.path.join(pre_dir, 'best')
  summary['adapt'] = adapt_interactive.run(adapt_cfg, workdir)
  return summary
