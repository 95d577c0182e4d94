"""Workdir I/O: atomic writers, tables, checkpoints (resume, mismatch), metric writers, plots."""

import csv
import io
import json
import logging
import os

import jax.numpy as jnp
import numpy as np
import pytest

from yiplearn.io import checkpoints, files, plots, progress, tables, writers


def test_atomic_write_leaves_no_temp_files(tmp_path):
  path = tmp_path / 'sub' / 'r.json'
  files.atomic_write_json(path, {'a': np.float32(1.5), 'b': np.arange(3)})
  assert json.loads(path.read_text()) == {'a': 1.5, 'b': [0, 1, 2]}
  files.atomic_write_text(path, 'x')
  assert path.read_text() == 'x'
  assert sorted(os.listdir(path.parent)) == ['r.json']


def test_atomic_write_failure_keeps_old_file(tmp_path):
  path = tmp_path / 'r.json'
  files.atomic_write_text(path, 'old')
  with pytest.raises(TypeError):
    files.atomic_write_bytes(path, 'not bytes')  # type: ignore[arg-type]
  assert path.read_text() == 'old'
  assert os.listdir(tmp_path) == ['r.json']


def test_write_table_three_formats_agree(tmp_path):
  rows = [{'method': 'frozen', 'dice@1': 0.5, 'n': 3}, {'method': 'pi+mi', 'dice@1': 0.75, 'n': 4}]
  md = tables.write_table(tmp_path / 't', rows, title='T')
  assert '| frozen' in md and '0.7500' in md and md.startswith('### T')
  lines = (tmp_path / 't.md').read_text().splitlines()
  assert lines[2].startswith('| method') and set(lines[3]) <= set('|-: ')
  got = list(csv.DictReader(io.StringIO((tmp_path / 't.csv').read_text())))
  assert got[1] == {'method': 'pi+mi', 'dice@1': '0.75', 'n': '4'}
  js = json.loads((tmp_path / 't.json').read_text())
  assert js['columns'] == ['method', 'dice@1', 'n'] and js['rows'][0]['dice@1'] == 0.5


def test_write_table_rejects_non_rows(tmp_path):
  with pytest.raises(ValueError, match='rows='):
    tables.write_table(tmp_path / 't', {'a': 1})


def test_checkpointer_keeps_n_and_restores_latest(tmp_path):
  ck = checkpoints.Checkpointer(tmp_path / 'ck', max_to_keep=2)
  assert ck.latest_step() is None
  state = {'w': jnp.arange(4.0), 'opt': {'count': np.int32(0)}}
  for step in (1, 5, 9):
    ck.save(
      step, {'w': state['w'] * step, 'opt': {'count': np.int32(step)}}, extra={'images_done': step}
    )
  assert ck.all_steps() == [5, 9]
  restored, extra = ck.restore(None, state)
  np.testing.assert_allclose(restored['w'], np.arange(4.0) * 9)
  assert int(restored['opt']['count']) == 9 and extra == {'images_done': 9}
  # A second manager on the same directory (a resumed run) sees the same checkpoints.
  again = checkpoints.Checkpointer(tmp_path / 'ck', max_to_keep=2)
  assert again.latest_step() == 9
  restored5, _ = again.restore(5, state)
  np.testing.assert_allclose(restored5['w'], np.arange(4.0) * 5)


def test_checkpointer_errors(tmp_path):
  ck = checkpoints.Checkpointer(tmp_path / 'ck')
  with pytest.raises(FileNotFoundError, match='no checkpoint'):
    ck.restore(None, {'w': jnp.zeros(3)})
  ck.save(0, {'w': jnp.zeros(3)})
  with pytest.raises(checkpoints.CheckpointError, match='another architecture'):
    ck.restore(None, {'w': jnp.zeros(3), 'extra_layer': jnp.zeros(2)})
  with pytest.raises(FileNotFoundError, match='step=7'):
    ck.restore(7, {'w': jnp.zeros(3)})
  with pytest.raises(ValueError, match='max_to_keep=0'):
    checkpoints.Checkpointer(tmp_path / 'x', max_to_keep=0)


