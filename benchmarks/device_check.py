"""The prepared device check (issue 13): numerics tests and the paper-size benchmarks in one run on a GPU.

Started by ``benchmarks/device_check.sh`` (which first installs the carried wheels of ``.whl/``), from the
repository root; everything it prints also goes to ``$OUT/device_check.log``. Each phase is a fresh process
(the driver itself never imports jax, so no phase finds the GPU's memory taken), run under a time limit:
the smaller of its own cap and what is left of ``--budget_s``; a phase that fails or runs out of time is
recorded and the next one starts. Phases, in order:

==============  ============================================================================================
env             versions (python, jax, jaxlib, flax, optax, orbax, numpy, scipy, torch, the carried
                packages and where they were imported from), jax's devices, ``nvidia-smi``
tests           pytest on the numerics tests (losses, clicks, imageops, user, session, tool, online merging)
                with ``JAX_DEFAULT_MATMUL_PRECISION=highest``: on NVIDIA GPUs XLA otherwise computes float32
                convolutions and dots in TF32, and the tests pin float32 numerics (--smoke: collection only)
vs_torch        ``bench_vs_torch.py``: MI step and PI update, yiplearn and PyTorch (CUDA) side by side on the
                same weights, the same first MI loss checked first; true float32 on both sides
session         ``bench_interactive.py --phases session``: the whole image (T = 10 clicks, MI + PI) per call
latency         ``bench_latency.py``: the per-click tool's first response (P_1) and first adapted response
                (after the first MI update) in fresh processes, without and with the compilation cache
streams         ``bench_streams.py``: S = 1, 8, 64 independent streams as one vmapped session, images/s
merging         ``bench_merging.py``: merge candidates per second, vmapped chunks vs a loop
vs_torch_tf32   ``bench_vs_torch.py --precision default``: both libraries' default GPU precision (TF32
                convolutions in both), the loss check at 1e-2
==============  ============================================================================================

Results: ``<results_dir>/<bench>_<tag>.{json,md}`` (default ``benchmarks/results``, tag ``h200``), the
tests' JUnit XML, ``env_<tag>.json`` and ``summary_<tag>.md``; after every phase all of them are packed into
``$OUT/device_check_<tag>.tar.gz`` (the device tool returns at most 8 files, so one archive), beside
``$OUT/summary_<tag>.md`` and the log. Unpack with ``tar -xzf device_check_h200.tar.gz -C benchmarks/results``.

``--smoke`` runs every phase on tiny sizes (``common.SIZES['tiny']``) with results under ``$OUT/results``:
``JAX_PLATFORMS=cpu bash benchmarks/device_check.sh --smoke`` (a few minutes on 2 cores; the test suite runs
a subset of phases, ``tests/test_device_check.py``). ``--dry_run`` prints the plan and checks that every
script, test file and flag it names exists. ``wheels`` downloads ``.whl/`` (``make device-wheels``).
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import threading
import time
from collections.abc import Sequence
from typing import Any, NamedTuple

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WHEEL_LIST = os.path.join(REPO, 'benchmarks', 'device_wheels.txt')
WHEEL_BUDGET_MIB = 40.0
# The numerics subset of the tests (DESIGN.md 3: pinned against independent references).
NUMERICS_TESTS = (
  'tests/test_losses.py',
  'tests/test_clicks.py',
  'tests/test_imageops.py',
  'tests/test_user.py',
  'tests/test_session.py',
  'tests/test_tool.py',
  'tests/test_online.py',
)
# The rest of the numerics where present (the rules and their hooks, the released code's variants, the
# pre-training sampler, segmentation merging): a phase of their own, after the benchmarks.
MORE_TESTS = (
  'tests/test_rules.py',
  'tests/test_rules_contract.py',
  'tests/test_hooks.py',
  'tests/test_released.py',
  'tests/test_sampler.py',
  'tests/test_segmentation_merging.py',
)
MERGING = 'benchmarks/bench_merging.py'
PHASES = (
  'env',
  'tests',
  'vs_torch',
  'session',
  'latency',
  'streams',
  'merging',
  'merging_seg',
  'vs_torch_tf32',
  'tests_more',
)


class Phase(NamedTuple):
  """One step of the check: ``python argv...`` from the repository root under ``cap_s`` seconds."""

  name: str
  argv: tuple[str, ...]
  cap_s: float
  env: tuple[tuple[str, str], ...] = ()
  needs: str | None = None  # a module that must be importable ('torch'), else the phase is skipped
  skip: str | None = None  # why the phase is skipped (no test files)


def _bench(script: str, *flags: str) -> tuple[str, ...]:
  return (f'benchmarks/{script}.py', *flags)


def _outputs(results: str, stem: str, tag: str) -> tuple[str, ...]:
  base = os.path.join(results, f'{stem}_{tag}')
  return ('--out', base + '.json', '--md', base + '.md')


def more_test_files() -> list[str]:
  return [f for f in MORE_TESTS if os.path.exists(os.path.join(REPO, f))]


def plan(
  smoke: bool, tag: str, results: str, xdist_workers: int = 0, test_timeout_s: int = 0
) -> list[Phase]:
  """The phases with their commands: paper sizes on the GPU, or tiny ones (``smoke``) on a CPU;
  ``xdist_workers`` / ``test_timeout_s`` where pytest-xdist / pytest-timeout are installed."""
  out = lambda stem: _outputs(results, stem, tag)
  junit = lambda stem: os.path.join(results, f'{stem}_{tag}.xml')
  if smoke:
    pytest = ('-m', 'pytest', '--collect-only', '-q', '-p', 'no:cacheprovider')
    tests, more = (*pytest, *NUMERICS_TESTS), (*pytest, *more_test_files())
    sizes = ('--sizes', 'tiny')
    vs_torch = _bench('bench_vs_torch', *sizes, '--repeats', '1', '--warmup', '0')
    session = ('--phases', 'session', '--clicks', '2', '--session_repeats', '1')
    session += ('--session_warmup', '0')
    latency = ('--nocache_runs', '0', '--warm_runs', '0', '--clicks', '3', '--no_peak')
    streams = ('--streams', '1,2', '--clicks', '2', '--repeats', '1', '--warmup', '0')
    merging = ('--quick', '--grid', '2:4', '--chunks', '2', '--repeats', '1')
    merging_seg = ('--model', 'segmentation', *merging)
    # CPU compilation under load: streams compiled twice in 268 s and ran past 300 s at load 17.
    caps = dict(env=60, tests=120, vs_torch=600, session=600, latency=600, streams=600)
    caps.update(merging=600, merging_seg=600, vs_torch_tf32=600, tests_more=120)
  else:
    xdist = ('-n', str(xdist_workers)) if xdist_workers else ()
    if test_timeout_s:  # one hung test fails alone instead of eating the phase
      xdist += (f'--timeout={int(test_timeout_s)}',)
    pytest = ('-m', 'pytest', '-q', '-p', 'no:cacheprovider', '--durations=15', *xdist)
    tests = (*pytest, '--junitxml', junit('tests'), *NUMERICS_TESTS)
    more = (*pytest, '--junitxml', junit('tests_more'), *more_test_files())
    sizes = ('--sizes', 'brain,fundus')
    vs_torch = _bench('bench_vs_torch', *sizes, '--repeats', '10', '--warmup', '2')
    session = ('--phases', 'session', '--session_repeats', '3', '--session_warmup', '1')
    latency = ('--nocache_runs', '1', '--warm_runs', '1')
    streams = ('--streams', '1,8,64', '--repeats', '3', '--warmup', '1')
    merging = ('--grid', '3:64,8:128', '--chunks', '16,64', '--repeats', '3')
    merging_seg = (
      '--model',
      'segmentation',
      '--grid',
      '3:16,5:64',
      '--chunks',
      '16',
      '--repeats',
      '3',
    )
    # Seconds per phase (the budget decides too): a phase killed at its cap keeps the sizes/rows it wrote.
    caps = dict(env=45, tests=120, vs_torch=110, session=90, latency=80, streams=90)
    caps.update(merging=70, merging_seg=60, vs_torch_tf32=60, tests_more=90)
  first = sizes if smoke else ('--sizes', 'brain')
  precise = (('JAX_DEFAULT_MATMUL_PRECISION', 'highest'),)
  torch_dev = ('--torch_device', 'cpu' if smoke else 'cuda')
  return [
    Phase(
      'env',
      ('benchmarks/device_check.py', 'probe', '--out', os.path.join(results, f'env_{tag}.json'))
      + (('--no_imports',) if smoke else ()),
      caps['env'],
    ),
    Phase('tests', tests, caps['tests'], env=precise),
    Phase(
      'vs_torch',
      vs_torch + torch_dev + ('--precision', 'highest') + out('vs_torch'),
      caps['vs_torch'],
      needs='torch',
    ),
    Phase(
      'session', _bench('bench_interactive', *sizes, *session, *out('interactive')), caps['session']
    ),
    Phase('latency', _bench('bench_latency', *first, *latency, *out('latency')), caps['latency']),
    Phase('streams', _bench('bench_streams', *first, *streams, *out('streams')), caps['streams']),
    Phase('merging', _bench('bench_merging', *merging, *out('merging')), caps['merging']),
    Phase(
      'merging_seg',
      _bench('bench_merging', *merging_seg, *out('merging_seg')),
      caps['merging_seg'],
      skip=None if '--model' in script_flags(MERGING) else f'{MERGING} has no --model flag',
    ),
    Phase(
      'vs_torch_tf32',
      vs_torch
      + torch_dev
      + ('--precision', 'default', '--loss_rtol', '1e-2')
      + out('vs_torch_tf32'),
      caps['vs_torch_tf32'],
      needs='torch',
    ),
    Phase(
      'tests_more',
      more,
      caps['tests_more'],
      env=precise,
      skip=None if more_test_files() else 'none of the test files exist',
    ),
  ]


# ---- running ------------------------------------------------------------------------------------------------


class Tee:
  """Writes to stdout and a log file (line-buffered)."""

  def __init__(self, path: str | None):
    self.file = open(path, 'a', buffering=1) if path else None  # noqa: SIM115

  def write(self, text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()
    if self.file:
      self.file.write(text)

  def close(self) -> None:
    if self.file:
      self.file.close()


def run_phase(
  argv: Sequence[str], timeout_s: float, tee: Tee, env: dict[str, str] | None = None
) -> dict[str, Any]:
  """Runs ``python argv...`` in its own process group, its output streamed to ``tee``; at ``timeout_s`` the
  whole group (workers too) is killed. Returns status ('ok', 'failed' or 'timeout'), rc, wall_s and the
  output's last line."""
  cmd = [sys.executable, *argv]
  tee.write(f'$ {" ".join(cmd)}\n')
  t0 = time.time()
  proc = subprocess.Popen(
    cmd,
    cwd=REPO,
    env=dict(os.environ, **(env or {})),
    stdout=subprocess.PIPE,
    stderr=subprocess.STDOUT,
    text=True,
    errors='replace',
    start_new_session=True,
  )
  last: list[str] = []

  def pump():
    for line in proc.stdout:
      tee.write(line)
      if line.strip():
        last[:] = [line.strip()]

  reader = threading.Thread(target=pump, daemon=True)
  reader.start()
  timed_out = False
  try:
    proc.wait(timeout=max(timeout_s, 1.0))
  except subprocess.TimeoutExpired:
    timed_out = True
    try:
      os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
      pass
    proc.wait()
  reader.join(timeout=10)
  rc = proc.returncode
  status = 'timeout' if timed_out else ('ok' if rc == 0 else 'failed')
  return {
    'status': status,
    'rc': rc,
    'wall_s': round(time.time() - t0, 1),
    'last': last[0] if last else '',
  }


