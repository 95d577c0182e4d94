"""Shared helpers for config files: the typed `:args` parser and common sub-configs.

A config is chosen as `--config configs/<name>.py:<args>`, where `<args>` is a comma-separated
list of `key=value` pairs or bare `key`s (a bare key sets a boolean to True), e.g.
`configs/interactive_lgg.py:quick,shift=site,size=64`. Each config declares its keys with typed
defaults; an unknown key or a value of the wrong type is a `yiplearn.errors.UserError` (a ValueError)
in the template `field=value: expected ...`.
"""

from __future__ import annotations

from typing import Any

import ml_collections

from yiplearn import errors

_TRUE = {'1', 'true', 'yes', 'on', 'y', 't'}
_FALSE = {'0', 'false', 'no', 'off', 'n', 'f'}


def _convert(key: str, raw: str, default: Any) -> Any:
  kind = type(default)
  try:
    if kind is bool:
      low = raw.strip().lower()
      if low in _TRUE:
        return True
      if low in _FALSE:
        return False
      raise ValueError
    if kind is int:
      return int(raw)
    if kind is float:
      return float(raw)
    if kind in (tuple, list):
      parts = [p for p in raw.replace('+', ';').split(';') if p]
      elem = type(default[0]) if default else str
      return kind(elem(p) for p in parts)
    return raw
  except ValueError:
    raise errors.invalid(
      f'config argument {key}', raw, f'{kind.__name__} (default {default!r})'
    ) from None


def parse_arg(arg: str | None, **spec: Any) -> ml_collections.ConfigDict:
  """Parses `arg` ("quick,size=64") against `spec` (key -> typed default).

  Lists and tuples are written with `;` or `+` between items (`domains=a;b`). Returns a
  ConfigDict with every key of `spec`, overridden where `arg` says so.
  """
  out = dict(spec)
  for item in (arg or '').split(','):
    item = item.strip()
    if not item:
      continue
    key, sep, raw = item.partition('=')
    key = key.strip()
    if key not in spec:
      raise errors.invalid(
        'config argument', key, f'a key of this config, one of {", ".join(sorted(spec))}'
      )
    if not sep:
      if not isinstance(spec[key], bool):
        raise errors.invalid(
          f'config argument {key}', '', f'a value ({key}=...) of type {type(spec[key]).__name__}'
        )
      out[key] = True
    else:
      out[key] = _convert(key, raw, spec[key])
  return ml_collections.ConfigDict(out)


def check_choice(name: str, value: Any, choices) -> Any:
  """Returns `value` if it is one of `choices`, else raises a UserError naming the field."""
  if value not in choices:
    raise errors.invalid(name, value, f'one of {", ".join(map(repr, choices))}')
  return value
