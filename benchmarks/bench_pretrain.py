"""Click pre-training throughput: images per second of the jitted pre-training step (issue 5).

Times `yiplearn.interactive.pretraining.make_train_step` -- per sample the iterative click simulation (a
ground-truth click, a prediction from it, 0..9 more clicks in its error components), then DiceFocal +
beta CCG over the clicks, backward and the guarded Adam step -- with the configs' model, clicks, loss and
batch size (`configs/interactive_lgg.py:stage=pretrain`, the LGG pre-training):

  small  64 x 64, widths (8, 16, 32, 64) + 128 (the config's default model), batch from the config
  brain  256 x 256, the paper's widths (12, 72, 144, 288) + 576 (`paper_model`), batch from the config
  fundus 512 x 512, the paper's widths, 3 image channels and 3 classes (the brain config re-shaped)

Compilation is timed apart (ahead of time: trace + lower, compile), then `--warmup` untimed steps, then
`--steps` timed steps, each ended by `jax.block_until_ready` (as the training loop syncs on the step
counter): median and p90 seconds per step, images/s = batch / median step time. The batch is random
images with a disk lesion each, put on the device(s) every step (the host-to-device copy is timed, the
data pipeline -- loading, augmentation -- is not). The XLA cost analysis's FLOP count of the compiled
step (where the backend reports one; a loop body, e.g. of the connected components, counts once) against
the measured f32 matmul peak gives the achieved fraction: a rough figure, convolutions dominate it.

Devices: when `make_train_step` takes a `mesh` (the data-parallel pre-training of `yiplearn.parallel`),
the batch is split over `--devices` devices (default: all); otherwise one device is used.

Run:
  python benchmarks/bench_pretrain.py --sizes small --steps 3                         # ~1 min
  python benchmarks/bench_pretrain.py --sizes small,brain --steps 3 \\
      --out benchmarks/results/pretrain_cpu.json --md benchmarks/results/pretrain_cpu.md
"""

from __future__ import annotations

import argparse
import inspect
import os
import sys
import time
import warnings

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks import common as bc  # noqa: E402
from configs import interactive_lgg  # noqa: E402
from yiplearn.experiments import interactive_setup, seg_common  # noqa: E402
from yiplearn.interactive import pretraining  # noqa: E402


def size_config(size: str, batch: int | None):
  """(config, image channels) of the LGG pre-training at `size`, batch from the config unless given."""
  hw, channels, classes, widths, bottleneck, _ = bc.SIZES[size]
  paper = widths == bc.PAPER_WIDTHS
  config = interactive_lgg.get_config(
    f'stage=pretrain,size={hw}' + (',paper_model' if paper else '')
  )
  config.num_classes = classes
  config.model.widths, config.model.bottleneck = tuple(widths), int(bottleneck)
  if batch:
    config.optim.batch_size = int(batch)
  return config, channels


def synthetic_batch(rng: np.random.Generator, batch: int, hw: int, channels: int, classes: int):
  """Images (B, H, W, C) float32 (noise + a brighter disk) and masks (B, H, W) int32 (the disk: the last
  class; with 3 classes an inner disk of class 2 inside a ring of class 1)."""
  rr, cc = np.mgrid[:hw, :hw]
  images = np.empty((batch, hw, hw, channels), np.float32)
  masks = np.empty((batch, hw, hw), np.int32)
  for b in range(batch):
    cy, cx = rng.uniform(0.3, 0.7, 2) * hw
    r = np.hypot(rr - cy, cc - cx)
    rad = rng.uniform(0.08, 0.2) * hw
    m = (r < rad).astype(np.int32)
    if classes == 3:
      m = np.where(r < rad / 2, 2, m)
    masks[b] = m
    images[b] = 0.5 * (m > 0)[..., None] + rng.normal(0.0, 0.3, (hw, hw, channels))
  return images, masks


