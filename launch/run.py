"""Runs one experiment: `python -m launch.run --config configs/<name>.py[:args] --workdir DIR`.

Overrides: `--config.a.b=value`. Multi-host: `--distributed` (or `YIPLEARN_DISTRIBUTED=1`) calls
`jax.distributed.initialize()` (coordinator from the cluster environment or the flags below).
A `yiplearn.errors.UserError` (bad config, missing data) prints one line and exits with status 2;
every other exception is a bug and keeps its traceback.
"""

import os
import sys

from absl import app, flags
from ml_collections import config_flags

from configs import diagnose
from yiplearn import errors

_CONFIG = config_flags.DEFINE_config_file(
  'config', None, 'configs/<name>.py[:args]', lock_config=True
)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Directory the run writes to and resumes from.')
_DISTRIBUTED = flags.DEFINE_bool(
  'distributed', os.environ.get('YIPLEARN_DISTRIBUTED', '0') == '1', 'jax.distributed.initialize()'
)
_COORD = flags.DEFINE_string('coordinator_address', None, 'host:port of process 0 (multi-host).')
_NPROC = flags.DEFINE_integer('num_processes', None, 'Number of processes (multi-host).')
_PID = flags.DEFINE_integer('process_id', None, "This process's index (multi-host).")


def _fail(message: str) -> None:
  print(f'error: {message}', file=sys.stderr)
  sys.exit(2)


def _parse_flags(argv):
  if message := diagnose.missing_file(argv):
    _fail(message)
  try:
    return flags.FLAGS(argv)
  except Exception as e:  # pylint: disable=broad-except
    if (message := diagnose.flag_error(argv, e)) is None:
      raise
    _fail(message)


def main(argv):
  if len(argv) > 1:
    _fail(errors.message('arguments', ' '.join(argv[1:]), 'only --config, --workdir and flags'))
  if _CONFIG.value is None or not _WORKDIR.value:
    _fail(errors.message('--config/--workdir', None, 'both, e.g. --config configs/quickstart.py'))
  import jax  # pylint: disable=g-import-not-at-top

  if _DISTRIBUTED.value:
    jax.distributed.initialize(_COORD.value, _NPROC.value, _PID.value)
  from yiplearn import experiments  # pylint: disable=g-import-not-at-top

  try:
    experiments.launch(_CONFIG.value, os.path.abspath(_WORKDIR.value))
  except errors.UserError as e:
    _fail(str(e).splitlines()[0] if str(e) else repr(e))


if __name__ == '__main__':
  app.run(main, flags_parser=_parse_flags)
