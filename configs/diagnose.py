"""One-line diagnoses of errors raised while `launch/run.py` parses `--config` and its overrides.

ml_collections' config_flags wraps an error raised by `get_config(arg)` in a flags error with the
whole traceback in its text, and reports an unknown `--config.x.y=v` key as an AttributeError or
KeyError without saying which keys exist. These helpers turn both into the project's one template,
`field=value: expected ...`; errors they do not recognise are left to propagate with their traceback.
"""

from __future__ import annotations

import importlib.util
import os
import re

from absl import flags

from yiplearn import errors

# Raised by get_config(arg) while config_flags loads a config file (wrapped in a flags error).
_USER_NAMES = 'UserError|MissingDataError|ValueError|FileNotFoundError'


def config_spec(argv: list[str]) -> str | None:
  """The `path[:args]` given to `--config`, or None."""
  for i, arg in enumerate(argv[1:], start=1):
    if arg == '--config' and i + 1 < len(argv):
      return argv[i + 1]
    if arg.startswith('--config='):
      return arg.split('=', 1)[1]
  return None


def load_config(spec: str):
  """Loads `path[:arg]` the way config_flags does (to list the keys an override could name)."""
  path, _, arg = spec.partition(':')
  module_spec = importlib.util.spec_from_file_location('_yiplearn_config', path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  return module.get_config(arg) if arg else module.get_config()


def missing_file(argv: list[str]) -> str | None:
  """The message for a `--config` file that does not exist, else None."""
  spec = config_spec(argv)
  if spec is None or os.path.isfile(spec.partition(':')[0]):
    return None
  return errors.message('--config', spec, 'an existing configs/<name>.py[:args] file')


def _root_message(e: BaseException) -> str | None:
  """The message of the user error a config file raised, found in config_flags' wrapped text."""
  found = re.findall(rf'(?:{_USER_NAMES}): (.*)', str(e))
  return found[-1].strip() if found else None


def unknown_override(argv: list[str]) -> str | None:
  """Names the `--config.x.y=v` override whose key does not exist, with the keys that do."""
  config = load_config(config_spec(argv))
  for arg in argv[1:]:
    if not arg.startswith('--config.'):
      continue
    name, _, value = arg[len('--') :].partition('=')
    node = config
    for key in name.split('.')[1:]:
      if not hasattr(node, 'keys') or key not in node:
        valid = ', '.join(sorted(node.keys())) if hasattr(node, 'keys') else '(not a ConfigDict)'
        return errors.message(name, value, f'a key that exists; there: {valid}')
      node = node[key]
  return None


def flag_error(argv: list[str], e: BaseException) -> str | None:
  """One line for an error raised while parsing flags, or None when it is not a user error."""
  if isinstance(e, (AttributeError, KeyError)) and config_spec(argv):
    return unknown_override(argv)
  if isinstance(e, errors.UserError):
    return str(e).splitlines()[0]
  if isinstance(e, flags.Error):
    return _root_message(e) or ' '.join(str(e).split())
  return None
