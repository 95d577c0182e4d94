"""First-click latency of interactive segmentation in a fresh process, compilation included (issue 5).

The user opens an image and clicks once: the tool must show P_1 = f(image, {c_1}) and, for the
Mid-Interaction methods, be ready for the next click; after click 2 it makes the first MI update and
shows P_2 = f(image, C_2; theta_new). Every measurement runs in its own fresh Python process (one
worker per measurement, `--worker`), which records wall-clock timestamps:

  startup   from just before the parent spawns the process to the first line of this script
  import    jax, flax, optax and the yiplearn modules the tool needs
  build     the U-Net, its parameters (host arrays of the right shapes, as from a checkpoint restore:
            nothing compiled, file I/O not included), the adaptation state (Adam) and the image
  click 1   `tool.start(state, image, coord, label)` of `yiplearn.interactive.tool.make_tool` (method pi_mi:
            its executables `start` (the rule's start and click hooks) and `show` (guidance maps + forward
            with its VJP + argmax)): trace + lower, compile, first run -- "first prediction" is the moment P_1
            is available
  MI        `tool.propose` + `tool.adapt` (executables `propose`: the pseudo-label forward, shown at once;
            `adapt`: the Mid-Interaction update through the kept VJP -- backward of DiceFocal + beta CCG,
            guarded Adam step; then the compiled `show` with the new parameters; state donated): trace +
            lower, compile, first run
  steady    a second call of each once compiled (click 1 of a new image; click 3 of this one).

Compilation is ahead of time (`tool.jitted[name].lower(...).compile()`, the functions `tool.start`,
`tool.propose` and `tool.adapt` call) so that its share is separate; a tool
can compile the MI step while the user looks at P_1, so "MI ready" (MI compiled) is reported as well.

Modes per size: `nocache` (no persistent cache), then with JAX's persistent compilation cache
(`jax_compilation_cache_dir` = a fresh empty folder, `jax_persistent_cache_min_compile_time_secs` = 0,
`jax_persistent_cache_min_entry_size_bytes` = -1): run 1 `cold` (empty cache, fills it), runs 2+
`warm`. Cache hits and misses are counted with `jax.monitoring` listeners, so a warm run that did not
hit the cache is visible in the table. Issue 5's target: first click < 1 s with a warm cache.

Run:
  python benchmarks/bench_latency.py --sizes small                           # ~2 min on 2 shared cores
  python benchmarks/bench_latency.py --sizes small,brain --warm_runs 2 \\
      --out benchmarks/results/latency_cpu.json --md benchmarks/results/latency_cpu.md
"""

from __future__ import annotations

import time

_T_SCRIPT = time.time()  # the first thing this process does after the interpreter started

# pylint: disable=g-import-not-at-top,wrong-import-position
import argparse  # noqa: E402
import os  # noqa: E402
import shutil  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import warnings  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks import common as bc  # noqa: E402
from yiplearn.interactive import rules  # noqa: E402
from yiplearn.interactive.spec import SessionSpec  # noqa: E402
from yiplearn.interactive.tool import make_tool  # noqa: E402
from yiplearn.models.unet import UNet  # noqa: E402

_T_IMPORTED = time.time()

MODES = ('nocache', 'cold', 'warm')
CACHE_EVENTS = (
  '/jax/compilation_cache/cache_hits',
  '/jax/compilation_cache/cache_misses',
  '/jax/compilation_cache/compile_requests_use_cache',
)


# ---- the worker (one fresh process = one measurement) ------------------------------------------------------


def restored_params(model, in_channels: int, seed: int = 0):
  """Parameters as a tool gets them from a checkpoint: host arrays of the model's parameter shapes
  (`jax.eval_shape` of its init, so nothing is compiled; values: fan-in-scaled normals, zero biases), put on
  the device. The checkpoint's file I/O is not part of the measurement."""
  shapes = jax.eval_shape(
    model.init, jax.random.key(0), jax.ShapeDtypeStruct((1, 32, 32, in_channels), jnp.float32)
  )
  rng = np.random.default_rng(seed)

  def leaf(s):
    if len(s.shape) < 2:
      return np.zeros(s.shape, s.dtype)
    return (rng.standard_normal(s.shape) / np.sqrt(np.prod(s.shape[:-1]))).astype(s.dtype)

  return jax.device_put(jax.tree_util.tree_map(leaf, shapes))


