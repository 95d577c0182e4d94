"""Independent online streams as ONE vmapped session: images per second for S = 1, 8, 64 streams.

DESIGN.md 3: independent streams (seeds, learning rates, target datasets) are a ``vmap`` axis. This times
``session.make_session(model, spec, rules.make('pi_mi'), stream_axes=(0, None, None, 0))``: S adaptation
states (parameters + Adam), one image, S click keys; every stream runs the whole image (T clicks with the
simulated user, the MI updates, the PI update) on its own weights. For each S: the first call (compile +
run), ``--warmup`` untimed calls, then ``--repeats`` timed calls ended by ``jax.block_until_ready``. The
states are threaded from call to call (each timed call is a real update). Reported: images per second over all streams
(S / median), seconds per image per stream, the speed-up over S = 1 and its efficiency (speed-up / S:
1.0 = linear, below it the device is saturated or memory-bound), and the device's peak memory in use
(GPU/TPU: ``peak_bytes_in_use``, a running maximum over the process; CPU: the peak RSS rise).

Model, image and method as in ``bench_interactive.py`` (sizes of ``common.SIZES``; the click U-Net with
random weights, method pi_mi, T = ``--clicks``).

  python benchmarks/bench_streams.py --sizes tiny --streams 1,2 --clicks 2 --repeats 1   # CPU, 2 compiles: minutes
  python benchmarks/bench_streams.py --sizes brain --streams 1,8,64 \\
      --out benchmarks/results/streams_h200.json --md benchmarks/results/streams_h200.md
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks import common as bc  # noqa: E402
from benchmarks.bench_interactive import synthetic_case  # noqa: E402
from yiplearn.interactive import rules  # noqa: E402
from yiplearn.interactive import session as session_lib  # noqa: E402
from yiplearn.interactive.spec import SessionSpec  # noqa: E402
from yiplearn.models.unet import UNet  # noqa: E402


def parse_streams(text: str) -> list[int]:
  try:
    streams = [int(s) for s in text.split(',') if s.strip()]
  except ValueError:
    streams = []
  if not streams or min(streams) < 1:
    raise ValueError(f'--streams: got {text!r}, expected comma-separated positive integers')
  return streams


def bench_size(name: str, streams: list[int], *, clicks: int, warmup: int, repeats: int):
  """Yields one row per S (the caller writes the results after each: a stopped run keeps them)."""
  size, channels, classes, widths, bottleneck, lr = bc.SIZES[name]
  model = UNet(num_classes=classes, widths=widths, bottleneck=bottleneck, norm='instance')
  spec = SessionSpec(num_classes=classes, num_clicks=clicks).validate()
  rule, tx = rules.make('pi_mi'), rules.make_optimizer(lr)
  params = jax.jit(model.init)(jax.random.key(0), jnp.zeros((1, 32, 32, channels + classes)))
  image, gt = synthetic_case(size, channels, classes)
  sess = session_lib.make_session(model, spec, rule, tx=tx, stream_axes=(0, None, None, 0))
  fold = jax.jit(jax.vmap(jax.random.fold_in, in_axes=(0, None)))
  rows = []
  for s in streams:
    one = rules.init_state(rule, params, tx)
    state = jax.tree.map(lambda a: jnp.stack([a] * s), one)  # S independent copies
    del one
    keys = jax.random.split(jax.random.key(1), s)
    bc.reset_peak_rss()
    rss0 = bc.rss_mb()
    t0 = time.perf_counter()
    state, out = jax.block_until_ready(sess(state, image, gt, fold(keys, 0)))
    compile_s = time.perf_counter() - t0
    for i in range(warmup):
      state, out = jax.block_until_ready(sess(state, image, gt, fold(keys, 1 + i)))
    times = []
    for i in range(repeats):
      k = fold(keys, 1 + warmup + i)
      t0 = time.perf_counter()
      state, out = jax.block_until_ready(sess(state, image, gt, k))
      times.append(time.perf_counter() - t0)
    med = float(np.median(times))
    mem = bc.device_memory()
    row = {
      'size': name,
      'hw': size,
      'streams': s,
      'clicks_T': clicks,
      'compile_s': compile_s,
      'times_s': times,
      'median_s': med,
      'images_per_s': s / med,
      's_per_image_per_stream': med / s,
      'final_dice_mean': float(np.mean(np.asarray(out.dice)[:, -1, 1:])),
      'skipped_updates': int(np.sum(np.asarray(state.skipped))),
      'device_peak_mib': None if mem is None else mem.get('peak_bytes_in_use', 0) / 2**20,
      'rss_rise_mib': None if mem is not None else bc.peak_rss_mb() - (rss0 or 0.0),
      'load_avg': bc.load_avg(),
    }
    base = next((r for r in rows if r['streams'] == 1), row if s == 1 else None)
    if base is not None:
      row['speedup'] = row['images_per_s'] / base['images_per_s']
      row['efficiency'] = row['speedup'] / s
    rows.append(row)
    print(
      f'  {name} S={s}: compile {compile_s:.1f} s, median {med:.4f} s per call, '
      f'{row["images_per_s"]:.2f} images/s'
      + (f', efficiency {row["efficiency"]:.2f}' if base else ''),
      flush=True,
    )
    del state, out
    yield row


COLS = (
  ('size', 'size'),
  ('hw', 'H = W'),
  ('streams', 'streams S'),
  ('compile_s', 'compile s'),
  ('median_s', 'median s / call'),
  ('images_per_s', 'images / s'),
  ('s_per_image_per_stream', 's / image / stream'),
  ('speedup', 'speed-up vs S = 1'),
  ('efficiency', 'efficiency'),
  ('device_peak_mib', 'device peak MiB'),
  ('rss_rise_mib', 'RSS rise MiB'),
)


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument('--sizes', default='small', help=f'comma-separated subset of {sorted(bc.SIZES)}')
  p.add_argument('--streams', default='1,8,64', help='comma-separated stream counts S')
  p.add_argument('--clicks', type=int, default=10, help='T, clicks per image')
  p.add_argument('--warmup', type=int, default=1)
  p.add_argument('--repeats', type=int, default=3)
  p.add_argument('--out', default='bench_streams.json')
  p.add_argument('--md', default=None, help='also write the Markdown table here')
  args = p.parse_args()
  sizes = bc.parse_sizes(args.sizes)
  streams = parse_streams(args.streams)
  if args.repeats < 1 or args.warmup < 0 or args.clicks < 2:
    raise ValueError(
      f'--repeats/--warmup/--clicks: got {args.repeats}/{args.warmup}/{args.clicks}, '
      'expected >= 1 / >= 0 / >= 2'
    )
  warnings.filterwarnings('ignore', message='Some donated buffers were not usable')
  mach = bc.machine()
  mach['load_start'] = bc.load_avg()
  argv = [os.path.relpath(os.path.abspath(__file__), bc.REPO)] + sys.argv[1:]
  print(bc.describe(mach), flush=True)
  rows = []
  for name in sizes:
    kw = dict(clicks=args.clicks, warmup=args.warmup, repeats=args.repeats)
    for row in bench_size(name, streams, **kw):  # written after every S: a stopped run keeps them
      rows.append(row)
      mach['load_end'] = bc.load_avg()
      table = bc.markdown_table(rows, COLS) + '\n' + bc.describe(mach) + '\n'
      bc.save_results(args.out, args.md, {'machine': mach, 'argv': argv, 'rows': rows}, table)
  bc.print_results(table, args.out, args.md)


if __name__ == '__main__':
  main()
