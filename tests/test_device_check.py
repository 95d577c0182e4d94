"""The prepared GPU check (benchmarks/device_check.{sh,py}) runs on CPU, so it cannot rot before a GPU is lent."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tarfile

import pytest

from benchmarks import device_check as dc

REPO = dc.REPO
# requirements.txt packages that the GPU machine's image lacks at our versions (its own jax, flax, optax,
# orbax, numpy, scipy, ... are used there).
CARRIED = {
  'tensorflow-datasets',
  'array-record',
  'grain',
  'ml-collections',
  'tensorboardx',
  'etils',
}


def _pins(path: str) -> dict[str, str]:
  pins = {}
  with open(path) as f:
    for line in f:
      m = re.match(r'\s*([A-Za-z0-9_.-]+)==([^\s#]+)', line)
      if m:
        pins[dc._norm(m.group(1))] = m.group(2)  # pylint: disable=protected-access
  return pins


def test_wheel_list_carries_the_missing_packages_at_the_pinned_versions():
  rows = dc.read_wheel_list()
  names = [dc._norm(n) for n, _, _ in rows]  # pylint: disable=protected-access
  assert len(names) == len(set(names)), 'one version of each package'
  required = _pins(os.path.join(REPO, 'requirements.txt'))
  assert CARRIED <= set(names)
  for name, version, _ in rows:
    if dc._norm(name) in required:  # pylint: disable=protected-access
      assert version == required[dc._norm(name)], name  # pylint: disable=protected-access
  assert [n for n, _, sdist in rows if sdist] == ['promise']


def test_bad_wheel_line_names_the_line(tmp_path):
  path = tmp_path / 'wheels.txt'
  path.write_text('# comment\ngrain>=0.2\n')
  with pytest.raises(ValueError, match=r"wheels.txt:2='grain>=0.2': expected name==version"):
    dc.read_wheel_list(str(path))


@pytest.mark.parametrize('smoke', [False, True])
def test_plan_matches_the_scripts_flags_and_test_files(smoke):
  phases = dc.plan(smoke, 'x', '/tmp/results', xdist_workers=4, test_timeout_s=90)
  assert [p.name for p in phases] == list(dc.PHASES)
  assert dc.check_flags(phases) == []
  for ph in phases:  # every result lands under the results folder with the tag
    outs = [ph.argv[i + 1] for i, a in enumerate(ph.argv) if a in ('--out', '--md')]
    assert all(o.startswith('/tmp/results/') and '_x.' in o for o in outs), ph.name
  tests = next(p for p in phases if p.name == 'tests')
  assert set(dc.NUMERICS_TESTS) <= set(tests.argv)
  assert dict(tests.env)['JAX_DEFAULT_MATMUL_PRECISION'] == 'highest'
  assert (
    ('-n', '4', '--timeout=90') == tests.argv[6:9]
  ) != smoke  # workers and a per-test limit on the GPU
  seg = next(p for p in phases if p.name == 'merging_seg')
  assert ('--model', 'segmentation') == seg.argv[1:3]
  assert (seg.skip is None) == ('--model' in dc.script_flags(dc.MERGING))  # skipped until it exists
  more = next(p for p in phases if p.name == 'tests_more')
  assert set(dc.more_test_files()) <= set(more.argv) and not set(dc.NUMERICS_TESTS) & set(more.argv)


def test_check_flags_reports_a_flag_the_script_lacks():
  bad = dc.Phase('merging', ('benchmarks/bench_merging.py', '--no_such_flag'), 10)
  assert dc.check_flags([bad]) == [
    'merging: benchmarks/bench_merging.py has no flag --no_such_flag'
  ]
  gone = dc.Phase('tests', ('-m', 'pytest', 'tests/test_gone.py'), 10)
  assert dc.check_flags([gone]) == ['tests: no tests/test_gone.py']


def test_a_phase_past_its_limit_is_killed_and_a_failing_one_is_recorded(tmp_path):
  tee = dc.Tee(str(tmp_path / 'log'))
  slow = dc.run_phase(['-c', 'import time; print("started", flush=True); time.sleep(60)'], 2, tee)
  assert slow['status'] == 'timeout' and slow['last'] == 'started'
  bad = dc.run_phase(['-c', 'import sys; print("boom"); sys.exit(3)'], 30, tee)
  assert bad == {**bad, 'status': 'failed', 'rc': 3, 'last': 'boom'}
  tee.close()
  assert 'started' in (tmp_path / 'log').read_text()


def _run(args, out, extra_env=None):
  env = dict(os.environ, OUT=str(out), PYTHON=sys.executable, JAX_PLATFORMS='cpu')
  env.update(DEVICE_CHECK_WHEELS='0', **(extra_env or {}))  # a local .whl/ holds cp312 wheels
  return subprocess.run(
    ['bash', 'benchmarks/device_check.sh', *args],
    cwd=REPO,
    env=env,
    capture_output=True,
    text=True,
    timeout=300,
    check=False,
  )


def test_smoke_run_on_cpu_writes_the_log_summary_and_one_archive(tmp_path):
  proc = _run(['--smoke', '--phases', 'env,merging'], tmp_path)
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
  summary = (tmp_path / 'summary_smoke.md').read_text()
  assert re.search(r'\| env \| ok \|', summary) and re.search(r'\| merging \| ok \|', summary)
  with tarfile.open(tmp_path / 'device_check_smoke.tar.gz') as tar:
    names = set(tar.getnames())
  assert {'env_smoke.json', 'merging_smoke.json', 'merging_smoke.md', 'summary_smoke.md'} <= names
  env = json.loads((tmp_path / 'results' / 'env_smoke.json').read_text())
  assert env['backend'] == 'cpu' and env['versions']['jax']
  assert 'cands/s' in (tmp_path / 'device_check.log').read_text()  # the benchmark's table, logged
  # The device tool returns at most 8 files from $OUT.
  assert len([f for f in os.listdir(tmp_path) if os.path.isfile(tmp_path / f)]) <= 8


def test_gpu_mode_stops_when_jax_finds_no_gpu(tmp_path):
  proc = _run(['--phases', 'env,merging', '--results_dir', str(tmp_path / 'r')], tmp_path)
  assert proc.returncode == 1
  summary = (tmp_path / 'summary_h200.md').read_text()
  assert 'failed: backend cpu, not gpu' in summary and '| merging |' not in summary
  assert not (tmp_path / 'r' / 'merging_h200.json').exists()
