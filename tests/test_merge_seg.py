"""merge_seg end to end on the real LGG subset: a :quick leave-one-site-out run that, restarted
without its target's record and one stream's done marker, ends with the same bytes. (merge_seg's
streams run through `merge_online.run_stream_resumable`, killed with SIGKILL mid-stream in
test_kill_resume.py and test_merge_online.py.)"""

import json

import numpy as np
import pytest

from configs import merge_seg_lgg
from yiplearn import errors
from yiplearn.experiments import merge_seg

# Tiny: 16 px, a 2-level U-Net of widths (4, 8), a few steps; target FG, K = 3 experts (DU, HT, CS).
OVERRIDES = dict(methods=('experts', 'mean', 'eam'), streams=('iid', 'continual'))


def tiny(arg='quick,targets=FG'):
  c = merge_seg_lgg.get_config(arg)
  c.update(OVERRIDES)
  c.data.image_size, c.data.max_train, c.data.max_test = 16, 12, 6
  c.train.update(dict(base_steps=3, expert_steps=2, fisher_batches=1))
  c.landscape_resolution = 3
  return c


def test_quick_leave_one_site_out_end_to_end(tmp_path, data_dir, lgg_dir, monkeypatch):
  monkeypatch.setenv('YIPLEARN_DATA_DIR', data_dir)
  monkeypatch.setenv('YIPLEARN_LGG_DIR', str(lgg_dir))
  out = merge_seg.run(tiny(), str(tmp_path))
  methods = {r['method'] for r in out['rows']}
  assert methods == {'expert_DU', 'expert_HT', 'expert_CS', 'mean', 'eam', 'best_expert'}
  assert {(r['target'], r['stream']) for r in out['rows']} == {('FG', 'iid'), ('FG', 'continual')}
  for r in out['rows']:
    assert 0.0 <= r['dice'] <= 1.0 and r['n'] > 0
  res = tmp_path / 'results'
  for stem in ('merge_seg_dice', 'merge_seg_summary', 'merge_seg_candidates'):
    for ext in ('md', 'csv', 'json'):
      assert (res / f'{stem}.{ext}').exists(), stem
  trace = [json.loads(line) for line in (res / 'merge_seg_trace.jsonl').read_text().splitlines()]
  eam = [t for t in trace if t['method'] == 'eam']
  assert eam and all(abs(sum(t['lam_enc']) - 1) < 1e-3 for t in eam)
  assert all('lam_head' in t for t in eam)  # the decoder-path coefficients
  best = [
    json.loads(line) for line in (res / 'merge_seg_best_candidate.jsonl').read_text().splitlines()
  ]
  assert len(best) == sum(1 for t in eam)  # one diagnostic record per eam batch
  for b in best:
    assert b['best_dice'] >= max(b['mean_dice'], b['argmin_mean_dice']) - 1e-9
  land = json.loads((res / 'landscape_FG_seed0.json').read_text())
  assert len(land['dice']) == len(land['grid']) == 10  # simplex grid of resolution 3, K = 3
  assert (tmp_path / 'plots' / 'landscape_FG_seed0.png').exists()
  before = {p.name: p.read_bytes() for p in res.iterdir() if p.is_file()}
  # As after a kill before the target was recorded: its partial record and one stream's done
  # marker gone; that stream resumes from its checkpoint, the experts and the other streams are
  # read back, and the results are rewritten byte for byte.
  (tmp_path / 'partial' / 'seed0' / 'FG.json').unlink()
  (tmp_path / 'streams' / 'seed0' / 'FG' / 'eam__continual.json').unlink()
  merge_seg.run(tiny(), str(tmp_path))
  assert before == {p.name: p.read_bytes() for p in res.iterdir() if p.is_file()}
  rows = out['rows']
  assert np.isclose(
    [r for r in rows if r['method'] == 'best_expert' and r['stream'] == 'iid'][0]['dice'],
    max(r['dice'] for r in rows if r['method'].startswith('expert_') and r['stream'] == 'iid'),
  )


def test_validate_refuses_label_shift_streams_and_unknown_methods():
  c = tiny()
  c.streams = ('dirichlet',)
  with pytest.raises(errors.UserError, match='streams entry'):
    merge_seg.validate(c)
  c = tiny()
  c.methods = ('eam_bnbatch',)
  with pytest.raises(errors.UserError, match='methods entry'):
    merge_seg.validate(c)
