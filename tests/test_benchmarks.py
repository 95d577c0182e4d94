"""Smoke tests of the benchmark scripts (benchmarks/): output format and invariants, never timings."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from benchmarks import common as bc


def test_merging_script_tiny(tmp_path):
  out, md = tmp_path / 'm.json', tmp_path / 'm.md'
  proc = subprocess.run(
    [
      sys.executable,
      'benchmarks/bench_merging.py',
      '--quick',
      '--grid',
      '2:4',
      '--chunks',
      '4',
      '--repeats',
      '1',
      '--out',
      str(out),
      '--md',
      str(md),
    ],
    cwd=bc.REPO,
    capture_output=True,
    text=True,
    timeout=300,
    check=False,
  )
  assert proc.returncode == 0, proc.stderr[-2000:]
  res = json.loads(out.read_text())
  for key in (
    'cpu_model',
    'cpu_count',
    'load_avg',
    'jax',
    'backend',
    'devices',
    'xla_flags',
    'load_start',
    'load_end',
  ):
    assert key in res['machine'], key
  (row,) = res['rows']
  assert (row['K'], row['J'], row['chunk']) == (2, 4, 4)
  # The vmapped evaluation and the one-at-a-time loop score the same candidates (fresh processes each).
  assert row['max_abs_diff'] < 1e-4
  assert row['vmapped_cands_per_s'] > 0 and row['loop_cands_per_s'] > 0
  assert row['run_rss_mb'] >= 0 and row['max_rss_mb'] > 0
  assert '| K | J | chunk |' in md.read_text()


def test_matmul_peak_counts_flops():
  peak = bc.measure_matmul_peak(64, repeats=2)
  assert peak['flop_per_call'] == 2 * 64**3
  assert peak['flops_per_s'] == pytest.approx(peak['flop_per_call'] / peak['median_s'])
  assert peak['best_flops_per_s'] >= peak['flops_per_s']


def test_peak_rss_reset_sees_a_new_allocation():
  if not bc.reset_peak_rss():
    pytest.skip('no /proc/self/clear_refs here')
  base = bc.rss_mb()
  a = np.ones(64 * 2**20 // 8)  # 64 MiB touched
  grown = bc.peak_rss_mb() - base
  del a
  assert grown >= 48


def test_bad_arguments_name_the_flag():
  with pytest.raises(ValueError, match='--sizes'):
    bc.parse_sizes('brain,huge')
  from benchmarks import bench_merging  # pylint: disable=g-import-not-at-top

  with pytest.raises(ValueError, match='--grid'):
    bench_merging.parse_grid('2x16')
  assert bench_merging.parse_grid('2:16, 3:64') == [(2, 16), (3, 64)]


def test_latency_summary_is_relative_to_the_spawn():
  from benchmarks import bench_latency  # pylint: disable=g-import-not-at-top

  t = 1000.0
  res = {
    'size': 'small',
    'spawn_time': t,
    'spawn_s': 9.0,
    'script_time': t + 0.1,
    'imported_time': t + 1.1,
    'configured_time': t + 1.2,
    'built_time': t + 2.2,
    'pred1_time': t + 2.7,
    'mi_ready_time': t + 4.0,
    'mi_shown_time': t + 4.5,
    'click1': {'lower_s': 0.1, 'compile_s': 0.3, 'run_s': 0.1, 'total_s': 0.5},
    'mi': {'lower_s': 0.5, 'compile_s': 0.8, 'run_s': 0.5, 'total_s': 1.8},
    'predict_again_s': 0.01,
    'mi_again_s': 0.2,
    'cache_events': {'cache_hits': 3, 'cache_misses': 0},
    'load_avg': [1.0, 1.0, 1.0],
  }
  row = bench_latency.summarise(res, 'warm', 2)
  assert row['startup_s'] == pytest.approx(0.1)
  assert row['import_s'] == pytest.approx(1.0)
  assert row['build_s'] == pytest.approx(1.0)
  assert row['first_pred_from_imports_s'] == pytest.approx(1.6)
  assert row['first_pred_from_spawn_s'] == pytest.approx(2.7)
  assert row['mi_shown_from_spawn_s'] == pytest.approx(4.5)
  assert row['cache_hits'] == 3