def _aot(jitted, *args) -> tuple[dict, object, object]:
  """Trace + lower, compile, first run of `jitted(*args)`, timed apart; returns (times, compiled, output)."""
  t0 = time.perf_counter()
  lowered = jitted.lower(*args)
  t1 = time.perf_counter()
  compiled = lowered.compile()
  t2 = time.perf_counter()
  out = jax.block_until_ready(compiled(*args))
  t3 = time.perf_counter()
  return (
    {'lower_s': t1 - t0, 'compile_s': t2 - t1, 'run_s': t3 - t2, 'total_s': t3 - t0},
    compiled,
    out,
  )


def _sum(*times: dict) -> dict:
  """Durations of consecutive executables, added up per phase."""
  return {k: sum(t[k] for t in times) for k in ('lower_s', 'compile_s', 'run_s', 'total_s')}


def worker(size: str, cache_dir: str | None, clicks_T: int) -> dict:
  """One measurement; returns timestamps (time.time()) and durations. Runs in a fresh process."""
  counts = {e.rsplit('/', 1)[1]: 0 for e in CACHE_EVENTS}
  durations: dict[str, float] = {}

  def on_event(event, **_):
    if event in CACHE_EVENTS:
      counts[event.rsplit('/', 1)[1]] += 1

  def on_duration(event, secs, **_):
    durations[event] = durations.get(event, 0.0) + float(secs)

  jax.monitoring.register_event_listener(on_event)
  jax.monitoring.register_event_duration_secs_listener(on_duration)
  if cache_dir:
    jax.config.update('jax_compilation_cache_dir', cache_dir)
    jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.0)
    jax.config.update('jax_persistent_cache_min_entry_size_bytes', -1)
  warnings.filterwarnings('ignore', message='Some donated buffers were not usable')
  t_config = time.time()

  hw, channels, classes, widths, bottleneck, lr = bc.SIZES[size]
  model = UNet(num_classes=classes, widths=widths, bottleneck=bottleneck, norm='instance')
  spec = SessionSpec(num_classes=classes, num_clicks=clicks_T)
  tool = make_tool(model, spec, rules.make('pi_mi'), tx=rules.make_optimizer(lr))
  params = restored_params(model, channels + classes)
  state = tool.init(params)
  rng = np.random.default_rng(0)
  rr, cc = np.mgrid[:hw, :hw]
  lesion = np.hypot(rr - 0.45 * hw, cc - 0.55 * hw) < hw / 6
  image = jnp.asarray(
    0.3 * lesion[..., None] + rng.normal(0.0, 0.2, (hw, hw, channels)), jnp.float32
  )
  key = jax.random.PRNGKey(0)
  jax.block_until_ready((state, image))
  t_built = time.time()

  j = tool.jitted
  c1 = jnp.asarray((int(0.45 * hw), int(0.55 * hw)), jnp.int32)
  c2 = jnp.asarray(
    (int(0.45 * hw), int(0.55 * hw + hw / 6 - 3)), jnp.int32
  )  # a correction on the lesion's rim
  c3 = jnp.asarray((int(0.45 * hw + hw / 6 - 3), int(0.55 * hw)), jnp.int32)
  fg, bg = jnp.int32(classes - 1), jnp.int32(1)
  # Click 1 = tool.start: the start hooks, then `show` (the forward pass with its VJP).
  t_start, start_c, (state, view0) = _aot(j['start'], state, image, c1, fg, key)
  t_show, show_c, (state, view) = _aot(j['show'], state, view0)
  click1 = _sum(t_start, t_show)
  pred1 = view.pred
  t_pred1 = time.time()

  # Click 2 = tool.propose (the pseudo-label, one forward) + tool.adapt (the MI update through the kept
  # VJP, then the same `show` executable displays P_2).
  t_prop, propose_c, (view2, _) = _aot(j['propose'], state, view, c2, bg)
  t_pseudo_shown = time.time()
  t_adapt, adapt_c, (state, _) = _aot(j['adapt'], state, view2)
  t_mi_ready = time.time()
  t0 = time.perf_counter()
  state, view = jax.block_until_ready(show_c(state, view2._replace(pullback=None)))
  shown = {'lower_s': 0.0, 'compile_s': 0.0, 'run_s': time.perf_counter() - t0}
  shown['total_s'] = shown['run_s']
  mi = _sum(t_prop, t_adapt, shown)
  pred2 = view.pred
  t_mi_shown = time.time()

  # Steady state: the next click of each, compiled (a new image's click 1; click 3 of this image).
  fresh = jax.block_until_ready(tool.init(params))
  t0 = time.perf_counter()
  jax.block_until_ready(show_c(*start_c(fresh, image, c1, fg, key)))
  predict_again = time.perf_counter() - t0
  t0 = time.perf_counter()
  view3, _ = propose_c(state, view, c3, bg)
  state, _ = adapt_c(state, view3)
  state, view = jax.block_until_ready(show_c(state, view3._replace(pullback=None)))
  mi_again = time.perf_counter() - t0

  return {
    'size': size,
    'cache_dir': cache_dir,
    'pid': os.getpid(),
    'script_time': _T_SCRIPT,
    'imported_time': _T_IMPORTED,
    'configured_time': t_config,
    'built_time': t_built,
    'pred1_time': t_pred1,
    'pseudo_shown_time': t_pseudo_shown,
    'mi_ready_time': t_mi_ready,
    'mi_shown_time': t_mi_shown,
    'click1': click1,
    'mi': mi,
    'predict_again_s': predict_again,
    'mi_again_s': mi_again,
    'mi_step_count': int(state.step),
    'skipped': int(state.skipped),
    'pred1_foreground_px': int(jnp.sum(pred1 > 0)),
    'pred2_foreground_px': int(jnp.sum(pred2 > 0)),
    'cache_events': counts,
    'durations_s': {
      k.rsplit('/', 1)[1]: v
      for k, v in durations.items()
      if 'compile' in k or 'trace' in k or 'cache' in k
    },
    'load_avg': bc.load_avg(),
  }


