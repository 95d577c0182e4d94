"""Candidate evaluation throughput of entropy-adaptive merging: vmapped/chunked vs a Python loop.

For several numbers of experts K and candidates J, times `online.score_candidates` (all J
candidates merged and forwarded with `lax.map` over chunks of `chunk` vmapped candidates, one jit;
chunk 1 is a sequential scan inside the jit, the merge experiments' CPU setting) against a loop that
merges and runs one candidate at a time (a jitted single-candidate function called J times from
Python), and reports candidates/second, compile time, the largest difference of the scores (they
must agree) and peak memory.

`--model segmentation` does the same for segmentation candidates (`merging.segmentation`): a
GroupNorm U-Net (image channel only, 2 classes), every candidate the full model merged at lambda_j
and scored by its mean per-pixel entropy (`segmentation.evaluate_candidates`), K = 2..5 by default.

Every measurement (one (K, J, chunk) of the vmapped path, one (K, J) of the loop) runs in its own
fresh process, so that peak memory belongs to that measurement alone:

* `peak_device_mb`: the device's `peak_bytes_in_use` after the timed calls (GPU/TPU; the CPU backend
  reports no memory statistics);
* `compile_rss_mb` / `run_rss_mb`: the rise of the process's peak resident set size (Linux VmHWM,
  reset through /proc/self/clear_refs just before the phase) over the resident size at the reset,
  during compilation and during the timed calls. On CPU the XLA buffers live in the process's memory,
  so `run_rss_mb` is the working memory of the evaluation (activations of the candidates in flight,
  merged weights); Python's tracemalloc does not see XLA's allocations;
* `max_rss_mb`: the worker process's peak RSS (imports, model, experts and all phases included).

Run:
  python benchmarks/bench_merging.py --quick         # tiny, ~30 s
  python benchmarks/bench_merging.py --model segmentation [--quick]   # U-Net candidates, K = 2..5
  python benchmarks/bench_merging.py                 # default grid, chunks 1 and 16
  python benchmarks/bench_merging.py --out benchmarks/results/merging_cpu.json --md benchmarks/results/merging_cpu.md
Prints a Markdown table and writes JSON with the machine description.
"""

from __future__ import annotations

import argparse
import inspect
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks import common as bc  # noqa: E402
from yiplearn.merging import candidates, online, segmentation  # noqa: E402
from yiplearn.merging import tree as tr  # noqa: E402
from yiplearn.models.resnet import resnet_classifier  # noqa: E402
from yiplearn.models.unet import UNet  # noqa: E402

DEFAULT_GRID = '2:16,3:16,3:64,5:64,8:128'
QUICK_GRID = '2:8,3:16'
SEG_GRID = '2:16,3:16,4:16,5:16'
SEG_QUICK_GRID = '2:8,5:8'


def parse_grid(text: str) -> list[tuple[int, int]]:
  """'K:J,K:J' -> [(K, J), ...] with K >= 1, J >= 1."""
  out = []
  for item in text.split(','):
    k, sep, j = item.strip().partition(':')
    if not sep or not k.isdigit() or not j.isdigit() or int(k) < 1 or int(j) < 1:
      raise ValueError(
        f'--grid: got {text!r}, expected comma-separated K:J pairs of positive integers '
        "(e.g. '2:16,3:64')"
      )
    out.append((int(k), int(j)))
  return out


