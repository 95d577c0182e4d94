"""The same config and seed give byte-identical results files (every file under results/ and
per_click.jsonl) in two workdirs; timings live outside results/ (timing.json, metrics.jsonl)."""

import json

import launch_runs as lr
import pytest


@pytest.fixture(scope='module')
def base(tmp_path_factory):
  return lr.root(tmp_path_factory)


@pytest.mark.parametrize('name', ['adapt', 'merge'])
def test_two_runs_give_byte_identical_results(base, tmp_path, name):
  args = lr.adapt_args(base) if name == 'adapt' else lr.merge_args(base)
  ref = lr.reference(args, name, base)
  lr.launch(args, tmp_path / 'again', base)
  files = lr.assert_same_files(ref, tmp_path / 'again')
  if name == 'adapt':
    assert 'results/interactive_camera_c.json' in files and 'per_click.jsonl' in files
    rows = json.loads(files['results/interactive_camera_c.json'])['rows']
    assert all('s_per_image' not in r for r in rows)  # timings are not results
    timing = json.loads((tmp_path / 'again' / 'timing.json').read_text())
    assert [t['method'] for t in timing] == ['pi_mi'] and all(t['s_per_image'] > 0 for t in timing)
  else:
    assert {
      'results/merge_accuracy.csv',
      'results/merge_summary.json',
      'results/lambda_trace.jsonl',
    } <= set(files)