def _importable(python_module: str) -> bool:
  import importlib.util  # pylint: disable=g-import-not-at-top

  return importlib.util.find_spec(python_module) is not None


def script_flags(script: str) -> set[str]:
  """The ``--flags`` a script's argparse defines (read from its source: no import, no jax)."""
  with open(os.path.join(REPO, script)) as f:
    return set(re.findall(r"add_argument\(\s*'(--[\w-]+)'", f.read()))


def check_flags(phases: Sequence[Phase]) -> list[str]:
  """What of the plan the scripts do not offer: missing scripts, test files and flags (empty: it matches)."""
  problems, flags = [], {}
  for ph in phases:
    script = ph.argv[0]
    if ph.skip:
      continue
    if script == '-m':  # pytest: the test files must exist
      problems += [
        f'{ph.name}: no {a}' for a in ph.argv if a.startswith('tests/') and not _exists(a)
      ]
      continue
    if not _exists(script):
      problems.append(f'{ph.name}: {script} does not exist')
      continue
    if script.endswith('device_check.py'):
      continue
    if script not in flags:
      flags[script] = script_flags(script)
    for flag in (a for a in ph.argv[1:] if a.startswith('--')):
      if flag not in flags[script]:
        problems.append(f'{ph.name}: {script} has no flag {flag}')
  return problems