# ---- the parent: one worker per measurement ---------------------------------------------------------------


def summarise(res: dict, mode: str, run: int) -> dict:
  """Durations relative to the spawn of the worker's process."""
  s = res['spawn_time']
  return {
    'size': res['size'],
    'mode': mode,
    'run': run,
    'startup_s': res['script_time'] - s,
    'import_s': res['imported_time'] - res['script_time'],
    'build_s': res['built_time'] - res['configured_time'],
    'click1_lower_s': res['click1']['lower_s'],
    'click1_compile_s': res['click1']['compile_s'],
    'click1_run_s': res['click1']['run_s'],
    'click1_s': res['click1']['total_s'],
    'first_pred_from_imports_s': res['pred1_time'] - res['imported_time'],
    'first_pred_from_spawn_s': res['pred1_time'] - s,
    'mi_lower_s': res['mi']['lower_s'],
    'mi_compile_s': res['mi']['compile_s'],
    'mi_run_s': res['mi']['run_s'],
    'first_mi_s': res['mi']['total_s'],
    'mi_ready_from_spawn_s': res['mi_ready_time'] - s,
    'mi_shown_from_spawn_s': res['mi_shown_time'] - s,
    'predict_again_s': res['predict_again_s'],
    'mi_again_s': res['mi_again_s'],
    'cache_hits': res['cache_events']['cache_hits'],
    'cache_misses': res['cache_events']['cache_misses'],
    'process_s': res['spawn_s'],
    'load_avg': res['load_avg'],
  }


COLS = [
  ('size', 'size'),
  ('mode', 'cache'),
  ('run', 'run'),
  ('startup_s', 'startup s'),
  ('import_s', 'import s'),
  ('build_s', 'build s'),
  ('click1_lower_s', 'click 1 trace s'),
  ('click1_compile_s', 'click 1 compile s'),
  ('click1_run_s', 'click 1 run s'),
  ('click1_s', 'click 1 total s'),
  ('first_pred_from_imports_s', 'P_1 after imports s'),
  ('first_pred_from_spawn_s', 'P_1 after spawn s'),
  ('mi_lower_s', 'MI trace s'),
  ('mi_compile_s', 'MI compile s'),
  ('mi_run_s', 'MI run s'),
  ('first_mi_s', 'first MI (trace+compile+run) s'),
  ('mi_shown_from_spawn_s', 'P_2 after spawn s'),
  ('predict_again_s', 'next predict s'),
  ('mi_again_s', 'next MI s'),
  ('cache_hits', 'cache hits'),
  ('cache_misses', 'cache misses'),
]


