"""Shared helpers of the benchmark scripts: the machine's description, a measured matmul peak, memory
probes, fresh-process workers and JSON/Markdown output.

Import from a script that put the repository root on ``sys.path``::

  from benchmarks import common as bc
  mach = bc.machine()                      # platform, CPU model, cores, load, jax, devices, XLA_FLAGS
  peak = bc.measure_matmul_peak(2048)      # {'flops_per_s': ..., 'median_s': ..., ...}

Nothing here is used by the library; benchmarks never run inside the test suite's timing.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

PAPER_WIDTHS, PAPER_BOTTLENECK = (12, 72, 144, 288), 576
# The interactive U-Net's benchmark sizes: name -> (H = W, image channels, classes, widths, bottleneck, Adam lr).
# brain / fundus are the paper's (widths (12, 72, 144, 288) + 576); small is the CPU quick-run model.
SIZES = {
  'brain': (256, 1, 2, PAPER_WIDTHS, PAPER_BOTTLENECK, 5e-5),
  'fundus': (512, 3, 3, PAPER_WIDTHS, PAPER_BOTTLENECK, 1e-4),
  'small': (64, 1, 2, (8, 16, 32, 64), 128, 5e-5),
  # Smoke runs only (benchmarks/device_check.sh --smoke on CPU): two levels, compiles in seconds.
  'tiny': (32, 1, 2, (4, 8), 16, 5e-5),
}


def parse_sizes(text: str, flag: str = '--sizes') -> list[str]:
  """A comma-separated subset of SIZES, or one ValueError naming the flag, the value and the choices."""
  sizes = [s.strip() for s in text.split(',') if s.strip()]
  if not sizes or any(s not in SIZES for s in sizes):
    raise ValueError(f'{flag}: got {text!r}, expected a comma-separated subset of {sorted(SIZES)}')
  return sizes


def load_avg() -> list[float]:
  """The 1, 5 and 15 minute load averages (what else ran on the machine matters as much as the code)."""
  return [round(v, 2) for v in os.getloadavg()]


def fmt_load(load: Sequence[float]) -> str:
  return '(' + ', '.join(f'{v:.2f}' for v in load) + ')'


def cpu_model() -> str:
  try:
    with open('/proc/cpuinfo') as f:
      return next(
        (ln.split(':', 1)[1].strip() for ln in f if ln.startswith('model name')),
        platform.processor(),
      )
  except OSError:
    return platform.processor()


def git_revision() -> dict[str, Any] | None:
  """The checkout's commit and whether tracked files differ from it (None outside a git checkout)."""
  try:
    head = subprocess.run(
      ['git', 'rev-parse', 'HEAD'], cwd=REPO, capture_output=True, text=True, timeout=10, check=True
    ).stdout.strip()
    dirty = subprocess.run(
      ['git', 'status', '--porcelain', '--untracked-files=no'],
      cwd=REPO,
      capture_output=True,
      text=True,
      timeout=10,
      check=True,
    ).stdout.strip()
  except (OSError, subprocess.SubprocessError):
    return None
  return {'commit': head, 'modified_files': dirty.splitlines()}


def machine() -> dict[str, Any]:
  """Platform, CPU model, cores, load average now, jax/jaxlib versions, backend, devices, XLA_FLAGS and
  the git commit (with the tracked files modified in the checkout)."""
  try:
    import jaxlib  # pylint: disable=g-import-not-at-top

    jaxlib_version = getattr(jaxlib, '__version__', None)
  except ImportError:
    jaxlib_version = None
  devices = jax.devices()
  return {
    'platform': platform.platform(),
    'python': platform.python_version(),
    'cpu_model': cpu_model(),
    'cpu_count': os.cpu_count(),
    'cpus_usable': len(os.sched_getaffinity(0))
    if hasattr(os, 'sched_getaffinity')
    else os.cpu_count(),
    'load_avg': load_avg(),
    'jax': jax.__version__,
    'jaxlib': jaxlib_version,
    'backend': jax.default_backend(),
    'devices': [str(d) for d in devices],
    'device_kind': devices[0].device_kind if devices else None,
    'xla_flags': os.environ.get('XLA_FLAGS', ''),
    'git': git_revision(),
  }


