"""experiments/seeds.py: merge_online and the interactive driver over several seeds: one resumable run per seed, mean +- std over seeds."""

import json

import numpy as np
import pytest

from configs import merge_digits
from tests.test_merge_online import tiny_config
from yiplearn import errors
from yiplearn.experiments import merge_online
from yiplearn.experiments import seeds as seeds_lib


def test_aggregate_mean_and_sample_std():
  summaries = {
    0: [{'method': 'mean', 'iid': 0.5, 'mean': 0.5}, {'method': 'eam', 'iid': 0.9, 'mean': 0.9}],
    1: [{'method': 'mean', 'iid': 0.7, 'mean': 0.7}, {'method': 'eam', 'iid': 0.8, 'mean': 0.8}],
    2: [{'method': 'mean', 'iid': 0.6, 'mean': 0.6}],  # a method missing from one seed
  }
  fmt, val = seeds_lib.aggregate(summaries)
  assert [r['method'] for r in fmt] == ['mean', 'eam']
  assert fmt[0]['iid'] == '0.600 ± 0.100' and fmt[0]['seeds'] == 3
  np.testing.assert_allclose(val[1]['iid_mean'], 0.85)
  np.testing.assert_allclose(val[1]['iid_std'], np.std([0.9, 0.8], ddof=1))
  assert val[1]['iid_seeds'] == [0.9, 0.8] and fmt[1]['seeds'] == 2


def test_seed_config_and_argument():
  c = merge_digits.get_config('quick,seeds=3;5')
  assert tuple(c.seeds) == (3, 5)
  c.experts_workdir = '/x'
  s = seeds_lib.seed_config(c, 5)
  assert s.seed == 5 and tuple(s.seeds) == () and s.experts_workdir == '/x/seed_5'
  assert tuple(c.seeds) == (3, 5)  # the original is untouched
  c.seeds = (1, 1)
  with pytest.raises(errors.UserError, match='seeds'):
    seeds_lib.run_seeds(lambda c, w: {}, c, '/nonexistent')


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


def test_aggregate_per_target_and_method():
  """The interactive driver's rows: keyed by (target, method); text columns are left out."""
  rows = lambda a, b: [
    {'target': 't1', 'method': 'pi_mi', 'images': 3, 'dice@10': a, 'name': 'x'},
    {'target': 'flair', 'method': 'pi_mi', 'images': 3, 'dice@10': b, 'name': 'x'},
  ]
  fmt, val = seeds_lib.aggregate({0: rows(0.5, 0.9), 1: rows(0.7, 0.8)}, ('target', 'method'))
  assert [(r['target'], r['method']) for r in fmt] == [('t1', 'pi_mi'), ('flair', 'pi_mi')]
  assert fmt[0]['dice@10'] == '0.600 ± 0.141' and 'name' not in fmt[0]
  np.testing.assert_allclose(val[1]['dice@10_std'], np.std([0.9, 0.8], ddof=1))


def test_interactive_seed_config_sets_both_halves():
  from configs import interactive_lgg

  c = interactive_lgg.get_config('quick,seeds=4;7')
  assert tuple(c.seeds) == (4, 7)
  s = seeds_lib.seed_config(c, 7)
  assert s.pretrain.seed == 7 and s.adapt.seed == 7 and tuple(s.seeds) == ()
  assert c.pretrain.seed == 0  # the original is untouched