def bench_size(
  size: str, *, batch: int | None, steps: int, warmup: int, devices: int | None, peak: dict | None
) -> dict:
  config, channels = size_config(size, batch)
  hw, _, classes = bc.SIZES[size][:3]
  bsz = int(config.optim.batch_size)
  load_before = bc.load_avg()
  t0 = time.perf_counter()
  model = seg_common.make_unet(config.model, classes)
  spec = interactive_setup.spec_from_config(config)
  loss = interactive_setup.loss_from_config(config)
  o = config.optim
  tx = pretraining.make_optimizer(float(o.lr), int(o.decay_every), float(o.decay_rate))
  key = jax.random.PRNGKey(0)
  state = jax.block_until_ready(
    pretraining.init_state(model, spec, channels, hw, tx, jax.random.fold_in(key, 0))
  )
  build_s = time.perf_counter() - t0
  n_params = int(sum(a.size for a in jax.tree_util.tree_leaves(state.params)))

  mesh_supported = 'mesh' in inspect.signature(pretraining.make_train_step).parameters
  mesh = None
  if mesh_supported:  # the data-parallel step of the experiment (a 1-device mesh on one device)
    from yiplearn import parallel  # pylint: disable=g-import-not-at-top

    mesh = parallel.make_mesh(devices if devices else -1)
    parallel.check_divisible('--batch (optim.batch_size)', bsz, mesh)
    rep, bsh = parallel.replicated(mesh), parallel.batch_sharding(mesh)
    state, key = jax.device_put((state, key), rep)
    put = lambda im, m: (jax.device_put(im, bsh), jax.device_put(m, bsh))  # noqa: E731
    step_fn = pretraining.make_train_step(model.apply, tx, spec, loss, mesh=mesh)
  else:
    put = lambda im, m: (jax.device_put(im), jax.device_put(m))  # noqa: E731
    step_fn = pretraining.make_train_step(model.apply, tx, spec, loss)
  n_dev = 1 if mesh is None else int(mesh.devices.size)

  rng = np.random.default_rng(0)
  batches = [synthetic_batch(rng, bsz, hw, channels, classes) for _ in range(2)]
  images, masks = put(*batches[0])
  t0 = time.perf_counter()
  lowered = step_fn.lower(state, images, masks, key)
  t1 = time.perf_counter()
  compiled = lowered.compile()
  t2 = time.perf_counter()
  flops = None
  try:
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    # The partitioned program's count is per device: the step's total is that times the devices.
    flops = float(cost['flops']) * n_dev if cost and cost.get('flops', -1) > 0 else None
  except Exception:  # pylint: disable=broad-except
    pass

  times = []
  for i in range(warmup + steps):
    im, m = batches[i % 2]
    t = time.perf_counter()
    images, masks = put(im, m)
    state, metrics = jax.block_until_ready(compiled(state, images, masks, key))
    if i >= warmup:
      times.append(time.perf_counter() - t)
  med = float(np.median(times))
  row = {
    'size': size,
    'hw': [hw, hw],
    'image_channels': channels,
    'classes': classes,
    'widths': list(config.model.widths),
    'bottleneck': int(config.model.bottleneck),
    'params': n_params,
    'batch': bsz,
    'max_clicks': int(config.clicks.max_clicks),
    'devices': n_dev,
    'mesh_supported': mesh_supported,
    'build_s': build_s,
    'trace_s': t1 - t0,
    'compile_s': t2 - t1,
    'warmup': warmup,
    'times_s': times,
    'n': steps,
    'median_step_s': med,
    'p90_step_s': float(np.percentile(times, 90)),
    'images_per_s': bsz / med,
    'images_per_s_mean': bsz * len(times) / sum(times),
    'flop_per_step': flops,
    'achieved_flops_per_s': None if flops is None else flops / med,
    'peak_fraction': None
    if (flops is None or not peak)
    else flops / med / peak['flops_per_s'] / n_dev,
    'final_loss': float(metrics['loss']),
    'skipped': int(state.skipped),
    'load_before': load_before,
    'load_after': bc.load_avg(),
  }
  print(
    f'  {size}: batch {bsz} on {n_dev} device(s), compile {row["compile_s"]:.1f} s, '
    f'{med:.3f} s/step, {row["images_per_s"]:.2f} images/s (load {row["load_after"][0]:.2f})',
    flush=True,
  )
  return row