def describe(mach: dict[str, Any]) -> str:
  """One Markdown line describing ``machine()``'s dict."""
  return (
    f'Machine: {mach["cpu_model"]}, {mach["cpus_usable"]} usable of {mach["cpu_count"]} CPUs, '
    f'{mach["platform"]}, jax {mach["jax"]} ({mach["backend"]}: {", ".join(mach["devices"])})'
    + (f', XLA_FLAGS={mach["xla_flags"]!r}' if mach.get('xla_flags') else '')
    + f'; load average (1, 5, 15 min) {fmt_load(mach["load_avg"])}.'
  )


def time_calls(fn: Callable[[], Any], repeats: int, warmup: int = 1) -> dict[str, Any]:
  """Calls ``fn`` once (compile + run: 'first_s'), ``warmup`` more untimed times, then ``repeats`` timed
  times, each ended by ``jax.block_until_ready``; median, p90 (linear interpolation), min and every time."""
  if repeats < 1 or warmup < 0:
    raise ValueError(f'repeats/warmup: got {repeats}/{warmup}, expected >= 1 / >= 0')
  t0 = time.perf_counter()
  jax.block_until_ready(fn())
  first = time.perf_counter() - t0
  for _ in range(warmup):
    jax.block_until_ready(fn())
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - t0)
  return {
    'first_s': first,
    'median_s': float(np.median(times)),
    'p90_s': float(np.percentile(times, 90)),
    'min_s': float(min(times)),
    'times_s': times,
    'n': repeats,
  }


def measure_matmul_peak(
  n: int = 2048, repeats: int = 5, dtype: Any = jnp.float32, device: Any = None
) -> dict[str, Any]:
  """The machine's achievable matmul throughput: a jitted (n, n) @ (n, n) ``jnp.dot`` in ``dtype`` on one
  device (default the first), 2 n^3 FLOP per call; median of ``repeats`` timed calls after a compile and a
  warm-up call. ``flops_per_s`` uses the median time, ``best_flops_per_s`` the fastest call.

  Use it as the denominator of "achieved FLOP/s against the measured peak"; on a shared CPU it moves with
  the load, so measure it in the same run as the numerator.
  """
  if int(n) < 1 or int(repeats) < 1:
    raise ValueError(f'n/repeats: got {n}/{repeats}, expected positive integers')
  device = device or jax.devices()[0]
  ka, kb = jax.random.split(jax.random.key(0))
  a = jax.device_put(jax.random.normal(ka, (n, n), dtype), device)
  b = jax.device_put(jax.random.normal(kb, (n, n), dtype), device)
  dot = jax.jit(lambda x, y: jnp.dot(x, y, preferred_element_type=dtype))
  t = time_calls(lambda: dot(a, b), repeats=repeats, warmup=1)
  flops = 2.0 * n**3
  return {
    'n': int(n),
    'dtype': jnp.dtype(dtype).name,
    'device': str(device),
    'flop_per_call': flops,
    'median_s': t['median_s'],
    'min_s': t['min_s'],
    'flops_per_s': flops / t['median_s'],
    'best_flops_per_s': flops / t['min_s'],
    'repeats': int(repeats),
    'load_avg': load_avg(),
  }


# ---- memory ------------------------------------------------------------------------------------------------


def _status_kb(field: str) -> float | None:
  try:
    with open('/proc/self/status') as f:
      for ln in f:
        if ln.startswith(field + ':'):
          return float(ln.split()[1])
  except OSError:
    pass
  return None


def rss_mb() -> float | None:
  """Current resident set size of this process in MiB (Linux /proc), None elsewhere."""
  kb = _status_kb('VmRSS')
  return None if kb is None else kb / 1024.0


def reset_peak_rss() -> bool:
  """Resets the kernel's peak-RSS mark of this process (Linux >= 4.0: ``echo 5 > /proc/self/clear_refs``),
  so that :func:`peak_rss_mb` then reports the peak since now. False where that is not possible."""
  try:
    with open('/proc/self/clear_refs', 'w') as f:
      f.write('5')
    return True
  except OSError:
    return False


def peak_rss_mb() -> float:
  """Peak resident set size in MiB since process start or the last :func:`reset_peak_rss` (VmHWM); falls
  back to ``getrusage``'s ru_maxrss (since process start) where /proc is missing."""
  kb = _status_kb('VmHWM')
  if kb is None:
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (
      1 / 1024 if sys.platform == 'darwin' else 1
    )
  return kb / 1024.0