def _exists(path: str) -> bool:
  return os.path.exists(os.path.join(REPO, path))


def pack(out: str, results: str, tag: str, since: float = 0.0) -> str:
  """This run's result files (``*_<tag>*`` written since ``since``) in one archive under ``out``."""
  path = os.path.join(out, f'device_check_{tag}.tar.gz')
  tmp = path + '.tmp'
  with tarfile.open(tmp, 'w:gz') as tar:
    for f in sorted(glob.glob(os.path.join(results, f'*_{tag}*'))):
      if os.path.getmtime(f) >= since:
        tar.add(f, arcname=os.path.basename(f))
  os.replace(tmp, path)
  return path


def summary_md(records: list[dict[str, Any]], tag: str, started: float, args: Any) -> str:
  lines = [
    f'# Device check `{tag}`',
    '',
    f'Started {time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(started))}, '
    f'{time.time() - started:.0f} s of a {args.budget_s:.0f} s budget; '
    f'`{" ".join(sys.argv)}`.',
    '',
    '| phase | status | wall s | limit s | last line |',
    '|---|---|---|---|---|',
  ]
  for r in records:
    last = r.get('last', '').replace('|', '/')[:160]
    lines.append(
      f'| {r["phase"]} | {r["status"]} | {r.get("wall_s", "")} | {r.get("limit_s", "")} | {last} |'
    )
  return '\n'.join(lines) + '\n'