COLS = [
  ('size', 'size'),
  ('hw_s', 'H x W'),
  ('params', 'params'),
  ('batch', 'batch'),
  ('devices', 'devices'),
  ('trace_s', 'trace s'),
  ('compile_s', 'compile s'),
  ('median_step_s', 'median s / step'),
  ('p90_step_s', 'p90 s / step'),
  ('n', 'n'),
  ('images_per_s', 'images / s'),
  ('gflop_per_step', 'GFLOP / step (XLA)'),
  ('peak_pct', '% of matmul peak'),
]


def markdown(rows: list[dict], mach: dict, peak: dict | None, argv: list[str]) -> str:
  view = [
    dict(
      r,
      hw_s=f'{r["hw"][0]}x{r["hw"][1]}',
      gflop_per_step=None if r['flop_per_step'] is None else r['flop_per_step'] / 1e9,
      peak_pct=None if r['peak_fraction'] is None else 100 * r['peak_fraction'],
    )
    for r in rows
  ]
  out = [
    '# Click pre-training throughput',
    '',
    f'Command: `python {" ".join(argv)}`',
    '',
    bc.markdown_table(view, COLS, digits=4),
    bc.describe(mach)
    + (
      f' Measured f32 matmul peak: {peak["flops_per_s"] / 1e9:.1f} GFLOP/s per device (n={peak["n"]}, '
      'median).'
      if peak
      else ''
    ),
    f'Load average at start {bc.fmt_load(mach["load_start"])}, at end {bc.fmt_load(mach["load_end"])}.',
  ]
  return '\n'.join(out) + '\n'


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument('--sizes', default='small', help=f'comma-separated subset of {sorted(bc.SIZES)}')
  p.add_argument('--steps', type=int, default=5, help='timed steps per size')
  p.add_argument('--warmup', type=int, default=1, help='untimed steps after compilation')
  p.add_argument(
    '--batch', type=int, default=None, help="global batch size (default: the config's)"
  )
  p.add_argument(
    '--devices',
    type=int,
    default=None,
    help='devices of the data-parallel mesh (default all; '
    'used when pretraining.make_train_step takes a mesh)',
  )
  p.add_argument('--no_peak', action='store_true', help='skip the matmul peak measurement')
  p.add_argument('--out', default='bench_pretrain.json')
  p.add_argument('--md', default=None, help='also write the Markdown table here')
  args = p.parse_args()
  sizes = bc.parse_sizes(args.sizes)
  if args.steps < 1 or args.warmup < 0 or (args.batch is not None and args.batch < 1):
    raise ValueError(
      f'--steps/--warmup/--batch: got {args.steps}/{args.warmup}/{args.batch}, '
      'expected >= 1 / >= 0 / >= 1'
    )
  if args.devices is not None and not 1 <= args.devices <= jax.device_count():
    raise ValueError(
      f'--devices: got {args.devices}, expected 1..{jax.device_count()} (the devices available)'
    )
  warnings.filterwarnings('ignore', message='Some donated buffers were not usable')
  mach = bc.machine()
  mach['load_start'] = bc.load_avg()
  print(
    f'machine: {mach["cpu_model"]}, {mach["cpus_usable"]} CPUs, jax {mach["jax"]} {mach["devices"]}, '
    f'load {bc.fmt_load(mach["load_start"])}',
    flush=True,
  )
  peak = None if args.no_peak else bc.measure_matmul_peak(2048, repeats=5)
  argv = [os.path.relpath(os.path.abspath(__file__), bc.REPO)] + sys.argv[1:]
  rows = []
  for size in sizes:  # written after every size, so a stopped run keeps what it measured
    rows.append(
      bench_size(
        size,
        batch=args.batch,
        steps=args.steps,
        warmup=args.warmup,
        devices=args.devices,
        peak=peak,
      )
    )
    mach['load_end'] = bc.load_avg()
    table = markdown(rows, mach, peak, argv)
    bc.save_results(
      args.out, args.md, {'machine': mach, 'argv': argv, 'matmul_peak': peak, 'rows': rows}, table
    )
  bc.print_results(table, args.out, args.md)


if __name__ == '__main__':
  main()