def device_memory() -> dict[str, Any] | None:
  """``memory_stats()`` of the first device (bytes in use, peak) where the backend reports it (GPU/TPU);
  None on CPU, whose backend reports nothing (use the RSS probes there)."""
  try:
    stats = jax.devices()[0].memory_stats()
  except Exception:  # pylint: disable=broad-except
    return None
  if not stats:
    return None
  keep = ('bytes_in_use', 'peak_bytes_in_use', 'bytes_limit')
  return {k: int(stats[k]) for k in keep if k in stats}


# ---- fresh processes and output ----------------------------------------------------------------------------

RESULT_TAG = 'BENCH_RESULT_JSON '


def emit_result(obj: Any) -> None:
  """Prints ``obj`` as the worker's result line (read back by :func:`run_worker`)."""
  print(RESULT_TAG + json.dumps(obj), flush=True)


def run_worker(
  argv: Sequence[str], *, timeout: float | None = None, env: dict[str, str] | None = None
) -> dict[str, Any]:
  """Runs ``python argv...`` in a fresh process from the repository root and returns the dict it printed
  with :func:`emit_result`, plus 'spawn_s' (wall time from just before the spawn to the process's exit) and
  'spawn_time' (``time.time()`` just before the spawn, to compare with timestamps the worker records).

  Raises RuntimeError with the worker's stderr tail when it fails or prints no result.
  """
  cmd = [sys.executable, *argv]
  full_env = dict(os.environ, **(env or {}))
  full_env['PYTHONPATH'] = REPO + (
    os.pathsep + full_env['PYTHONPATH'] if full_env.get('PYTHONPATH') else ''
  )
  t_spawn = time.time()
  proc = subprocess.run(
    cmd, cwd=REPO, env=full_env, capture_output=True, text=True, timeout=timeout, check=False
  )
  spawn_s = time.time() - t_spawn
  lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(RESULT_TAG)]
  if proc.returncode != 0 or not lines:
    raise RuntimeError(
      f'worker {" ".join(cmd)} exited with {proc.returncode} and '
      f'{"no" if not lines else "a"} result; stderr tail:\n{proc.stderr[-3000:]}'
    )
  out = json.loads(lines[-1][len(RESULT_TAG) :])
  out['spawn_time'] = t_spawn
  out['spawn_s'] = spawn_s
  return out


def write_json(path: str, obj: Any) -> None:
  """Writes ``obj`` as indented JSON atomically (temp file + rename), creating the folder."""
  folder = os.path.dirname(os.path.abspath(path))
  os.makedirs(folder, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=folder, prefix='.tmp_', suffix='.json')
  with os.fdopen(fd, 'w') as f:
    json.dump(obj, f, indent=2, default=_jsonable)
  os.replace(tmp, path)


def write_text(path: str, text: str) -> None:
  folder = os.path.dirname(os.path.abspath(path))
  os.makedirs(folder, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=folder, prefix='.tmp_', suffix='.md')
  with os.fdopen(fd, 'w') as f:
    f.write(text)
  os.replace(tmp, path)


def save_results(out: str, md: str | None, payload: Any, table: str) -> None:
  """The run's JSON at ``out`` and, when ``md`` is given, its Markdown table there (both atomic)."""
  write_json(out, payload)
  if md:
    write_text(md, table)


def print_results(table: str, out: str, md: str | None) -> None:
  print(table)
  print(f'wrote {out}' + (f' and {md}' if md else ''))


def _jsonable(x: Any) -> Any:
  if isinstance(x, (np.generic,)):
    return x.item()
  if isinstance(x, np.ndarray):
    return x.tolist()
  return str(x)


def fmt(v: Any, digits: int = 4) -> str:
  if v is None:
    return ''
  if isinstance(v, float):
    return f'{v:.{digits}g}'
  return str(v)


def markdown_table(
  rows: Sequence[dict[str, Any]], cols: Sequence[tuple[str, str]], digits: int = 4
) -> str:
  """A Markdown table of ``rows`` with ``cols`` = ((key, header), ...); floats with ``digits`` significant
  digits, missing values empty."""
  lines = ['| ' + ' | '.join(h for _, h in cols) + ' |', '|' + '---|' * len(cols)]
  for r in rows:
    lines.append('| ' + ' | '.join(fmt(r.get(k), digits) for k, _ in cols) + ' |')
  return '\n'.join(lines) + '\n'
