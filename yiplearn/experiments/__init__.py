"""Experiments: one module per program, each exposing `run(config, workdir) -> dict`.

`config.experiment` names the module; `get(name)` imports it lazily so launching one experiment
never imports the others.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from typing import Any

from yiplearn import errors

EXPERIMENTS = {
  'quickstart': 'yiplearn.experiments.quickstart',
  'dataset_card': 'yiplearn.experiments.dataset_card',
  'interactive': 'yiplearn.experiments.interactive',
  'pretrain': 'yiplearn.experiments.pretrain',
  'adapt_interactive': 'yiplearn.experiments.adapt_interactive',
  'train_experts': 'yiplearn.experiments.train_experts',
  'merge_online': 'yiplearn.experiments.merge_online',
  'merge_seg': 'yiplearn.experiments.merge_seg',
  'sweep_interactive': 'yiplearn.experiments.sweep_interactive',
  'annotate': 'yiplearn.app.serve',  # the click-and-learn web app (a program like the experiments)
}


def get(name: str) -> Callable:
  """The `run(config, workdir)` function of experiment `name`."""
  if name not in EXPERIMENTS:
    raise errors.invalid('config.experiment', name, f'one of {", ".join(sorted(EXPERIMENTS))}')
  return importlib.import_module(EXPERIMENTS[name]).run


class _QuietLibraries:
  """Drops INFO records of orbax and tfds (one line per file operation), tfds's warnings repeated on
  every load of a dataset it built, and jax's backends that are not there (`Unable to initialize
  backend 'tpu'` on a CPU machine) from the absl log."""

  REPEATED = ('Using custom data configuration', 'has no dataset_info.json')

  def filter(self, record) -> bool:
    path = record.pathname
    if 'orbax' in path or 'tensorflow_datasets' in path:
      if record.levelno < 30:
        return False
      return not any(r in str(record.msg) for r in self.REPEATED)
    if 'xla_bridge' in path and record.levelno < 30:
      return not str(record.msg).startswith('Unable to initialize backend')
    return True


def launch(config: Any, workdir: str) -> dict:
  """What `launch/run.py` does after parsing flags: the experiment's run, with `config.json` written."""
  import jax  # pylint: disable=g-import-not-at-top
  from absl import logging  # pylint: disable=g-import-not-at-top

  from yiplearn.io import files  # pylint: disable=g-import-not-at-top

  logging.get_absl_handler().addFilter(_QuietLibraries())
  run = get(config.get('experiment', None))
  os.makedirs(workdir, exist_ok=True)
  if files.is_writer():
    text = config.to_json_best_effort(indent=2) + '\n'
    files.atomic_write_text(os.path.join(workdir, 'config.json'), text)
  logging.info(
    'experiment %s, workdir %s, %d process(es), devices %s',
    config.experiment,
    workdir,
    jax.process_count(),
    jax.devices(),
  )
  return run(config, workdir)