def run(args: argparse.Namespace) -> int:
  started = time.time()
  if args.budget_s is None:
    args.budget_s = 3600.0 if args.smoke else 470.0
  out = os.path.abspath(args.out or os.environ.get('OUT') or os.path.join(REPO, 'device_check_out'))
  tag = args.tag or ('smoke' if args.smoke else 'h200')
  results = os.path.abspath(
    args.results_dir
    or (os.path.join(out, 'results') if args.smoke else os.path.join(REPO, 'benchmarks', 'results'))
  )
  workers = args.test_workers if not args.smoke and _importable('xdist') else 0
  timeout = 90 if not args.smoke and _importable('pytest_timeout') else 0
  phases = plan(args.smoke, tag, results, workers, timeout)
  chosen = [p.strip() for p in args.phases.split(',') if p.strip()] if args.phases else list(PHASES)
  bad = [p for p in chosen if p not in PHASES]
  if bad:
    raise SystemExit(f'--phases={args.phases}: expected a comma-separated subset of {PHASES}')
  phases = [p for p in phases if p.name in chosen]
  if args.dry_run:
    for ph in phases:
      skip = f' SKIPPED: {ph.skip}' if ph.skip else ''
      print(f'{ph.name} (cap {ph.cap_s:.0f} s){skip}: python {" ".join(ph.argv)}')
    problems = check_flags(phases)
    for p in problems:
      print('PLAN ERROR:', p)
    return 1 if problems else 0

  os.makedirs(out, exist_ok=True)
  os.makedirs(results, exist_ok=True)
  tee = Tee(os.path.join(out, 'device_check.log'))
  env = {'PYTHONUNBUFFERED': '1', 'TF_CPP_MIN_LOG_LEVEL': '1'}
  if args.smoke:
    env['JAX_PLATFORMS'] = os.environ.get('JAX_PLATFORMS', 'cpu')
    # The compact threefry lowering compiles the click sessions several times faster on CPU (as the tests).
    env['JAX_THREEFRY_PARTITIONABLE'] = 'false'
  else:
    # Several processes share the GPU in turn (benchmarks with worker processes, pytest-xdist): memory on
    # demand instead of 75 % of the device taken by the first process.
    env['XLA_PYTHON_CLIENT_PREALLOCATE'] = 'false'
  records: list[dict[str, Any]] = []
  summary_path = os.path.join(results, f'summary_{tag}.md')
  tee.write(
    f'device check {tag}: phases {", ".join(p.name for p in phases)}; results in {results}\n'
  )
  for ph in phases:
    left = args.budget_s - (time.time() - started)
    rec: dict[str, Any] = {'phase': ph.name}
    tee.write(f'\n==== {ph.name} ({time.strftime("%H:%M:%S")}, {left:.0f} s of the budget left)\n')
    if ph.skip:
      rec.update(status=f'skipped: {ph.skip}')
    elif ph.needs and not _importable(ph.needs):
      rec.update(status=f'skipped: no {ph.needs}')
    elif left < args.min_phase_s:
      rec.update(status='skipped: budget spent')
    else:
      limit = min(ph.cap_s, left)
      rec.update(run_phase(ph.argv, limit, tee, env={**env, **dict(ph.env)}), limit_s=round(limit))
      if ph.name == 'env' and rec['status'] == 'ok' and not args.smoke and not args.allow_cpu:
        with open(os.path.join(results, f'env_{tag}.json')) as f:
          backend = json.load(f).get('backend')
        if backend != 'gpu':
          rec.update(status=f'failed: backend {backend}, not gpu (--allow_cpu to go on)')
          records.append(rec)
          break
    records.append(rec)
    tee.write(f'---- {ph.name}: {rec["status"]} ({rec.get("wall_s", 0)} s)\n')
    text = summary_md(records, tag, started, args)
    with open(summary_path, 'w') as f:
      f.write(text)
    shutil.copy(summary_path, os.path.join(out, f'summary_{tag}.md'))
    pack(out, results, tag, since=started - 1)
  text = summary_md(records, tag, started, args)
  with open(summary_path, 'w') as f:
    f.write(text)
  shutil.copy(summary_path, os.path.join(out, f'summary_{tag}.md'))
  archive = pack(out, results, tag, since=started - 1)
  # The tables once more at the end (the device tool's reply holds the output's last 12,000 characters).
  for md in sorted(glob.glob(os.path.join(results, f'*_{tag}.md'))):
    if md != summary_path and os.path.getmtime(md) >= started - 1:
      with open(md) as f:
        tee.write(f'\n## {os.path.basename(md)}\n\n{f.read()}')
  tee.write('\n' + text + f'\nwrote {archive}, {summary_path}\n')
  tee.close()
  failed = [r for r in records if not (r['status'] == 'ok' or r['status'].startswith('skipped'))]
  return 1 if failed else 0


