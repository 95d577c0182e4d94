"""The one error type and message template of the project.

Every validator (configs, files, arrays entering the core, requests to the app) raises
:class:`UserError` with the message ``field=value: expected ...``, built by :func:`invalid`.
``launch/run.py`` prints a ``UserError`` as one line and exits with status 2; any other exception is a
programming error and keeps its traceback.
"""

from __future__ import annotations

from typing import Any

__all__ = ['UserError', 'MissingDataError', 'invalid', 'message']


class UserError(ValueError):
  """Bad input from the user: a config field, a file, an array or a request."""


class MissingDataError(UserError, FileNotFoundError):
  """A file or directory the user must provide is absent (the message says what to put where)."""


def message(field: str, value: Any, expected: str) -> str:
  """``field=value: expected ...`` (strings are quoted, everything else printed as is)."""
  shown = repr(value) if isinstance(value, str) else value
  return f'{field}={shown}: expected {expected}'


def invalid(field: str, value: Any, expected: str) -> UserError:
  """A :class:`UserError` with the template message; ``raise errors.invalid('lr', -1, '> 0')``."""
  return UserError(message(field, value, expected))
