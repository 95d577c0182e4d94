"""Experiments: one module per program, each exposing `run(config, workdir) -> dict`.

`config.experiment` names the module; `get(name)` imports it lazily so launching one experiment
never imports the others.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

EXPERIMENTS = {
  'quickstart': 'yiplearn.experiments.quickstart',
  'dataset_card': 'yiplearn.experiments.dataset_card',
  'interactive': 'yiplearn.experiments.interactive',
  'pretrain': 'yiplearn.experiments.pretrain',
  'adapt_interactive': 'yiplearn.experiments.adapt_interactive',
  'train_experts': 'yiplearn.experiments.train_experts',
  'merge_online': 'yiplearn.experiments.merge_online',
  'sweep_interactive': 'yiplearn.experiments.sweep_interactive',
}


def get(name: str) -> Callable:
  """The `run(config, workdir)` function of experiment `name`."""
  if name not in EXPERIMENTS:
    raise ValueError(
      f'config.experiment={name!r} is not known; valid experiments: {", ".join(sorted(EXPERIMENTS))}'
    )
  return importlib.import_module(EXPERIMENTS[name]).run