# ---- probe and wheels ---------------------------------------------------------------------------------------

PACKAGES = (
  'jax',
  'jaxlib',
  'jax-cuda12-plugin',
  'jax-cuda13-plugin',
  'flax',
  'optax',
  'orbax-checkpoint',
  'numpy',
  'scipy',
  'scikit-learn',
  'torch',
  'pytest',
  'pytest-xdist',
  'tensorflow-datasets',
  'array-record',
  'grain',
  'ml_collections',
  'tensorboardX',
  'etils',
  'protobuf',
)
IMPORTS = (
  'tensorflow_datasets',
  'array_record',
  'grain',
  'ml_collections',
  'tensorboardX',
  'etils',
)


def probe(out: str, imports: bool = True) -> None:
  """Versions, where the carried packages come from (``imports``), jax's devices and nvidia-smi: printed
  and saved."""
  import importlib  # pylint: disable=g-import-not-at-top
  import importlib.metadata as md  # pylint: disable=g-import-not-at-top
  import platform  # pylint: disable=g-import-not-at-top

  info: dict[str, Any] = {
    'python': sys.version,
    'executable': sys.executable,
    'platform': platform.platform(),
  }
  versions = {}
  for name in PACKAGES:
    try:
      versions[name] = md.version(name)
    except md.PackageNotFoundError:
      versions[name] = None
  info['versions'] = versions
  origins = {}
  for mod in IMPORTS if imports else ():
    try:
      origins[mod] = getattr(importlib.import_module(mod), '__file__', None)
    except Exception as e:  # pylint: disable=broad-except
      origins[mod] = f'import failed: {type(e).__name__}: {e}'
  info['imported_from'] = origins
  for k in ('JAX_PLATFORMS', 'XLA_FLAGS', 'XLA_PYTHON_CLIENT_PREALLOCATE', 'PYTHONPATH'):
    info[k] = os.environ.get(k)
  import jax  # pylint: disable=g-import-not-at-top

  info['backend'] = jax.default_backend()
  info['devices'] = [f'{d} ({d.device_kind})' for d in jax.devices()]
  try:
    stats = jax.devices()[0].memory_stats() or {}
    info['bytes_limit'] = stats.get('bytes_limit')
  except Exception:  # pylint: disable=broad-except
    info['bytes_limit'] = None
  if versions.get('torch'):
    try:
      import torch  # pylint: disable=g-import-not-at-top

      info['torch_cuda'] = {
        'available': torch.cuda.is_available(),
        'version': torch.version.cuda,
        'device': torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        'cudnn': torch.backends.cudnn.version() if torch.cuda.is_available() else None,
      }
    except Exception as e:  # pylint: disable=broad-except
      info['torch_cuda'] = f'failed: {e}'
  smi = shutil.which('nvidia-smi')
  if smi:
    q = '--query-gpu=name,memory.total,driver_version,clocks.max.sm,clocks.sm,power.limit'
    r = subprocess.run([smi, q, '--format=csv'], capture_output=True, text=True, check=False)
    info['nvidia_smi'] = r.stdout.strip() or r.stderr.strip()
  print(json.dumps(info, indent=2))
  print(f'backend {info["backend"]}: {", ".join(info["devices"])}')
  os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
  with open(out, 'w') as f:
    json.dump(info, f, indent=2)


