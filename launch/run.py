"""Runs one experiment: `python -m launch.run --config configs/<name>.py[:args] --workdir DIR`.

Overrides: `--config.a.b=value`. Multi-host: `--distributed` (or `YIPLEARN_DISTRIBUTED=1`) calls
`jax.distributed.initialize()`, which reads the coordinator from the cluster environment (TPU
pods, Slurm) or from `--coordinator_address`, `--num_processes`, `--process_id`. User errors
(bad config, missing data) print one line and exit with status 2.
"""

import importlib.util
import os
import re
import sys

from absl import app, flags, logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file(
  'config', None, 'Experiment config file (configs/<name>.py[:args]).', lock_config=True
)
_WORKDIR = flags.DEFINE_string(
  'workdir', None, 'Directory for config.json, checkpoints, results and plots.'
)
_DISTRIBUTED = flags.DEFINE_bool(
  'distributed',
  os.environ.get('YIPLEARN_DISTRIBUTED', '0') == '1',
  'Call jax.distributed.initialize() before anything else.',
)
_COORD = flags.DEFINE_string(
  'coordinator_address', None, 'host:port of process 0 (multi-host, optional).'
)
_NPROC = flags.DEFINE_integer('num_processes', None, 'Number of processes (multi-host, optional).')
_PID = flags.DEFINE_integer('process_id', None, "This process's index (multi-host, optional).")

USER_ERRORS = (ValueError, FileNotFoundError, KeyError, NotADirectoryError)


def _fail(message: str) -> None:
  print(f'error: {message}', file=sys.stderr)
  sys.exit(2)


def _config_spec(argv) -> str | None:
  for i, arg in enumerate(argv[1:], start=1):
    if arg == '--config' and i + 1 < len(argv):
      return argv[i + 1]
    if arg.startswith('--config='):
      return arg.split('=', 1)[1]
  return None


def _load_config(spec: str):
  """Loads `path[:arg]` the way config_flags does, to name what is wrong with an override."""
  path, _, arg = spec.partition(':')
  module_spec = importlib.util.spec_from_file_location('_yiplearn_config', path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  return module.get_config(arg) if arg else module.get_config()


def _root_message(e: BaseException) -> str:
  """The one-line message of the error a config raised (config_flags wraps it in a traceback)."""
  text = str(e)
  found = re.findall(r'(?:ValueError|FileNotFoundError|KeyError|TypeError): (.*)', text)
  if found:
    return found[-1].strip()
  return ' '.join(text.split()) or type(e).__name__


def _override_message(argv, e: BaseException) -> str:
  """Names the `--config.x.y=v` override whose key does not exist, with the valid keys there."""
  config = _load_config(_config_spec(argv))
  for arg in argv[1:]:
    if not arg.startswith('--config.'):
      continue
    path = arg[len('--config.') :].split('=', 1)[0].split('.')
    node = config
    for i, key in enumerate(path):
      if not hasattr(node, 'keys') or key not in node:
        where = 'config' + ''.join('.' + k for k in path[:i])
        valid = ', '.join(sorted(node.keys())) if hasattr(node, 'keys') else '(not a ConfigDict)'
        return f'override {arg}: {where} has no key {key!r}; valid keys: {valid}'
      node = node[key]
  return _root_message(e)


def _parse_flags(argv):
  spec = _config_spec(argv)
  if spec is not None and not os.path.isfile(spec.partition(':')[0]):
    _fail(
      f'--config={spec}: config file {spec.partition(":")[0]!r} not found; expected configs/<name>.py[:args]'
    )
  try:
    return flags.FLAGS(argv)
  except (AttributeError, KeyError) as e:  # `--config.<unknown key>=v`
    _fail(_override_message(argv, e))
  except flags.Error as e:
    _fail(_root_message(e))
  except USER_ERRORS as e:  # raised by get_config(arg) while the config file is loaded
    _fail(_root_message(e))


class _QuietLibraries:
  """Drops INFO records of orbax and tfds (one line per file operation) from the absl log."""

  def filter(self, record) -> bool:
    noisy = 'orbax' in record.pathname or 'tensorflow_datasets' in record.pathname
    return record.levelno >= 30 or not noisy


def main(argv):
  logging.get_absl_handler().addFilter(_QuietLibraries())
  if len(argv) > 1:
    _fail(f'unexpected arguments {argv[1:]}: use --config and --workdir')
  if _CONFIG.value is None:
    _fail('--config is required: e.g. --config configs/quickstart.py')
  if not _WORKDIR.value:
    _fail('--workdir is required: the directory the run writes to and resumes from')
  import jax  # pylint: disable=g-import-not-at-top

  if _DISTRIBUTED.value:
    jax.distributed.initialize(
      coordinator_address=_COORD.value, num_processes=_NPROC.value, process_id=_PID.value
    )
  from yiplearn import experiments  # pylint: disable=g-import-not-at-top
  from yiplearn.io import files  # pylint: disable=g-import-not-at-top

  config, workdir = _CONFIG.value, os.path.abspath(_WORKDIR.value)
  try:
    run = experiments.get(config.get('experiment', None))
    os.makedirs(workdir, exist_ok=True)
    if jax.process_index() == 0:
      files.atomic_write_text(
        os.path.join(workdir, 'config.json'), config.to_json_best_effort(indent=2) + '\n'
      )
    logging.info(
      'experiment %s, workdir %s, %d process(es), devices %s',
      config.experiment,
      workdir,
      jax.process_count(),
      jax.devices(),
    )
    run(config, workdir)
  except USER_ERRORS as e:
    _fail(str(e).splitlines()[0] if str(e) else repr(e))


if __name__ == '__main__':
  app.run(main, flags_parser=_parse_flags)
