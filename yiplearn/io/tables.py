"""Result tables written atomically as Markdown, CSV and JSON from one list of row dicts."""

from __future__ import annotations

import csv
import io
import math
import os
from collections.abc import Sequence
from typing import Any

from yiplearn import errors
from yiplearn.io import files


def _columns(rows: Sequence[dict], columns: Sequence[str] | None) -> list[str]:
  if columns is not None:
    return list(columns)
  cols: list[str] = []
  for row in rows:
    for k in row:
      if k not in cols:
        cols.append(k)
  return cols


def _fmt(value: Any, floatfmt: str) -> str:
  if value is None:
    return ''
  if hasattr(value, 'item') and getattr(value, 'ndim', 1) == 0:
    value = value.item()
  if isinstance(value, bool):
    return str(value)
  if isinstance(value, float):
    if math.isnan(value):
      return 'nan'
    return format(value, floatfmt)
  return str(value)


def to_markdown(
  rows: Sequence[dict],
  columns: Sequence[str] | None = None,
  title: str | None = None,
  floatfmt: str = '.4f',
) -> str:
  """A GitHub-flavoured Markdown table (numbers right-aligned)."""
  cols = _columns(rows, columns)
  cells = [[_fmt(r.get(c), floatfmt) for c in cols] for r in rows]
  numeric = [
    all(
      isinstance(r.get(c), (int, float)) or r.get(c) is None or hasattr(r.get(c), 'dtype')
      for r in rows
    )
    for c in cols
  ]
  widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(cols)]

  def line(values):
    return (
      '| '
      + ' | '.join(v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric))
      + ' |'
    )

  sep = (
    '|'
    + '|'.join(('-' * (w + 1) + ':') if num else ('-' * (w + 2)) for w, num in zip(widths, numeric))
    + '|'
  )
  out = []
  if title:
    out += [f'### {title}', '']
  out += [line(cols), sep] + [line(r) for r in cells]
  return '\n'.join(out) + '\n'


def to_csv(rows: Sequence[dict], columns: Sequence[str] | None = None) -> str:
  cols = _columns(rows, columns)
  buf = io.StringIO()
  writer = csv.DictWriter(buf, fieldnames=cols, extrasaction='ignore', lineterminator='\n')
  writer.writeheader()
  for r in rows:
    writer.writerow({c: (r.get(c).item() if hasattr(r.get(c), 'item') else r.get(c)) for c in cols})
  return buf.getvalue()


def write_table(
  path_stem: str | os.PathLike,
  rows: Sequence[dict],
  columns: Sequence[str] | None = None,
  title: str | None = None,
  floatfmt: str = '.4f',
) -> str:
  """Writes `<stem>.md`, `<stem>.csv` and `<stem>.json` atomically; returns the Markdown text."""
  if not isinstance(rows, (list, tuple)) or any(not isinstance(r, dict) for r in rows):
    raise errors.invalid('rows', type(rows).__name__, 'a list of dicts, one per table row')
  stem = os.fspath(path_stem)
  md = to_markdown(rows, columns, title, floatfmt)
  if not files.is_writer():  # multi-host: one process writes results
    return md
  files.atomic_write_text(stem + '.md', md)
  files.atomic_write_text(stem + '.csv', to_csv(rows, columns))
  files.atomic_write_json(
    stem + '.json', {'title': title, 'columns': _columns(rows, columns), 'rows': list(rows)}
  )
  return md