def test_metric_writer_jsonl_and_tensorboard(tmp_path):
  with writers.MetricWriter(tmp_path) as w:
    w.write(1, {'loss': np.float32(0.5)}, phase='train')
    w.write(2, {'loss': jnp.asarray(0.25)})
  recs = [json.loads(l) for l in (tmp_path / 'metrics.jsonl').read_text().splitlines()]
  assert (
    [r['step'] for r in recs] == [1, 2] and recs[0]['phase'] == 'train' and recs[1]['loss'] == 0.25
  )
  assert any(f.startswith('events.out.tfevents') for f in os.listdir(tmp_path / 'tensorboard'))


def test_metric_writer_tags_are_legal_and_resume_trims(tmp_path, caplog):
  assert writers.tag_name('val/dice@5') == 'val/dice_at_5'
  assert writers.tag_name('/a b:c') == 'a_b_c' and writers.tag_name('train/loss') == 'train/loss'
  with caplog.at_level(logging.INFO), writers.MetricWriter(tmp_path) as w:
    for step in (1, 2, 3):
      w.write(step, {'val/dice@1': 0.5, 'val/cup_auc': 0.25})
  assert not [r for r in caplog.records if 'illegal' in r.getMessage()]
  # A run resumed from step 2 drops the record of step 3 (written after its checkpoint).
  writers.MetricWriter(tmp_path, tensorboard=False, resume_step=2).close()
  recs = [json.loads(l) for l in (tmp_path / 'metrics.jsonl').read_text().splitlines()]
  assert [r['step'] for r in recs] == [1, 2] and recs[0]['val/dice@1'] == 0.5


def test_plots_write_png(tmp_path):
  p = plots.plot_curves(
    tmp_path / 'plots' / 'c.png', {'a': ([1, 2, 3], [0.1, 0.5, 0.9])}, xlabel='click', ylabel='Dice'
  )
  assert open(p, 'rb').read(8) == b'\x89PNG\r\n\x1a\n'
  img = np.random.default_rng(0).random((8, 8, 3))
  mask = np.zeros((8, 8), np.uint8)
  mask[2:4, 2:4] = 2
  over = plots.overlay(img, mask)
  assert np.allclose(over[0, 0], img[0, 0]) and not np.allclose(over[2, 2], img[2, 2])
  plots.image_grid(tmp_path / 'g.png', [img, img[..., 0]], [mask, None], titles=['a', 'b'])
  assert (tmp_path / 'g.png').stat().st_size > 0
  with pytest.raises(ValueError, match='images'):
    plots.image_grid(tmp_path / 'e.png', [])


def test_progress_message_counts_and_rate():
  p = progress.Progress(10, 'images', log_every_s=1e9)
  p.update(4)
  msg = p.message()
  assert msg.startswith('images: 4/10 (40%)') and '/s' in msg and 'left' in msg


def test_dice_axis_scales_to_the_data():
  lo, hi = plots.data_limits([[0.95, 0.96], [0.955, 0.97]], bounds=(0, 1))
  assert lo == pytest.approx(0.95 - 0.02 * 0.08) and hi == pytest.approx(0.97 + 0.02 * 0.08)
  assert plots.data_limits([[0.2, 1.0]], bounds=(0, 1)) == (pytest.approx(0.136), 1.0)
  lo, hi = plots.data_limits([[0.5, 0.5]])  # a flat curve still gets a visible span
  assert hi - lo == pytest.approx(0.01 * (1 + 2 * 0.08)) and (lo + hi) / 2 == pytest.approx(0.5)
  assert plots.data_limits([[np.nan]]) is None
  np.testing.assert_allclose(plots.display(np.linspace(-3, 3, 101))[[0, 50, -1]], [0, 0.5, 1])


def test_click_examples_png(tmp_path):
  img = np.random.default_rng(0).normal(size=(12, 12, 1)).astype(np.float32)  # z-scored
  mask = np.zeros((12, 12), np.int32)
  mask[3:7, 3:7] = 1
  clicks = (np.array([[4, 4], [9, 9]]), np.array([1, 0]))
  cells = [('image', img, None, None), ('gt', img, mask, None), ('k=2', img, mask, clicks)]
  p = plots.click_examples(tmp_path / 'ex.png', [('image 0', cells), ('image 5', cells[:2])])
  assert open(p, 'rb').read(8) == b'\x89PNG\r\n\x1a\n'
  with pytest.raises(ValueError, match='rows=\\[\\]: expected'):
    plots.click_examples(tmp_path / 'e.png', [])