def _setup(k: int, j: int, widths, image_size: int, batch: int, kind: str = 'classifier'):
  """Model, base, task vectors (K, ...), input batch and J quasi-Dirichlet candidates, built on the host
  (`jax.eval_shape` of the init, numpy values) so that a worker compiles nothing but what it measures."""
  if kind == 'segmentation':
    unet = UNet(num_classes=2, widths=tuple(widths), bottleneck=2 * widths[-1], norm='group')
    model, channels = segmentation.SegmentationModel(unet), 1
  else:
    model, channels = resnet_classifier(10, stage_sizes=(1,) * len(widths), widths=tuple(widths)), 3
  rng = np.random.default_rng(0)
  x = rng.standard_normal((batch, image_size, image_size, channels)).astype(np.float32)
  shapes = jax.eval_shape(model.init, jax.random.key(1), jax.ShapeDtypeStruct(x.shape, jnp.float32))

  def init(path, s):
    name = str(getattr(path[-1], 'key', path[-1]))
    if name in ('var', 'scale'):
      return np.ones(s.shape, s.dtype)
    if len(s.shape) < 2:
      return np.zeros(s.shape, s.dtype)
    return (rng.standard_normal(s.shape) / np.sqrt(np.prod(s.shape[:-1]))).astype(s.dtype)

  base = jax.tree_util.tree_map_with_path(init, shapes)
  # experts = base + 0.05 N(0, 1) on every leaf, so tau_k = theta_k - theta_0 is that noise.
  tau = jax.tree.map(lambda b: (0.05 * rng.standard_normal((k,) + b.shape)).astype(b.dtype), base)
  cands = candidates.quasi_dirichlet(k, j).astype(np.float32)
  return model, *jax.block_until_ready(jax.device_put((base, tau, x, cands)))


def worker(
  mode: str,
  k: int,
  j: int,
  *,
  widths,
  image_size: int,
  batch: int,
  chunk: int,
  repeats: int,
  kind: str = 'classifier',
) -> dict:
  """One measurement in a fresh process: mode 'vmapped' (score_candidates, one jit) or 'loop'."""
  model, base, tau, x, cands = _setup(k, j, widths, image_size, batch, kind)
  devices = 1
  if kind == 'segmentation':
    if mode == 'vmapped':
      fn = jax.jit(
        lambda b, t, xx, c: segmentation.evaluate_candidates(model, b, t, xx, c, chunk_size=chunk)[
          'score'
        ]
      )
      args = (base, tau, x, cands)
    else:
      fn = jax.jit(
        lambda b, t, xx, lam: segmentation.pixel_entropy_score(model.apply(tr.merge(b, t, lam), xx))
      )
      args = (base, tau, x, cands[0])
  elif mode == 'vmapped':
    kw = {}
    if 'mesh' in inspect.signature(online.score_candidates).parameters and jax.device_count() > 1:
      from yiplearn import parallel  # pylint: disable=g-import-not-at-top

      kw['mesh'] = parallel.make_mesh()  # candidates split over all devices
      devices = jax.device_count()
    fn = jax.jit(
      lambda b, t, xx, c: online.score_candidates(model, b, t, xx, c, chunk_size=chunk, **kw)
    )
    args = (base, tau, x, cands)
  else:
    fn = jax.jit(lambda b, t, xx, lam: online.entropy_score(model.apply(tr.merge(b, t, lam), xx)))
    args = (base, tau, x, cands[0])
  setup_peak = bc.peak_rss_mb()

  bc.reset_peak_rss()
  rss0 = bc.rss_mb()
  t0 = time.perf_counter()
  compiled = fn.lower(*args).compile()
  compile_s = time.perf_counter() - t0
  compile_rss = bc.peak_rss_mb() - rss0

  if mode == 'vmapped':
    call = lambda: compiled(base, tau, x, cands)  # noqa: E731
  else:
    call = lambda: jnp.stack([compiled(base, tau, x, cands[i]) for i in range(j)])  # noqa: E731
  bc.reset_peak_rss()
  rss1 = bc.rss_mb()
  jax.block_until_ready(call())  # first run + warm-up
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    scores = jax.block_until_ready(call())
    times.append(time.perf_counter() - t0)
  run_rss = bc.peak_rss_mb() - rss1
  dev = bc.device_memory()
  return {
    'mode': mode,
    'K': k,
    'J': j,
    'chunk': chunk if mode == 'vmapped' else 1,
    'devices': devices,
    'compile_s': compile_s,
    'times_s': times,
    'mean_s': float(np.mean(times)),
    'median_s': float(np.median(times)),
    'scores': np.asarray(scores).tolist(),
    'compile_rss_mb': compile_rss,
    'run_rss_mb': run_rss,
    'max_rss_mb': max(setup_peak, rss0 + compile_rss, rss1 + run_rss),
    'peak_device_mb': None
    if not dev or 'peak_bytes_in_use' not in dev
    else dev['peak_bytes_in_use'] / 2**20,
    'load_avg': bc.load_avg(),
  }


