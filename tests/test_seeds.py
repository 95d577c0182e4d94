"""merge_online over several seeds: one resumable run per seed, mean +- std over seeds."""

import json

import numpy as np
import pytest

from configs import merge_digits
from tests.test_merge_online import tiny_config
from yiplearn import errors
from yiplearn.experiments import merge_online, merge_seeds


def test_aggregate_mean_and_sample_std():
  summaries = {
    0: [{'method': 'mean', 'iid': 0.5, 'mean': 0.5}, {'method': 'eam', 'iid': 0.9, 'mean': 0.9}],
    1: [{'method': 'mean', 'iid': 0.7, 'mean': 0.7}, {'method': 'eam', 'iid': 0.8, 'mean': 0.8}],
    2: [{'method': 'mean', 'iid': 0.6, 'mean': 0.6}],  # a method missing from one seed
  }
  fmt, val = merge_seeds.aggregate(summaries)
  assert [r['method'] for r in fmt] == ['mean', 'eam']
  assert fmt[0]['iid'] == '0.600 ± 0.100' and fmt[0]['seeds'] == 3
  np.testing.assert_allclose(val[1]['iid_mean'], 0.85)
  np.testing.assert_allclose(val[1]['iid_std'], np.std([0.9, 0.8], ddof=1))
  assert val[1]['iid_seeds'] == [0.9, 0.8] and fmt[1]['seeds'] == 2


def test_seed_config_and_argument():
  c = merge_digits.get_config('quick,seeds=3;5')
  assert tuple(c.seeds) == (3, 5)
  c.experts_workdir = '/x'
  s = merge_seeds.seed_config(c, 5)
  assert s.seed == 5 and tuple(s.seeds) == () and s.experts_workdir == '/x/seed_5'
  assert tuple(c.seeds) == (3, 5)  # the original is untouched
  c.seeds = (1, 1)
  with pytest.raises(errors.UserError, match='seeds'):
    merge_seeds.run_seeds(lambda c, w: {}, c, '/nonexistent')


def test_two_seeds_end_to_end(tmp_path, data_dir, monkeypatch):
  monkeypatch.setenv('YIPLEARN_DATA_DIR', data_dir)
  c = tiny_config()
  c.methods, c.streams, c.landscape = ('mean', 'mean:merge'), ('iid',), False
  c.seeds = (0, 1)
  out = merge_online.run(c, str(tmp_path))
  per_seed = {}
  for s in (0, 1):
    rows = json.load(open(tmp_path / f'seed_{s}' / 'results' / 'merge_summary.json'))['rows']
    per_seed[s] = {r['method']: r['iid'] for r in rows}
  assert per_seed[0] != per_seed[1]  # the seeds train different experts
  values = json.load(open(tmp_path / 'results' / 'merge_summary_seeds_values.json'))
  assert values['seeds'] == [0, 1]
  for r in values['rows']:
    ref = [per_seed[0][r['method']], per_seed[1][r['method']]]
    np.testing.assert_allclose(r['iid_mean'], np.mean(ref))
    np.testing.assert_allclose(r['iid_std'], np.std(ref, ddof=1))
  md = (tmp_path / 'results' / 'merge_summary_seeds.md').read_text()
  assert 'mean:merge' in md and '±' in md
  # Started again, every seed is loaded from its finished results.
  assert merge_online.run(c, str(tmp_path))['values'] == out['values']
