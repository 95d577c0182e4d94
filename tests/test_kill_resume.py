"""A run killed with SIGKILL mid-stream and started again with the same command finishes with results
byte-identical to an uninterrupted run's in another workdir (adapt_interactive and merge_online, real
subprocesses): every file under results/ and per_click.jsonl; so the same config and seed give the same
bytes, and timings live outside results/ (timing.json, metrics.jsonl)."""

import json

import launch_runs as lr
import pytest


@pytest.fixture(scope='module')
def base(tmp_path_factory):
  return lr.root(tmp_path_factory)


# Killed after 2 of the 6 images (one stream) or 5 of the 16 batches (two streams), plus a delay.
@pytest.mark.parametrize(
  'name,seed,records,max_delay_s', [('adapt', 6, 2, 0.1), ('merge', 7, 5, 0.2)]
)
def test_killed_run_resumes_to_identical_results(base, tmp_path, name, seed, records, max_delay_s):
  args = lr.adapt_args(base) if name == 'adapt' else lr.merge_args(base)
  ref = lr.reference(args, name, base)
  workdir = tmp_path / 'killed'
  info = lr.launch_and_kill(args, workdir, base, seed, records, max_delay_s)
  # Killed mid-stream: no results behind, only checkpoints and partial stream logs.
  assert info['killed'] and info['records'] < (6 if name == 'adapt' else 16), info
  assert not (
    workdir / 'results' / ('interactive_all.json' if name == 'adapt' else 'merge_summary.json')
  ).exists()
  lr.launch(args, workdir, base)  # the same command again: resumes
  files = lr.assert_same_files(ref, workdir)
  if name == 'adapt':
    records = [json.loads(l) for l in files['per_click.jsonl'].decode().splitlines()]
    assert [(r['method'], r['index']) for r in records] == [
      (m, i) for m in ('pi_mi',) for i in range(6)
    ]
    rows = json.loads(files['results/interactive_camera_c.json'])['rows']
    assert all('s_per_image' not in r for r in rows)  # timings are not results
    timing = json.loads((workdir / 'timing.json').read_text())
    assert [t['method'] for t in timing] == ['pi_mi'] and all(t['s_per_image'] > 0 for t in timing)
  else:
    assert {'results/merge_accuracy.csv', 'results/merge_summary.json'} <= set(files)
    trace = [json.loads(l) for l in files['results/lambda_trace.jsonl'].decode().splitlines()]
    assert [(r['method'], r['batch']) for r in trace] == [
      (m, i) for m in ('adamerging_task', 'eam') for i in range(8)
    ]


def test_temp_file_of_a_writer_killed_mid_write_is_removed_by_the_next_write(tmp_path):
  from yiplearn.io import files

  (tmp_path / '.tmp-table.json-k1ll3d').write_text(
    '{"half": '
  )  # what SIGKILL during a write leaves
  (tmp_path / '.tmp-other.json-x').write_text('')  # another file's: kept
  files.atomic_write_json(tmp_path / 'table.json', {'rows': [1]})
  assert sorted(p.name for p in tmp_path.iterdir()) == ['.tmp-other.json-x', 'table.json']
  assert files.read_json(tmp_path / 'table.json') == {'rows': [1]}


def test_stream_logs_drop_a_line_cut_by_the_kill(tmp_path):
  from yiplearn.io import writers

  for key in (
    'index',
    'batch',
  ):  # adapt_interactive's per-image logs, merge_online's per-batch traces
    path = tmp_path / f'{key}.jsonl'
    path.write_text(
      json.dumps({key: 0}) + '\n' + json.dumps({key: 1}) + '\n' + '{"' + key + '": 2, "dic'
    )
    writers.resume_jsonl(
      str(path), key, 5
    ).close()  # checkpoint after 5: complete lines kept, the cut one dropped
    assert [json.loads(l)[key] for l in path.read_text().splitlines()] == [0, 1]