def read_wheel_list(path: str = WHEEL_LIST) -> list[tuple[str, str, bool]]:
  """(name, version, sdist) per line of ``device_wheels.txt``; a UserError-style ValueError on a bad line."""
  rows = []
  with open(path) as f:
    for n, line in enumerate(f, 1):
      spec, _, comment = line.partition('#')
      spec = spec.strip()
      if not spec:
        continue
      m = re.fullmatch(r'([A-Za-z0-9_.-]+)==([A-Za-z0-9_.+-]+)', spec)
      if not m:
        raise ValueError(f'{os.path.basename(path)}:{n}={spec!r}: expected name==version')
      rows.append((m.group(1), m.group(2), comment.strip() == 'sdist'))
  return rows


def _norm(name: str) -> str:
  return re.sub(r'[-_.]+', '-', name).lower()


PLATFORMS = (
  'manylinux_2_28_x86_64',
  'manylinux_2_27_x86_64',
  'manylinux_2_24_x86_64',
  'manylinux_2_17_x86_64',
  'manylinux2014_x86_64',
  'manylinux1_x86_64',
)


def wheels(dest: str) -> int:
  """Downloads (or builds, for ``# sdist`` lines) the wheels of ``device_wheels.txt`` into ``dest``
  (emptied first); checks one version per name and the size budget."""
  rows = read_wheel_list()
  if os.path.isdir(dest):
    shutil.rmtree(dest)
  os.makedirs(dest)
  pip = [sys.executable, '-m', 'pip']
  binary = [f'{n}=={v}' for n, v, sdist in rows if not sdist]
  source = [f'{n}=={v}' for n, v, sdist in rows if sdist]
  plat = [a for p in PLATFORMS for a in ('--platform', p)]
  subprocess.run(
    [*pip, 'download', '-q', '--no-deps', '--only-binary=:all:', '--python-version', '3.12']
    + ['--implementation', 'cp', *plat, '-d', dest, *binary],
    check=True,
  )
  if source:
    subprocess.run([*pip, 'wheel', '-q', '--no-deps', '-w', dest, *source], check=True)
  files = sorted(os.listdir(dest))
  names = [_norm(f.split('-')[0]) for f in files]
  dupes = sorted({n for n in names if names.count(n) > 1})
  missing = sorted({_norm(n) for n, _, _ in rows} - set(names))
  mib = sum(os.path.getsize(os.path.join(dest, f)) for f in files) / 2**20
  for f in files:
    print(f'  {f}')
  print(f'{len(files)} wheels, {mib:.1f} MiB in {dest} (budget {WHEEL_BUDGET_MIB:.0f} MiB)')
  if dupes or missing or mib > WHEEL_BUDGET_MIB:
    print(f'ERROR: duplicates {dupes}, missing {missing}, {mib:.1f} MiB', file=sys.stderr)
    return 1
  return 0


