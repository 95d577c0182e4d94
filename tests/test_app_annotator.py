"""The annotation session without HTTP: undo/reset/skip restore weights, one state per method, replay of
events.jsonl reproduces the weights, resume after a kill loses only the image in progress."""

import json
import os
import shutil

import numpy as np
import pytest

from tests import app_toys
from yiplearn import errors
from yiplearn.app.annotator import Annotator, AppError, replay
from yiplearn.app.record import Record


def _session(workdir=None, method='pi_mi'):
  record = None if workdir is None else Record(str(workdir))
  ann = Annotator(app_toys.toy_engine(), app_toys.toy_images(), record, method=method)
  if record is not None:
    ann.resume()
  else:
    ann.open(0)
  return ann


def _params(ann, method='pi_mi'):
  return [p.copy() for p in ann.engine.params_of(ann.states[method])]


def _equal(a, b, atol=0.0):
  return all(np.allclose(x, y, rtol=0, atol=atol) for x, y in zip(a, b))


def _clicks(ann, n):
  gt = ann.images.gts[ann.current.index]
  ann.click(*app_toys.gt_pixel(gt), 1)
  for _ in range(n - 1):
    ann.auto()


def test_undo_restores_the_weights_and_clicks_before_the_last_click():
  ann = _session()
  p0 = _params(ann)
  gt = ann.images.gts[0]
  seen = []
  ann.click(*app_toys.gt_pixel(gt), 1, on_first=seen.append)
  assert seen[0]['stage'] == 'first' and _equal(_params(ann), p0)  # click 1: no update
  p1, pred1 = _params(ann), ann.current.pred.copy()
  ann.click(3, 4, 0)
  p2, pred2 = _params(ann), ann.current.pred.copy()
  assert not _equal(p2, p1)  # the MI step
  ann.undo()
  assert _equal(_params(ann), p1) and ann.current.clicks == [[*app_toys.gt_pixel(gt), 1, False]]
  np.testing.assert_array_equal(ann.current.pred, pred1)
  ann.click(3, 4, 0)  # the same click again: the same update (the re-shown view is the same)
  assert _equal(_params(ann), p2)
  np.testing.assert_array_equal(ann.current.pred, pred2)
  ann.reset()
  assert _equal(_params(ann), p0) and ann.current.clicks == []
  _clicks(ann, 3)
  ann.skip()
  assert _equal(_params(ann), p0) and ann.done == {0: 'skipped'} and ann.current.index == 1
  with pytest.raises(AppError, match=r'^clicks=0: expected at least one click to undo$'):
    ann.undo()


def test_one_adapted_state_per_method():
  ann = _session()
  _clicks(ann, 3)
  ann.accept()  # PI + MI learns from image 0
  p_mi = _params(ann)
  frozen0 = _params(ann, 'frozen')
  ann.set_method('frozen')
  _clicks(ann, 2)
  ann.accept()
  assert _equal(_params(ann, 'frozen'), frozen0)  # frozen never changes
  ann.set_method('pi_mi')
  assert _equal(_params(ann), p_mi)
  assert [r['method'] for r in ann.rows] == ['pi_mi', 'frozen']
  assert len(ann.rows[0]['dice']) == 3 == len(ann.rows[0]['frozen_dice'])


def test_replaying_the_event_log_reproduces_the_weights(tmp_path):
  ann = _session(tmp_path)
  _clicks(ann, 3)
  ann.undo()
  ann.accept()
  _clicks(ann, 2)
  ann.set_method('frozen')  # resets image 1 for PI + MI
  _clicks(ann, 2)
  ann.accept()
  ann.set_method('pi_mi')
  _clicks(ann, 4)
  ann.reset()
  _clicks(ann, 2)
  ann.accept()
  events = Record(str(tmp_path)).read_events()
  again = replay(ann.engine, ann.images, events)
  for m in ann.engine.methods:
    assert _equal(_params(again, m), _params(ann, m), atol=1e-6)
  assert again.done == ann.done and again.rows == ann.rows  # seconds too: from the events' times
  with pytest.raises(
    errors.UserError, match=r"^event='drop': expected an event written by the app"
  ):
    again.apply({'event': 'drop'})


def test_resume_after_a_kill_between_the_event_and_the_state(tmp_path):
  ann = _session(tmp_path)
  _clicks(ann, 3)
  ann.accept()
  _clicks(ann, 3)
  ann.accept()
  expected = _params(ann)
  _clicks(ann, 3)  # image 2 in progress
  record = ann.record
  newest = record.states.latest_step()
  record.close()
  shutil.rmtree(os.path.join(str(tmp_path), 'state', str(newest)))  # killed before the state
  with open(record.events_path, 'a') as f:
    f.write('{"event": "cli')  # and in the middle of a line
  back = _session(tmp_path)
  assert _equal(_params(back), expected) and back.done == {0: 'accepted', 1: 'accepted'}
  assert back.current.index == 2 and back.current.clicks == []
  kinds = [e['event'] for e in Record(str(tmp_path)).read_events()]
  assert kinds[-3:] == ['accept', 'resume', 'open']  # the image in progress was dropped
  with open(record.events_path) as f:
    assert all(json.loads(line) for line in f)  # no cut line left
  assert back.record.states.latest_step() is not None  # the replayed Accept saved again
