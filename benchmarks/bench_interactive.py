"""Per-click update latency of interactive segmentation with online adaptation (DESIGN.md 1.1).

Times, for a click-conditioned U-Net (`yiplearn.models.unet.UNet`, random weights) at each size:

* MI step  -- one Mid-Interaction click of the per-click tool (`yiplearn.interactive.tool`, state donated):
  `propose` (click placed, guidance maps, pseudo-label forward), `adapt` (backward through the displayed
  forward pass's VJP + one Adam step), `show` (the adapted prediction's forward with its VJP): two forwards
  + one backward, as in the session;
* PI update -- one Post-Interaction update, the tool's `finish` (the `pi` rule's end-of-image hook: two
  optimiser steps, the stage-2 artificial clicks by the simulated user's connected components, three
  forwards + two backwards);
* session  -- the whole image as one jitted `session.make_session` call (method pi_mi, T clicks: every
  prediction, simulated click, MI update, scoring and the PI update); "per click" = session time / T.

For each: the first call (compile + one run, "compile s"), `--warmup` (sessions: `--session_warmup`) untimed
calls, then `--repeats` (sessions: `--session_repeats`) timed calls with `jax.block_until_ready`; median and p90
(linear interpolation, so with 3 repeats p90 is near the max).
The state is threaded through the calls (an online stream), so every timed call is a real update.

Sizes: brain 256 x 256 (1 image channel + 2 guidance, 2 classes) and fundus 512 x 512 (3 + 3, 3 classes) with the
paper's widths (12, 72, 144, 288) + 576 and instance norm; small 64 x 64, widths (8, 16, 32, 64) + 128.
The paper reports 0.05 s (MI) / 0.09 s (PI) per update on an A5000 GPU and 0.25 s / 0.41 s on a CPU.

Run:
  python benchmarks/bench_interactive.py --sizes small --repeats 5
  python benchmarks/bench_interactive.py --sizes brain,fundus --repeats 3 --session_repeats 2 --session_warmup 0 \
      --out results.json --md results.md
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks import common as bc  # noqa: E402
from yiplearn.interactive import rules  # noqa: E402
from yiplearn.interactive import session as session_lib  # noqa: E402
from yiplearn.interactive.spec import SessionSpec  # noqa: E402
from yiplearn.interactive.tool import make_tool  # noqa: E402
from yiplearn.models.unet import UNet  # noqa: E402

SIZES = bc.SIZES  # name: (H = W, image channels, classes, widths, bottleneck, Adam lr)
PHASES = ('mi_step', 'pi_update', 'session')
PAPER = {'A5000 GPU': {'mi': 0.05, 'pi': 0.09}, 'CPU': {'mi': 0.25, 'pi': 0.41}}


def machine() -> dict:
  """Platform, CPU model, cores, load, jax version, devices, XLA_FLAGS (``benchmarks/common.py``); the load
  averages at the start and end are added by the caller."""
  return bc.machine()


def synthetic_case(size: int, channels: int, classes: int, seed: int = 0):
  """A deterministic image (H, W, C) float32 and class map (H, W) int32: a lesion disk (2 classes) or an optic
  disc with a cup (3 classes: 1 rim, 2 cup), plus noise."""
  rr, cc = np.mgrid[:size, :size]
  r = np.hypot(rr - 0.45 * size, cc - 0.55 * size)
  gt = (
    (r < size / 6).astype(np.int32)
    if classes == 2
    else np.where(r < size / 12, 2, (r < size / 6) * 1)
  )
  rng = np.random.default_rng(seed)
  image = 0.3 * gt[..., None] + rng.normal(0.0, 0.2, (size, size, channels))
  return jnp.asarray(image, jnp.float32), jnp.asarray(gt, jnp.int32)


def time_calls(call, state, warmup: int, repeats: int) -> tuple[dict, object]:
  """call(state, i) -> (state, ...). First call = compile + run; then warmup, then `repeats` timed calls."""
  t0 = time.perf_counter()
  out = jax.block_until_ready(call(state, 0))
  compile_s = time.perf_counter() - t0
  state = out[0]
  for i in range(warmup):
    state = jax.block_until_ready(call(state, 1 + i))[0]
  times = []
  for i in range(repeats):
    t0 = time.perf_counter()
    out = jax.block_until_ready(call(state, 1 + warmup + i))
    times.append(time.perf_counter() - t0)
    state = out[0]
  return {
    'compile_s': compile_s,
    'warmup': warmup,
    'times_s': times,
    'median_s': float(np.median(times)),
    'p90_s': float(np.percentile(times, 90)),
    'n': repeats,
  }, state


def bench_size(
  name: str,
  *,
  repeats: int,
  session_repeats: int,
  warmup: int,
  session_warmup: int,
  clicks: int,
  unroll,
  phases: tuple[str, ...] = PHASES,
) -> dict:
  size, channels, classes, widths, bottleneck, lr = SIZES[name]
  model = UNet(num_classes=classes, widths=widths, bottleneck=bottleneck, norm='instance')
  spec, rule = SessionSpec(num_classes=classes, num_clicks=clicks), rules.make('pi_mi')
  tx = rules.make_optimizer(lr)
  # Parameters do not depend on the spatial size: initialise on a small input.
  params = jax.jit(model.init)(jax.random.key(0), jnp.zeros((1, 32, 32, channels + classes)))
  n_params = int(sum(a.size for a in jax.tree_util.tree_leaves(params)))
  image, gt = synthetic_case(size, channels, classes)
  key = jax.random.key(1)
  c1, c2 = (int(0.45 * size), int(0.55 * size)), (size // 10, size // 10)
  # MI and PI as production calls them: the per-click tool's executables (the session runs the same
  # click step inside its scan). MI after click 2: propose (pseudo-label forward), adapt (backward
  # through the kept VJP + Adam), show (the adapted prediction with its VJP).
  tool = make_tool(model, spec, rule, tx=tx)
  j = tool.jitted
  view1 = tool.start(tool.init(params), np.asarray(image), c1, classes - 1)[1]
  c2_j, zero = jnp.asarray(c2, jnp.int32), jnp.int32(0)

  def mi(state):
    view2, _ = j['propose'](state, view1, c2_j, zero)
    state, _ = j['adapt'](state, view2)
    return j['show'](state, view2._replace(pullback=None))

  accepted = view1._replace(pred=jnp.asarray(gt, jnp.int32))
  pi = lambda s, k: (j['finish'](s, accepted._replace(key=k)),)
  sess = session_lib.make_session(model, spec, rule, tx=tx, unroll=unroll)

  row = {
    'size': name,
    'hw': [size, size],
    'in_channels': channels + classes,
    'classes': classes,
    'widths': list(widths),
    'bottleneck': bottleneck,
    'params': n_params,
    'clicks_T': clicks,
    'unroll': unroll,
    'load_before': os.getloadavg(),
  }
  timed = [
    ('mi_step', lambda s, i: mi(s), warmup, repeats),
    ('pi_update', lambda s, i: pi(s, jax.random.fold_in(key, i)), warmup, repeats),
    (
      'session',
      lambda s, i: sess(s, image, gt, jax.random.fold_in(key, i)),
      session_warmup,
      session_repeats,
    ),
  ]
  for phase, call, w, n in [p for p in timed if p[0] in phases]:
    state = rules.init_state(rule, params, tx)
    res, state = time_calls(call, state, w, n)
    res['skipped_updates'] = int(state.skipped)
    row[phase] = res
    print(
      f'  {name} {phase}: compile {res["compile_s"]:.2f} s, median {res["median_s"]:.4f} s, '
      f'p90 {res["p90_s"]:.4f} s (n={n}, load {os.getloadavg()[0]:.2f})',
      flush=True,
    )
  if 'session' in row:
    s = row['session']
    row['session_per_click'] = {
      'median_s': s['median_s'] / clicks,
      'p90_s': s['p90_s'] / clicks,
      'n': s['n'],
    }
  row['load_after'] = os.getloadavg()
  return row


def markdown(rows: list[dict], mach: dict, num_runs: int = 1) -> str:
  lines = [
    '| size | H x W | Cin | K | params | phase | compile s (1st call) | median s | p90 s | n |',
    '|---|---|---|---|---|---|---|---|---|---|',
  ]
  for r in rows:
    head = f'| {r["size"]} | {r["hw"][0]}x{r["hw"][1]} | {r["in_channels"]} | {r["classes"]} | {r["params"]:,} '
    for phase, label in [
      ('mi_step', 'MI step'),
      ('pi_update', 'PI update'),
      ('session', 'session / image'),
      ('session_per_click', 'session / T (per click)'),
    ]:
      if phase not in r:
        lines.append(f'{head}| {label} | not measured | | | |')
        continue
      p = r[phase]
      comp = f'{p["compile_s"]:.2f}' if 'compile_s' in p else ''
      n = p.get('n', r.get('session', {}).get('n'))  # per click: the session's n
      lines.append(f'{head}| {label} | {comp} | {p["median_s"]:.4f} | {p["p90_s"]:.4f} | {n} |')
  for where, ref in PAPER.items():
    lines.append(
      f'| paper ({where}) | | | | | MI / PI per update | | {ref["mi"]} / {ref["pi"]} | | |'
    )
  lines.append('')
  lines.append(
    f'Machine: {mach["cpu_model"]}, {mach["cpus_usable"]} usable of {mach["cpu_count"]} CPUs, '
    f'{mach["platform"]}, jax {mach["jax"]} ({mach["backend"]}: {", ".join(mach["devices"])}); '
    f'load average (1, 5, 15 min) at start {fmt_load(mach["load_start"])}, '
    f'at end {fmt_load(mach["load_end"])}' + (f' (over {num_runs} runs).' if num_runs > 1 else '.')
  )
  return '\n'.join(lines) + '\n'


def fmt_load(load) -> str:
  return '(' + ', '.join(f'{v:.2f}' for v in load) + ')'


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument('--sizes', default='small', help=f'comma-separated subset of {sorted(SIZES)}')
  p.add_argument('--repeats', type=int, default=5, help='timed calls of MI and PI')
  p.add_argument(
    '--session_repeats', type=int, default=None, help='timed session calls (default --repeats)'
  )
  p.add_argument(
    '--warmup', type=int, default=1, help='untimed calls after the first (compiling) one'
  )
  p.add_argument(
    '--session_warmup', type=int, default=None, help='the same for sessions (default --warmup)'
  )
  p.add_argument('--phases', default=','.join(PHASES), help=f'comma-separated subset of {PHASES}')
  p.add_argument('--clicks', type=int, default=10, help='T, clicks per image')
  p.add_argument('--unroll', default='1', help="session click-scan unroll: an int or 'full'")
  p.add_argument('--out', default='bench_interactive.json')
  p.add_argument('--md', default=None, help='also write the Markdown table here')
  p.add_argument(
    '--append', action='store_true', help="keep the other sizes' rows of an existing --out"
  )
  args = p.parse_args()
  sizes = [s.strip() for s in args.sizes.split(',') if s.strip()]
  bad = [s for s in sizes if s not in SIZES]
  if bad or not sizes:
    raise ValueError(
      f'--sizes: got {args.sizes!r}, expected a comma-separated subset of {sorted(SIZES)}'
    )
  if args.repeats < 1 or args.warmup < 0 or args.clicks < 2 or (args.session_repeats or 1) < 1:
    raise ValueError(
      f'--repeats/--warmup/--clicks: got {args.repeats}/{args.warmup}/{args.clicks}, '
      'expected >= 1 / >= 0 / >= 2'
    )
  phases = tuple(s.strip() for s in args.phases.split(',') if s.strip())
  if not phases or any(ph not in PHASES for ph in phases):
    raise ValueError(
      f'--phases: got {args.phases!r}, expected a comma-separated subset of {PHASES}'
    )
  unroll = True if args.unroll == 'full' else int(args.unroll)
  # CPU cannot always donate buffers; that is expected here and not worth a warning per call.
  warnings.filterwarnings('ignore', message='Some donated buffers were not usable')
  mach = machine()
  mach['load_start'] = load_start = os.getloadavg()
  rows, runs = [], []
  if args.append and os.path.exists(
    args.out
  ):  # an earlier run on the same machine: keep its other sizes
    with open(args.out) as f:
      old = json.load(f)
    rows = [r for r in old['rows'] if r['size'] not in sizes]
    runs = old.get('runs') or [
      {
        'argv': old.get('argv'),
        **{k: old['machine'].get(k) for k in ('load_start', 'load_end', 'wall_s')},
      }
    ]
    mach['load_start'] = old['machine']['load_start']
  runs.append(
    {'argv': sys.argv, 'started': time.strftime('%Y-%m-%dT%H:%M:%S%z'), 'load_start': load_start}
  )
  print(
    f'machine: {mach["cpu_model"]}, {mach["cpus_usable"]} CPUs, jax {mach["jax"]} {mach["devices"]}, '
    f'load {fmt_load(load_start)}',
    flush=True,
  )
  started = time.time()
  for s in sizes:  # results are written after every size, so a stopped run keeps what it measured
    rows.append(
      bench_size(
        s,
        repeats=args.repeats,
        session_repeats=args.session_repeats or args.repeats,
        warmup=args.warmup,
        clicks=args.clicks,
        unroll=unroll,
        phases=phases,
        session_warmup=args.warmup if args.session_warmup is None else args.session_warmup,
      )
    )
    mach['load_end'] = os.getloadavg()
    runs[-1].update(load_end=mach['load_end'], wall_s=time.time() - started)
    table = markdown(rows, mach, len(runs))
    with open(args.out, 'w') as f:
      json.dump(
        {'machine': mach, 'runs': runs, 'paper_reference_s': PAPER, 'rows': rows}, f, indent=2
      )
    if args.md:
      with open(args.md, 'w') as f:
        f.write(table)
  print(table)
  print(f'wrote {args.out}' + (f' and {args.md}' if args.md else ''))


if __name__ == '__main__':
  main()