def markdown(rows: list[dict], mach: dict, peak: dict | None, argv: list[str]) -> str:
  out = [
    '# First-click latency in a fresh process',
    '',
    f'Command: `python {" ".join(argv)}`',
    '',
    bc.markdown_table(rows, COLS, digits=3),
  ]
  warm = [r for r in rows if r['mode'] == 'warm']
  for size in dict.fromkeys(r['size'] for r in warm):
    w = [r for r in warm if r['size'] == size]
    med = lambda k: float(np.median([r[k] for r in w]))  # noqa: E731
    out.append(
      f'- {size}, warm cache (median of {len(w)}): P_1 {med("first_pred_from_imports_s"):.3f} s after '
      f'imports ({med("first_pred_from_spawn_s"):.3f} s after spawn), first MI update '
      f"{med('first_mi_s'):.3f} s; issue 5's target: first click < 1 s with a warm cache."
    )
  out.append('')
  out.append(
    bc.describe(mach)
    + (
      f' Measured f32 matmul peak: {peak["flops_per_s"] / 1e9:.1f} GFLOP/s (n={peak["n"]}, median).'
      if peak
      else ''
    )
  )
  out.append('Load average at the end of each run is in the JSON (`rows[].load_avg`).')
  return '\n'.join(out) + '\n'


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument('--sizes', default='small', help=f'comma-separated subset of {sorted(bc.SIZES)}')
  p.add_argument(
    '--nocache_runs', type=int, default=1, help='fresh processes without the persistent cache'
  )
  p.add_argument(
    '--warm_runs', type=int, default=2, help='fresh processes with a warm cache (after 1 cold)'
  )
  p.add_argument('--clicks', type=int, default=10, help='click capacity T of the Clicks pytree')
  p.add_argument(
    '--cache_dir',
    default=None,
    help='keep the caches in <cache_dir>/<size> (must not exist or be '
    'empty: run 1 is cold); default: temporary folders, removed afterwards',
  )
  p.add_argument('--no_peak', action='store_true', help='skip the matmul peak measurement')
  p.add_argument('--timeout', type=float, default=1800, help='seconds per worker process')
  p.add_argument('--out', default='bench_latency.json')
  p.add_argument('--md', default=None, help='also write the Markdown table here')
  p.add_argument('--worker', action='store_true', help=argparse.SUPPRESS)
  p.add_argument('--size', default=None, help=argparse.SUPPRESS)
  p.add_argument('--worker_cache', default='', help=argparse.SUPPRESS)
  args = p.parse_args()
  if args.worker:
    bc.emit_result(worker(args.size, args.worker_cache or None, args.clicks))
    return
  sizes = bc.parse_sizes(args.sizes)
  if args.nocache_runs < 0 or args.warm_runs < 0 or args.clicks < 3:
    raise ValueError(
      f'--nocache_runs/--warm_runs/--clicks: got {args.nocache_runs}/{args.warm_runs}/'
      f'{args.clicks}, expected >= 0 / >= 0 / >= 3'
    )
  for size in sizes if args.cache_dir else ():
    cache = os.path.join(args.cache_dir, size)
    if os.path.isdir(cache) and os.listdir(cache):
      raise ValueError(
        f'--cache_dir: {cache} is not empty, expected a new or empty folder (run 1 must start '
        'from an empty cache)'
      )
  mach = bc.machine()
  mach['load_start'] = bc.load_avg()
  print(
    f'machine: {mach["cpu_model"]}, {mach["cpus_usable"]} CPUs, jax {mach["jax"]} {mach["devices"]}, '
    f'load {bc.fmt_load(mach["load_start"])}',
    flush=True,
  )
  rows, raw = [], []
  script = os.path.abspath(__file__)
  for size in sizes:
    plan = [('nocache', i + 1) for i in range(args.nocache_runs)]
    plan += [('cold', 1)] + [('warm', i + 2) for i in range(args.warm_runs)]
    if args.cache_dir:
      cache = os.path.join(args.cache_dir, size)
      os.makedirs(cache, exist_ok=True)
    else:
      cache = tempfile.mkdtemp(prefix=f'jax_cache_{size}_')
    try:
      for mode, run in plan:
        argv = [script, '--worker', '--size', size, '--clicks', str(args.clicks)]
        if mode != 'nocache':
          argv += ['--worker_cache', cache]
        res = bc.run_worker(argv, timeout=args.timeout)
        row = summarise(res, mode, run)
        if mode != 'nocache':
          row['cache_mb'] = (
            sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(cache) for f in fs)
            / 2**20
          )
        rows.append(row)
        raw.append(res)
        print(
          f'  {size} {mode} run {run}: P_1 {row["first_pred_from_imports_s"]:.2f} s after imports '
          f'({row["first_pred_from_spawn_s"]:.2f} s after spawn), first MI {row["first_mi_s"]:.2f} s, '
          f'cache hits {row["cache_hits"]} misses {row["cache_misses"]}, load {row["load_avg"][0]:.2f}',
          flush=True,
        )
    finally:
      if not args.cache_dir:
        shutil.rmtree(cache, ignore_errors=True)
  peak = None if args.no_peak else bc.measure_matmul_peak(2048, repeats=5)
  mach['load_end'] = bc.load_avg()
  argv = [os.path.relpath(script, bc.REPO)] + sys.argv[1:]
  table = markdown(rows, mach, peak, argv)
  bc.save_results(
    args.out,
    args.md,
    {'machine': mach, 'argv': argv, 'matmul_peak': peak, 'rows': rows, 'raw': raw},
    table,
  )
  bc.print_results(table, args.out, args.md)


if __name__ == '__main__':
  main()
