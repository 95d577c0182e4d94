"""The resumable item loop: an interrupted loop resumed from its checkpoint ends like an uninterrupted
one (carry, log records, done marker); the checkpoint schedule; the smoothed progress estimate."""

import json
import logging

import numpy as np
import pytest

from yiplearn import errors
from yiplearn.io import loop as loop_lib
from yiplearn.io import progress


class Killed(Exception):
  pass


def _run(tmp_path, name, *, kill_at=None, every=3, total=8, done_ext='.npz'):
  """Sums item values into a carry; raises Killed after item `kill_at` (its log record written)."""
  base = tmp_path / name
  lp = loop_lib.ItemLoop(
    base,
    total,
    every=every,
    desc='items',
    done_path=str(base) + done_ext,
    log_path=str(base) + '.jsonl',
  )
  if lp.finished:
    return lp.result(), lp
  carry, extra = lp.restore({'sum': np.zeros((), np.float32), 'seen': np.zeros(total, np.int32)})
  carry = {k: np.asarray(v) for k, v in carry.items()}
  assert extra == ({'items_done': lp.start} if lp.start else {})
  for i in lp:
    carry['sum'] = carry['sum'] + i * 1.5
    carry['seen'][i] += 1
    lp.log.write({'index': i, 'value': i * 1.5})
    lp.save(i + 1, carry, extra={'items_done': i + 1})
    if i == kill_at:
      lp.close()
      raise Killed
  result = {'sum': carry['sum'], 'seen': carry['seen']}
  if done_ext == '.json':
    result = {k: np.asarray(v).tolist() for k, v in result.items()}
  return lp.finish(result), lp


def test_killed_loop_resumes_to_the_uninterrupted_result(tmp_path):
  ref, _ = _run(tmp_path, 'ref')
  with pytest.raises(Killed):
    _run(tmp_path, 'run', kill_at=4)  # checkpoint after 3 items; records 3 and 4 written after it
  got, lp = _run(tmp_path, 'run')
  assert lp.start == 3
  np.testing.assert_array_equal(got['seen'], np.ones(8))  # items 3, 4 redone from the checkpoint
  assert float(got['sum']) == float(ref['sum']) == 1.5 * sum(range(8))
  records = [json.loads(line) for line in (tmp_path / 'run.jsonl').read_text().splitlines()]
  assert [r['index'] for r in records] == list(range(8))  # each item once
  assert (tmp_path / 'run.jsonl').read_bytes() == (tmp_path / 'ref.jsonl').read_bytes()
  # A finished loop returns its done marker without running again.
  again, lp = _run(tmp_path, 'run', kill_at=0)
  assert lp.progress is None and float(again['sum']) == float(ref['sum'])


def test_json_done_marker(tmp_path):
  ref, _ = _run(tmp_path, 'j', total=4, done_ext='.json')
  assert ref == {'sum': 9.0, 'seen': [1, 1, 1, 1]}
  assert json.loads((tmp_path / 'j.json').read_text()) == ref
  assert _run(tmp_path, 'j', total=4, done_ext='.json', kill_at=0)[0] == ref


def test_checkpoint_schedule(tmp_path):
  lp = loop_lib.ItemLoop(tmp_path / 'c', 7, every=3, desc='steps')
  assert [d for d in range(1, 8) if lp.due(d)] == [3, 6]
  lp = loop_lib.ItemLoop(tmp_path / 'c', 7, every=3, desc='steps', save_last=True)
  assert [d for d in range(1, 8) if lp.due(d)] == [3, 6, 7]
  lp.restore({'w': np.zeros(2)})
  assert lp.start == 0 and list(lp) == list(range(7))
  with pytest.raises(errors.UserError, match='checkpoint_every=0: expected'):
    loop_lib.ItemLoop(tmp_path / 'c', 7, every=0, desc='steps')


def test_smoothed_eta_skips_the_compilation_items(caplog):
  now = [0.0]
  p = progress.Progress(100, 'images', log_every_s=1e9, warmup=2, clock=lambda: now[0])
  for dt in (60.0, 20.0):  # two compilation-dominated items: not timed
    now[0] += dt
    p.update()
  assert p.seconds_left() is None and 'left ?' in p.message()
  with caplog.at_level(logging.INFO):
    for _ in range(10):
      now[0] += 1.0
      p.update()
  # Once, after 5 timed items: 85 s so far + 93 items left at 1 s.
  said = [r.getMessage() for r in caplog.records if 'expected to take' in r.getMessage()]
  assert said == [
    'images: expected to take about 2:58 in all, 1:33 left (1 s each, measured after the first 2, '
    'which include compilation)'
  ]
  assert p.seconds_per_item == pytest.approx(1.0) and p.seconds_left() == pytest.approx(88.0)
  assert 'left 1:28' in p.message()
  for _ in range(30):  # a slower phase: the average follows it
    now[0] += 3.0
    p.update()
  assert 2.9 < p.seconds_per_item < 3.0