def bench(
  k: int,
  j: int,
  chunks: list[int],
  *,
  widths,
  image_size: int,
  batch: int,
  repeats: int,
  timeout: float,
  kind: str = 'classifier',
) -> list[dict]:
  """Rows (one per chunk) comparing the vmapped path with the loop; each measurement a fresh process."""
  common = [
    '--K',
    str(k),
    '--J',
    str(j),
    '--widths',
    ','.join(map(str, widths)),
    '--image_size',
    str(image_size),
    '--batch',
    str(batch),
    '--repeats',
    str(repeats),
    '--model',
    kind,
  ]
  script = os.path.abspath(__file__)
  loop = bc.run_worker([script, '--worker', 'loop', *common], timeout=timeout)
  rows = []
  for chunk in chunks:
    vm = bc.run_worker(
      [script, '--worker', 'vmapped', '--chunk', str(chunk), *common], timeout=timeout
    )
    diff = float(np.abs(np.asarray(vm['scores']) - np.asarray(loop['scores'])).max())
    rows.append(
      {
        'model': kind,
        'K': k,
        'J': j,
        'chunk': chunk,
        'batch': batch,
        'devices': vm['devices'],
        'vmapped_cands_per_s': j / vm['mean_s'],
        'loop_cands_per_s': j / loop['mean_s'],
        'speedup': loop['mean_s'] / vm['mean_s'],
        'max_abs_diff': diff,
        'vmapped_compile_s': vm['compile_s'],
        'loop_compile_s': loop['compile_s'],
        'vmapped_median_s': vm['median_s'],
        'loop_median_s': loop['median_s'],
        'peak_device_mb': vm['peak_device_mb'],
        'loop_peak_device_mb': loop['peak_device_mb'],
        'compile_rss_mb': vm['compile_rss_mb'],
        'run_rss_mb': vm['run_rss_mb'],
        'loop_run_rss_mb': loop['run_rss_mb'],
        'max_rss_mb': vm['max_rss_mb'],
        'loop_max_rss_mb': loop['max_rss_mb'],
        'repeats': repeats,
        'load_avg': vm['load_avg'],
        'worker_s': {'vmapped': vm['spawn_s'], 'loop': loop['spawn_s']},
      }
    )
  return rows


COLS = [
  ('model', 'model'),
  ('K', 'K'),
  ('J', 'J'),
  ('chunk', 'chunk'),
  ('batch', 'batch'),
  ('devices', 'devices'),
  ('vmapped_cands_per_s', 'vmapped cands/s'),
  ('loop_cands_per_s', 'loop cands/s'),
  ('speedup', 'speedup'),
  ('max_abs_diff', 'max |diff|'),
  ('vmapped_compile_s', 'vmapped compile s'),
  ('loop_compile_s', 'loop compile s'),
  ('run_rss_mb', 'vmapped run peak RSS +MiB'),
  ('loop_run_rss_mb', 'loop run peak RSS +MiB'),
  ('compile_rss_mb', 'vmapped compile peak RSS +MiB'),
  ('peak_device_mb', 'vmapped device peak MiB'),
  ('loop_peak_device_mb', 'loop device peak MiB'),
  ('max_rss_mb', 'worker max RSS MiB'),
]


