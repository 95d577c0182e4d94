"""The app's workdir is the record of a session (DESIGN.md 1.4).

    <workdir>/events.jsonl        every event, one JSON object a line: open, click (row, col, label, auto),
                                  undo, reset, method, accept, skip, resume; each with image, method, time
    <workdir>/masks/<name>.png    the accepted mask of each image (class indices), written atomically
    <workdir>/state/<n>/          the adapted state of every method after each accepted image (orbax,
                                  atomic); ``n`` = the number of events it covers; its ``extra`` holds the
                                  done list, the learning panel's rows and the method in use

On an Accept the mask is written first, then the event (flushed), then the state. A process killed at any
moment leaves a log whose complete lines are a prefix of what happened and a state that covers a prefix of
the log; on restart :class:`~yiplearn.app.annotator.Annotator` restores the newest state, replays the
events after it up to the last closed image (Accept or Skip) and drops the rest (the image in progress).
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

from yiplearn.io import checkpoints, files, writers

__all__ = ['Record', 'CLOSING', 'EVENTS']

EVENTS = ('open', 'click', 'undo', 'reset', 'method', 'accept', 'skip', 'resume')
CLOSING = ('accept', 'skip')


class Record:
  """Reads and writes one app workdir."""

  def __init__(self, workdir: str, *, keep_states: int | None = 3):
    self.workdir = os.path.abspath(workdir)
    self.events_path = os.path.join(self.workdir, 'events.jsonl')
    self.masks_dir = os.path.join(self.workdir, 'masks')
    os.makedirs(self.workdir, exist_ok=True)
    self.states = checkpoints.Checkpointer(
      os.path.join(self.workdir, 'state'), max_to_keep=keep_states
    )
    self._log: writers.JsonlWriter | None = None
    self.count = len(self.read_events())

  def read_events(self) -> list[dict[str, Any]]:
    """The complete events of the log (a last line cut short by a kill is not one)."""
    if not os.path.exists(self.events_path):
      return []
    out = []
    with open(self.events_path, encoding='utf-8') as f:
      for line in f:
        if not line.endswith('\n') or not line.strip():
          break
        try:
          out.append(json.loads(line))
        except json.JSONDecodeError:
          break
    return out

  def truncate(self, n: int) -> None:
    """Keeps the first ``n`` complete events (atomically) and appends after them."""
    self.close()
    kept = self.read_events()[:n]
    files.atomic_write_text(self.events_path, ''.join(json.dumps(e) + '\n' for e in kept))
    self.count = len(kept)

  def append(self, event: dict[str, Any]) -> dict[str, Any]:
    """Appends ``event`` (``time`` added when missing) and flushes it; returns it."""
    event = {**event, 'time': event.get('time', time.time())}
    if self._log is None:
      self._log = writers.JsonlWriter(self.events_path)
    self._log.write(event)
    self.count += 1
    return event

  def save_mask(self, name: str, png: bytes) -> str:
    path = os.path.join(self.masks_dir, os.path.splitext(name)[0] + '.png')
    files.atomic_write_bytes(path, png)
    return path

  def save_state(self, tree: Any, extra: dict[str, Any]) -> None:
    """The states after the events logged so far (checkpoint step = their number)."""
    self.states.save(self.count, tree, extra={**extra, 'events': self.count})

  def restore_state(
    self, target: Any, step: int | None = None
  ) -> tuple[Any, dict[str, Any]] | None:
    """The newest (or ``step``'s) saved states restored into ``target``'s structure, or None."""
    if step is None and self.states.latest_step() is None:
      return None
    return self.states.restore(step, target)

  def close(self) -> None:
    if self._log is not None:
      self._log.close()
      self._log = None