def main(argv: Sequence[str] | None = None) -> int:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  sub = p.add_subparsers(dest='cmd')
  r = sub.add_parser('run', help='the check (default)')
  r.add_argument('--smoke', action='store_true', help='tiny sizes, results under $OUT/results')
  r.add_argument('--dry_run', action='store_true', help='print the plan and check its flags only')
  r.add_argument('--phases', default=None, help=f'comma-separated subset of {PHASES}')
  r.add_argument('--out', default=None, help='log, summary and archive here (default $OUT)')
  r.add_argument(
    '--results_dir', default=None, help='default benchmarks/results (--smoke: OUT/results)'
  )
  r.add_argument('--tag', default=None, help="result suffix (default 'h200'; --smoke: 'smoke')")
  r.add_argument(
    '--budget_s',
    type=float,
    default=None,
    help='wall-clock budget of all phases (default 470; --smoke 3600: CPU compilation is slow)',
  )
  r.add_argument('--min_phase_s', type=float, default=20.0, help='no phase starts with less left')
  r.add_argument('--test_workers', type=int, default=8, help='pytest-xdist workers where installed')
  r.add_argument('--allow_cpu', action='store_true', help='go on when jax finds no GPU')
  pr = sub.add_parser('probe', help='versions and devices (the env phase)')
  pr.add_argument('--out', required=True)
  pr.add_argument('--no_imports', action='store_true', help='skip importing the carried packages')
  w = sub.add_parser('wheels', help='download the wheels of device_wheels.txt')
  w.add_argument('--dest', default=os.path.join(REPO, '.whl'))
  argv = list(sys.argv[1:] if argv is None else argv)
  if not argv or argv[0] not in ('run', 'probe', 'wheels', '-h', '--help'):
    argv = ['run', *argv]
  args = p.parse_args(argv)
  if args.cmd == 'probe':
    probe(args.out, imports=not args.no_imports)
    return 0
  if args.cmd == 'wheels':
    return wheels(args.dest)
  return run(args)


if __name__ == '__main__':
  sys.exit(main())