def markdown(rows: list[dict], mach: dict, argv: list[str]) -> str:
  return (
    '\n'.join(
      [
        '# bench_merging',
        '',
        f'Command: `python {" ".join(argv)}`',
        '',
        bc.markdown_table(rows, COLS),
        bc.describe(mach) + f' Model: {mach["model"]}.',
        f'Load average at start {bc.fmt_load(mach["load_start"])}, at end {bc.fmt_load(mach["load_end"])}.',
        'Rates: J / mean time of the timed calls after one untimed call. Memory: each measurement in a fresh '
        'process; "+MiB" is the rise of the peak RSS over the RSS at the start of that phase (CPU: XLA buffers '
        'included); device peaks where the backend reports them.',
      ]
    )
    + '\n'
  )


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument(
    '--quick', action='store_true', help=f'grid {QUICK_GRID}, a tiny model, chunk 8, 2 repeats'
  )
  p.add_argument(
    '--grid', default=None, help=f'K:J pairs (default {DEFAULT_GRID}; --quick {QUICK_GRID})'
  )
  p.add_argument(
    '--chunks',
    default=None,
    help='comma-separated chunk sizes of the vmapped path (default 1,16; --quick 8)',
  )
  p.add_argument('--repeats', type=int, default=None, help='timed calls (default 3; --quick 2)')
  p.add_argument(
    '--model',
    choices=('classifier', 'segmentation'),
    default='classifier',
    help=f'candidates of a ResNet classifier or of a segmentation U-Net (grid {SEG_GRID})',
  )
  p.add_argument('--timeout', type=float, default=1800, help='seconds per worker process')
  p.add_argument('--out', default='bench_merging.json')
  p.add_argument('--md', default=None, help='also write the Markdown table here')
  p.add_argument('--worker', choices=('vmapped', 'loop'), default=None, help=argparse.SUPPRESS)
  p.add_argument('--K', type=int, help=argparse.SUPPRESS)
  p.add_argument('--J', type=int, help=argparse.SUPPRESS)
  p.add_argument('--chunk', type=int, default=1, help=argparse.SUPPRESS)
  p.add_argument('--widths', default='16,32', help=argparse.SUPPRESS)
  p.add_argument('--image_size', type=int, default=28, help=argparse.SUPPRESS)
  p.add_argument('--batch', type=int, default=16, help=argparse.SUPPRESS)
  args = p.parse_args()
  if args.worker:
    bc.emit_result(
      worker(
        args.worker,
        args.K,
        args.J,
        widths=[int(w) for w in args.widths.split(',')],
        image_size=args.image_size,
        batch=args.batch,
        chunk=args.chunk,
        repeats=args.repeats,
        kind=args.model,
      )
    )
    return
  if args.quick:
    kw, grid, chunks, reps = dict(widths=(4, 8), image_size=16, batch=8), QUICK_GRID, '8', 2
  else:
    kw, grid, chunks, reps = dict(widths=(16, 32), image_size=28, batch=16), DEFAULT_GRID, '1,16', 3
  if args.model == 'segmentation':
    grid = SEG_QUICK_GRID if args.quick else SEG_GRID
    kw = (
      dict(widths=(4, 8), image_size=16, batch=4)
      if args.quick
      else dict(widths=(4, 8, 16), image_size=48, batch=8)
    )
  kw['kind'] = args.model
  grid = parse_grid(args.grid or grid)
  try:
    chunks = [int(c) for c in (args.chunks or chunks).split(',')]
  except ValueError:
    chunks = []
  if not chunks or min(chunks) < 1:
    raise ValueError(f'--chunks: got {args.chunks!r}, expected comma-separated positive integers')
  reps = args.repeats or reps
  if reps < 1:
    raise ValueError(f'--repeats: got {args.repeats}, expected >= 1')
  mach = bc.machine()
  mach['model'] = kw
  mach['load_start'] = bc.load_avg()
  argv = [os.path.relpath(os.path.abspath(__file__), bc.REPO)] + sys.argv[1:]
  rows = []
  for k, j in grid:
    for r in bench(k, j, chunks, repeats=reps, timeout=args.timeout, **kw):
      rows.append(r)
      print(
        f'K={k} J={j} chunk={r["chunk"]}: vmapped {r["vmapped_cands_per_s"]:.1f}/s, loop '
        f'{r["loop_cands_per_s"]:.1f}/s, run peak RSS +{r["run_rss_mb"]:.0f} MiB (loop '
        f'+{r["loop_run_rss_mb"]:.0f}), load {r["load_avg"][0]:.2f}',
        flush=True,
      )
    mach['load_end'] = bc.load_avg()
    table = markdown(rows, mach, argv)
    bc.save_results(args.out, args.md, {'machine': mach, 'argv': argv, 'rows': rows}, table)
  bc.print_results(table, args.out, args.md)


if __name__ == '__main__':
  main()
