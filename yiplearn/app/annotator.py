"""One person's annotation session: the images, the clicks, one adapted state per method, the record.

:class:`Annotator` is the app without HTTP: every request of the page is one method here, validated first
(a bad request raises :class:`AppError`, a ``UserError`` with an HTTP status and the message
``field=value: expected ...``, before anything changes), then applied through the
:class:`~yiplearn.app.engine.Engine` and logged in the :class:`~yiplearn.app.record.Record`.

* Click: phase 1 shows the pseudo-label (``on_first`` receives it), phase 2 the adapted prediction.
* Undo restores the weights and the clicks before the last click; Reset those before the image's first.
* Accept: Post-Interaction update, mask saved, state saved, next image. Skip: the image's updates are
  dropped (weights as before it), next image. Switching the method resets the image in progress; each
  method keeps its own adapted state.
* :meth:`Annotator.apply` replays a logged event; :func:`replay` turns a whole ``events.jsonl`` back into
  the weights, and :meth:`Annotator.resume` restarts from a workdir (newest state + the events after it).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from yiplearn import errors
from yiplearn.app import images as images_lib
from yiplearn.app.engine import Engine
from yiplearn.app.record import CLOSING, Record

__all__ = ['AppError', 'Annotator', 'replay']


class AppError(errors.UserError):
  """A refused request: HTTP ``status`` and the template message naming ``field`` and ``value``."""

  def __init__(self, status: int, field: str, value: Any, expected: str):
    super().__init__(errors.message(field, value, expected))
    self.status, self.field, self.value = int(status), field, value


@dataclasses.dataclass
class _Step:
  """What a click changed, to undo it: the state before it (None: the method does not update per click)."""

  state: Any
  view: Any
  pred: np.ndarray | None


@dataclasses.dataclass
class _Image:
  index: int
  opened: float
  view: Any = None
  pred: np.ndarray | None = None
  clicks: list = dataclasses.field(default_factory=list)  # [row, col, label, auto]
  steps: list = dataclasses.field(default_factory=list)  # one _Step per click
  dice: list = dataclasses.field(default_factory=list)  # mean foreground Dice after every click
  frozen_dice: list = dataclasses.field(
    default_factory=list
  )  # the frozen model's on the same clicks


class Annotator:
  """The session over ``images`` with ``engine``'s methods, recorded in ``record`` (None: not recorded)."""

  def __init__(
    self,
    engine: Engine,
    images: images_lib.ImageSet,
    record: Record | None = None,
    *,
    method: str = 'pi_mi',
    class_names: Iterable[str] = (),
  ):
    if method not in engine.methods:
      raise errors.invalid('method', method, f'one of {list(engine.methods)}')
    self.engine, self.images, self.record = engine, images, record
    self.method = method
    self.class_names = list(class_names) or [f'class {k}' for k in range(engine.num_classes)]
    self.states = engine.init_states()
    self.done: dict[int, str] = {}
    self.rows: list[dict[str, Any]] = []
    self.current: _Image | None = None
    self._replaying = False
    self.checksums: dict[str, float] = {}  # of the weights last saved or restored, per method
    self._checksum()

  # ---- validation ----------------------------------------------------------------------------------------

  def _index(self, index: Any) -> int:
    n = len(self.images)
    if isinstance(index, bool) or not isinstance(index, int):
      raise AppError(400, 'index', index, f'an integer image index in [0, {n})')
    if not 0 <= index < n:
      raise AppError(404, 'index', index, f'an image index in [0, {n})')
    return index

  def _open_image(self, action: str) -> _Image:
    if self.current is None:
      raise AppError(409, action, 'no image open', 'an open image (POST /api/open first)')
    return self.current

  # ---- events --------------------------------------------------------------------------------------------

  def _log(self, event: str, at: float | None, **fields) -> float:
    now = time.time() if at is None else float(at)
    if self.record is not None and not self._replaying:
      self.record.append({'event': event, **fields, 'method': self.method, 'time': now})
    return now

  def _restore_image(self) -> None:
    """Back to the weights before the open image's first click; its clicks are dropped."""
    cur = self.current
    if cur is not None and cur.steps and cur.steps[0].state is not None:
      self.states[self.method] = cur.steps[0].state
    if cur is not None:
      self.current = _Image(cur.index, cur.opened)

  def open(self, index: Any, *, at: float | None = None) -> dict[str, Any]:
    index = self._index(index)
    self._restore_image()
    now = self._log('open', at, image=index)
    self.current = _Image(index, now)
    return self.status()

  def _open_next(self, at: float | None) -> None:
    self.current = None
    todo = [i for i in range(len(self.images)) if i not in self.done]
    if todo:
      self.open(todo[0], at=at)

  def click(
    self,
    row: Any,
    col: Any,
    label: Any,
    *,
    auto: bool = False,
    on_first: Callable[[dict[str, Any]], None] | None = None,
    at: float | None = None,
  ) -> dict[str, Any]:
    """One click: ``on_first`` gets the pseudo-label prediction, the return value the adapted one."""
    cur = self._open_image('click')
    image = self.images.images[cur.index]
    h, w = image.shape[:2]
    for name, v, n in (('row', row, h), ('col', col, w)):
      if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < n:
        raise AppError(400, name, v, f'an integer in [0, {n}) (inside the {h}x{w} image)')
    k = self.engine.num_classes
    if isinstance(label, bool) or not isinstance(label, int) or not 0 <= label < k:
      raise AppError(400, 'label', label, f'a class index in [0, {k})')
    if len(cur.clicks) >= self.engine.capacity:
      raise AppError(
        409, 'clicks', len(cur.clicks), f'at most {self.engine.capacity} per image (Accept or Undo)'
      )
    eng, m = self.engine, self.method
    snap = lambda: eng.copy(self.states[m]) if eng.updates(m) else None  # the tools donate states
    first = not cur.clicks
    if first:
      snapshot = snap()
      self.states[m], view, pred = eng.start(m, self.states[m], image, (row, col), label, cur.index)
    else:  # the pseudo-label: one forward pass, nothing donated
      view, pred = eng.propose(m, self.states[m], cur.view, (row, col), label)
    if on_first is not None:
      on_first({'stage': 'first', 'pred': pred, 'click': [row, col, label]})
    if not first:
      snapshot = snap()
      self.states[m], view, pred = eng.adapt(m, self.states[m], view)
    cur.steps.append(_Step(snapshot, eng.stored(cur.view), cur.pred))
    cur.view, cur.pred = view, pred
    cur.clicks.append([row, col, label, bool(auto)])
    gt = self.images.gts[cur.index]
    if gt is not None:
      cur.dice.append(self._fg_dice(pred, gt))
      cur.frozen_dice.append(self._fg_dice(eng.frozen_prediction(view), gt))
    self._log('click', at, image=cur.index, row=row, col=col, label=label, auto=bool(auto))
    return {'stage': 'adapted', 'pred': pred, **self.status(current_pred=False)}

  def _fg_dice(self, pred: np.ndarray, gt: np.ndarray) -> float:
    return float(np.mean(self.engine.dice(pred, gt)[1:]))

  def auto(self, *, on_first=None, at: float | None = None) -> dict[str, Any]:
    """The simulated user's next click on the ground truth (demos and tests)."""
    cur = self._open_image('auto')
    gt = self.images.gts[cur.index]
    if gt is None:
      raise AppError(409, 'auto', self.images.names[cur.index], 'an image with a ground truth')
    found = self.engine.auto_click(gt, cur.pred, cur.index, len(cur.clicks))
    if found is None:
      raise AppError(
        409, 'auto', 'no error left', 'a prediction that differs from the ground truth'
      )
    (row, col), label = found
    return self.click(row, col, label, auto=True, on_first=on_first, at=at)

  def undo(self, *, at: float | None = None) -> dict[str, Any]:
    cur = self._open_image('undo')
    if not cur.clicks:
      raise AppError(409, 'clicks', 0, 'at least one click to undo')
    step = cur.steps.pop()
    if step.state is not None:
      self.states[self.method] = step.state
    self.states[self.method], cur.view = self.engine.reshow(
      self.method, self.states[self.method], step.view
    )
    cur.pred = step.pred
    cur.clicks.pop()
    del cur.dice[len(cur.clicks) :], cur.frozen_dice[len(cur.clicks) :]
    self._log('undo', at, image=cur.index)
    return self.status()

  def reset(self, *, at: float | None = None) -> dict[str, Any]:
    cur = self._open_image('reset')
    self._restore_image()
    self._log('reset', at, image=cur.index)
    return self.status()

  def set_method(self, method: Any, *, at: float | None = None) -> dict[str, Any]:
    if method not in self.engine.methods:
      raise AppError(400, 'method', method, f'one of {list(self.engine.methods)}')
    self._restore_image()
    self.method = method
    self._log('method', at, image=None if self.current is None else self.current.index)
    return self.status()

  def accept(self, *, at: float | None = None) -> dict[str, Any]:
    """Post-Interaction update, mask and state saved, the next image opened."""
    cur = self._open_image('accept')
    if not cur.clicks:
      raise AppError(409, 'clicks', 0, 'at least one click before Accept')
    m = self.method
    self.states[m] = self.engine.finish(m, self.states[m], cur.view)
    name = self.images.names[cur.index]
    if self.record is not None and not self._replaying:
      self.record.save_mask(name, images_lib.mask_png(cur.pred))
    now = self._log('accept', at, image=cur.index, clicks=len(cur.clicks))
    self.done[cur.index] = 'accepted'
    self.rows.append(
      {
        'index': cur.index,
        'name': name,
        'method': m,
        'clicks': len(cur.clicks),
        'seconds': round(now - cur.opened, 3),
        'dice': list(cur.dice),
        'frozen_dice': list(cur.frozen_dice),
      }
    )
    self.save()
    self._open_next(at)
    return self.status()

  def skip(self, *, at: float | None = None) -> dict[str, Any]:
    cur = self._open_image('skip')
    self._restore_image()
    self._log('skip', at, image=cur.index)
    self.done[cur.index] = 'skipped'
    self._open_next(at)
    return self.status()

  # ---- persistence ---------------------------------------------------------------------------------------

  def _saved_methods(self) -> dict[str, Any]:
    return {m: s for m, s in self.states.items() if m != 'frozen'}

  def _checksum(self) -> None:
    self.checksums = {m: self.engine.checksum(s) for m, s in self.states.items()}

  def save(self) -> None:
    if self.record is None or self._replaying:
      return
    self._checksum()
    extra = {'done': {str(i): s for i, s in self.done.items()}, 'rows': self.rows}
    self.record.save_state(
      self.engine.to_tree(self._saved_methods()), {**extra, 'method': self.method}
    )

  def restore(self, step: int | None = None) -> int:
    """Loads the newest (or ``step``'s) saved states; returns the number of events they cover."""
    target = self.engine.to_tree(self._saved_methods())
    got = None if self.record is None else self.record.restore_state(target, step)
    if got is None:
      return 0
    tree, extra = got
    self.states.update(self.engine.from_tree(self._saved_methods(), tree))
    self.done = {int(i): s for i, s in extra.get('done', {}).items()}
    self.rows = list(extra.get('rows', []))
    self.method = extra.get('method', self.method)
    self._checksum()
    return int(extra['events'])

  def apply(self, event: dict[str, Any]) -> None:
    """Replays one logged event (its time included, so the learning panel's seconds match)."""
    kind, at = event['event'], event.get('time')
    if kind == 'open':
      self.open(event['image'], at=at)
    elif kind == 'click':
      self.click(event['row'], event['col'], event['label'], auto=event.get('auto', False), at=at)
    elif kind in ('undo', 'reset', 'accept', 'skip'):
      getattr(self, kind)(at=at)
    elif kind == 'method':
      self.set_method(event['method'], at=at)
    elif kind != 'resume':
      raise errors.invalid('event', kind, 'an event written by the app (events.jsonl)')

  def resume(self) -> dict[str, Any]:
    """Restarts on the record: newest state, the events after it up to the last closed image replayed (a
    kill between an Accept's event and its state loses nothing), the image in progress dropped."""
    if self.record is None:
      raise errors.invalid('record', None, 'a workdir Record to resume from')
    covered = self.restore()
    events = self.record.read_events()
    if covered > len(events):
      raise errors.invalid('state', covered, f'at most the {len(events)} events of events.jsonl')
    tail = events[covered:]
    closed = max((i + 1 for i, e in enumerate(tail) if e['event'] in CLOSING), default=0)
    self._replaying = True
    try:
      self.current = None
      for e in tail[:closed]:
        self.apply(e)
    finally:
      self._replaying = False
    self.record.truncate(covered + closed)
    if closed:
      self.save()
    self._log('resume', None, done=len(self.done))
    self._open_next(None)
    return {'covered': covered, 'replayed': closed, 'dropped': len(tail) - closed}

  # ---- the page's view -----------------------------------------------------------------------------------

  def status(self, *, current_pred: bool = True) -> dict[str, Any]:
    cur = self.current
    out: dict[str, Any] = {
      'method': self.method,
      'methods': list(self.engine.methods),
      'classes': self.class_names,
      'max_clicks': self.engine.capacity,
      'images': [
        {
          'index': i,
          'name': n,
          'status': self.done.get(i, 'todo'),
          'has_gt': self.images.gts[i] is not None,
          'shape': list(self.images.images[i].shape[:2]),
        }
        for i, n in enumerate(self.images.names)
      ],
      'weights': {
        m: {**self.engine.counters(s), 'saved_checksum': self.checksums.get(m)}
        for m, s in self.states.items()
      },
      'rows': self.rows,
      'current': None,
    }
    if cur is not None:
      out['current'] = {
        'index': cur.index,
        'name': self.images.names[cur.index],
        'clicks': cur.clicks,
        'dice': cur.dice,
        'frozen_dice': cur.frozen_dice,
      }
      if current_pred:
        out['current']['pred'] = cur.pred
    return out


def replay(
  engine: Engine, images: images_lib.ImageSet, events: Iterable[dict[str, Any]], **kwargs
) -> Annotator:
  """A fresh, unrecorded session driven through ``events`` (an ``events.jsonl``): the same weights."""
  events = list(events)
  if events and 'method' in events[0]:
    kwargs.setdefault('method', events[0]['method'])
  ann = Annotator(engine, images, None, **kwargs)
  ann._replaying = True  # pylint: disable=protected-access
  for e in events:
    ann.apply(e)
  return ann
