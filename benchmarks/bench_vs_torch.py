"""yiplearn against a PyTorch eager reference: Mid-Interaction step and Post-Interaction update, side by side.

For each size the same U-Net (`benchmarks/torch_reference.py` mirrors `yiplearn.models.unet.UNet`), with the
flax parameters copied into the torch model, the same inputs and the same Adam hyper-parameters:

* first a check that both compute the same MI loss (relative difference printed, must be < 1e-4) so the two
  sides time the same computation;
* MI step: the per-click tool's MI click (`yiplearn.interactive.tool`: `propose` = pseudo-label forward,
  `adapt` = the MI update through the displayed forward pass's VJP + Adam step, then the adapted prediction
  shown with its VJP; state donated) vs `Adapter.mi_step` (no-grad pseudo-label forward, forward + backward,
  Adam step; it shows no prediction);
* PI update: the tool's `finish` (the `pi` rule's end-of-image hook, jitted) vs `Adapter.pi_step` (two
  forward + backward + Adam steps, stage-2 clicks from scipy connected components);
* the calls alternate (yiplearn, torch, yiplearn, torch, ...) so that both see the same machine load; median
  and min of `--repeats` calls after `--warmup` untimed ones; ratio = yiplearn / torch (below 1: yiplearn faster);
* achieved FLOP/s: the U-Net's convolution FLOPs (2 H W Cin Cout k^2 per conv, forward F; MI = 4 F: pseudo
  forward, forward, backward = 2 F; PI = 6 F) over the median time, against the machine's matmul peak measured
  in the same run (jnp.dot 2048^2 f32 for yiplearn, torch.mm for torch).

Run (PyTorch for benchmarks only: `pip install -r benchmarks/requirements.txt`):
  python benchmarks/bench_vs_torch.py --sizes small,brain --repeats 7 --out benchmarks/results/vs_torch_cpu.json \
      --md benchmarks/results/vs_torch_cpu.md
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from bench_interactive import synthetic_case  # noqa: E402
from common import SIZES  # noqa: E402

from yiplearn import clicks as clicks_lib  # noqa: E402
from yiplearn.interactive import rules, step  # noqa: E402
from yiplearn.interactive.spec import Loss, SessionSpec  # noqa: E402
from yiplearn.interactive.tool import make_tool  # noqa: E402
from yiplearn.models.unet import UNet  # noqa: E402

PAPER_GPU = {'mi': 0.05, 'pi': 0.09}  # s per update, A5000 (the paper)


def unet_forward_flops(hw: int, cin: int, classes: int, widths, bottleneck: int) -> float:
  """Multiply-add FLOPs (2 per MAC) of the U-Net's convolutions for one (hw x hw) image."""
  flops, c, s = 0.0, cin, hw
  conv = lambda s, ci, co, k: 2.0 * s * s * ci * co * k * k
  for w in widths:
    flops += conv(s, c, w, 3) + conv(s, w, w, 3)
    c, s = w, s // 2
  flops += conv(s, c, bottleneck, 3) + conv(s, bottleneck, bottleneck, 3)
  c = bottleneck
  for w in reversed(widths):
    s *= 2
    flops += 2.0 * s * s * c * w  # 2x2 stride-2 transposed conv: one input pixel per output pixel
    flops += conv(s, 2 * w, w, 3) + conv(s, w, w, 3)
    c = w
  return flops + conv(s, c, classes, 1)


def torch_matmul_peak(n: int = 2048, repeats: int = 5, device: str = 'cpu') -> dict:
  import torch  # pylint: disable=g-import-not-at-top

  sync = torch.cuda.synchronize if device.startswith('cuda') else (lambda: None)
  a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
  torch.mm(a, b)
  sync()
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    torch.mm(a, b)
    sync()
    times.append(time.perf_counter() - t0)
  return {
    'n': n,
    'median_s': float(np.median(times)),
    'flops_per_s': 2.0 * n**3 / float(np.median(times)),
  }


def bench_size(
  name: str, repeats: int, warmup: int, device: str = 'cpu', loss_rtol: float = 1e-4
) -> dict:
  import torch  # pylint: disable=g-import-not-at-top
  import torch_reference as tr  # pylint: disable=g-import-not-at-top

  size, channels, classes, widths, bottleneck, lr = SIZES[name]
  model = UNet(num_classes=classes, widths=widths, bottleneck=bottleneck, norm='instance')
  spec, rule, loss = SessionSpec(num_classes=classes, num_clicks=10), rules.make('pi_mi'), Loss()
  tx = rules.make_optimizer(lr)
  tool = make_tool(model, spec, rule, tx=tx)
  params = jax.jit(model.init)(jax.random.key(0), jnp.zeros((1, 32, 32, channels + classes)))
  image, gt = synthetic_case(size, channels, classes)
  c1 = (int(0.45 * size), int(0.55 * size))
  c2 = (size // 10, size // 10)
  # The tool's views: click 1 shown (its input is the MI step's x_prev), click 2 proposed (x_cur).
  state = tool.init(params)
  state, view1 = tool.start(state, np.asarray(image), c1, classes - 1)
  x_prev = view1.x
  x_cur = tool.propose(state, view1, c2, 0)[0].x
  to_t = lambda x: torch.from_numpy(
    np.ascontiguousarray(np.asarray(x).transpose(2, 0, 1)[None])
  ).to(device)
  xp_t, xc_t = to_t(x_prev), to_t(x_cur)

  tmodel = tr.UNet(channels + classes, classes, widths, bottleneck)
  tr.load_flax_params(tmodel, params)
  tmodel.to(device)
  adapter = tr.Adapter(
    tmodel, classes, lr, beta=loss.beta, ccg_sigma=loss.ccg_sigma, pi_clicks=spec.num_clicks
  )
  # MI click of the tool (production): propose (pseudo-label forward) + adapt (the MI update through the
  # displayed forward pass's VJP, then the adapted prediction shown).
  propose, adapt, show = tool.jitted['propose'], tool.jitted['adapt'], tool.jitted['show']
  c2_j, zero = jnp.asarray(c2, jnp.int32), jnp.int32(0)

  def mi(state):
    view2, _ = propose(state, view1, c2_j, zero)
    state, loss = adapt(state, view2)
    state, view3 = show(state, view2._replace(pullback=None))
    return state, loss, view3.pred

  t0 = time.perf_counter()
  state, loss_j, _ = jax.block_until_ready(mi(state))
  mi_compile = time.perf_counter() - t0
  loss_t = adapter.mi_step(xp_t, xc_t, c2, 0)
  rel = abs(float(loss_j) - loss_t) / max(abs(loss_t), 1e-12)
  print(
    f'  {name}: same first MI loss: yiplearn {float(loss_j):.6f}, torch {loss_t:.6f} (rel diff {rel:.1e})',
    flush=True,
  )
  if rel > loss_rtol:
    raise RuntimeError(
      f'{name}: the two implementations disagree on the MI loss (rel diff {rel:.2e} > {loss_rtol:g})'
    )

  img_np, gt_np = np.asarray(image), np.asarray(gt)
  # PI of the tool (production): finish on click 1's view with P_final = the ground truth.
  finish, accepted = tool.jitted['finish'], view1._replace(pred=jnp.asarray(gt, jnp.int32))
  pi = lambda s, k: finish(s, accepted._replace(key=k))
  t0 = time.perf_counter()
  state = jax.block_until_ready(pi(state, jax.random.key(0)))
  pi_compile = time.perf_counter() - t0
  adapter.pi_step(img_np, c1, classes - 1, gt_np)

  holder = {'state': state}

  def j_mi():
    holder['state'] = jax.block_until_ready(mi(holder['state'])[0])

  def j_pi(i):
    holder['state'] = jax.block_until_ready(pi(holder['state'], jax.random.key(i)))

  times = {k: [] for k in ('mi_yiplearn', 'mi_torch', 'pi_yiplearn', 'pi_torch')}
  for i in range(warmup + repeats):
    for key, fn in (
      ('mi_yiplearn', j_mi),
      ('mi_torch', lambda: adapter.mi_step(xp_t, xc_t, c2, 0)),
      ('pi_yiplearn', lambda: j_pi(i)),
      ('pi_torch', lambda: adapter.pi_step(img_np, c1, classes - 1, gt_np)),
    ):
      t0 = time.perf_counter()
      fn()
      if i >= warmup:
        times[key].append(time.perf_counter() - t0)
  fwd = unet_forward_flops(size, channels + classes, classes, widths, bottleneck)
  row = {
    'size': name,
    'hw': size,
    'in_channels': channels + classes,
    'classes': classes,
    'widths': list(widths),
    'bottleneck': bottleneck,
    'forward_gflop': fwd / 1e9,
    'mi_loss_rel_diff': rel,
    'mi_compile_s': mi_compile,
    'pi_compile_s': pi_compile,
    'times_s': times,
  }
  for key, ts in times.items():
    row[key] = {'median_s': float(np.median(ts)), 'min_s': float(np.min(ts)), 'n': len(ts)}
    row[key]['gflops'] = (4 if key.startswith('mi') else 6) * fwd / 1e9 / row[key]['median_s']
  for phase in ('mi', 'pi'):
    row[f'{phase}_ratio'] = row[f'{phase}_yiplearn']['median_s'] / row[f'{phase}_torch']['median_s']
  row['load_after'] = os.getloadavg()
  print(
    f'  {name}: MI {row["mi_yiplearn"]["median_s"]:.4f} s vs torch {row["mi_torch"]["median_s"]:.4f} s '
    f'(ratio {row["mi_ratio"]:.2f}); PI {row["pi_yiplearn"]["median_s"]:.4f} s vs torch '
    f'{row["pi_torch"]["median_s"]:.4f} s (ratio {row["pi_ratio"]:.2f})',
    flush=True,
  )
  return row


def grad_check(name: str = 'small') -> list[dict]:
  """Per-parameter gradients of the MI loss: yiplearn float32 and torch float32 against torch float64, the
  maximum absolute difference relative to the largest float64 gradient of that parameter."""
  import torch  # pylint: disable=g-import-not-at-top
  import torch_reference as tr  # pylint: disable=g-import-not-at-top

  size, channels, classes, widths, bottleneck, lr = SIZES[name]
  model = UNet(num_classes=classes, widths=widths, bottleneck=bottleneck)
  spec, loss = SessionSpec(num_classes=classes, num_clicks=4), Loss()
  params = jax.jit(model.init)(jax.random.key(0), jnp.zeros((1, 32, 32, channels + classes)))
  image = jnp.asarray(
    np.random.default_rng(1).normal(size=(size, size, channels)), jnp.float32
  )  # pure noise
  cl = clicks_lib.from_lists(
    [(size // 2 - 2, size // 2 - 2), (5, 5)],
    [classes - 1, 0],
    4,
    shape=(size, size),
    num_classes=classes,
  )
  cur = clicks_lib.select(cl, jnp.arange(4) <= 1)
  x_prev, x_cur = (
    step.build_input(spec, image, clicks_lib.select(cl, jnp.arange(4) < 1)),
    step.build_input(spec, image, cur),
  )
  pseudo = jnp.argmax(step.predict(model.apply, params, x_cur), -1)
  newest = clicks_lib.select(cl, jnp.arange(4) == 1)
  g_jax = jax.grad(
    lambda p: rules.objective(loss, step.predict(model.apply, p, x_prev), pseudo, newest, classes)
  )(params)
  as_torch = tr.UNet(channels + classes, classes, widths, bottleneck)
  tr.load_flax_params(as_torch, g_jax)  # the flax gradient tree in torch's layout
  xt = torch.from_numpy(np.ascontiguousarray(np.asarray(x_prev).transpose(2, 0, 1)[None]))
  target = torch.from_numpy(np.asarray(pseudo, np.int64)[None])
  grads = {}
  for dtype in (torch.float32, torch.float64):
    tm = tr.UNet(channels + classes, classes, widths, bottleneck)
    tr.load_flax_params(tm, params)
    tm = tm.to(dtype)
    logits = tm(xt.to(dtype))
    value = tr.dice_focal(logits, target, classes) + loss.beta * tr.ccg_loss(
      logits, target, np.asarray([(5, 5)]), np.asarray([0]), loss.ccg_sigma
    )
    value.backward()
    grads[dtype] = {n: p.grad.double() for n, p in tm.named_parameters()}
  rows = []
  for (n, g64), gj in zip(grads[torch.float64].items(), as_torch.parameters()):
    scale = float(g64.abs().max()) or 1.0
    rows.append(
      {
        'param': n,
        'yiplearn_f32': float((gj.detach().double() - g64).abs().max()) / scale,
        'torch_f32': float((grads[torch.float32][n] - g64).abs().max()) / scale,
      }
    )
  return rows


def markdown(rows: list[dict], mach: dict, peaks: dict) -> str:
  lines = [
    '| size | phase | yiplearn median s | torch median s | ratio (yiplearn / torch) | yiplearn GFLOP/s '
    '(% of jnp.dot peak) | torch GFLOP/s (% of torch.mm peak) | paper A5000 s |',
    '|---|---|---|---|---|---|---|---|',
  ]
  jp, tp = peaks['jax']['flops_per_s'] / 1e9, peaks['torch']['flops_per_s'] / 1e9
  for r in rows:
    for phase, label in (('mi', 'MI step'), ('pi', 'PI update')):
      j, t = r[f'{phase}_yiplearn'], r[f'{phase}_torch']
      lines.append(
        f'| {r["size"]} {r["hw"]}x{r["hw"]} | {label} | {j["median_s"]:.4f} | {t["median_s"]:.4f} | '
        f'{r[f"{phase}_ratio"]:.2f} | {j["gflops"]:.1f} ({100 * j["gflops"] / jp:.0f}%) | '
        f'{t["gflops"]:.1f} ({100 * t["gflops"] / tp:.0f}%) | {PAPER_GPU[phase]} |'
      )
  lines.append('')
  lines.append(
    f'Matmul peak (2048^2 f32, median): jnp.dot {jp:.1f} GFLOP/s, torch.mm {tp:.1f} GFLOP/s; torch on '
    f'{mach.get("torch_device", "cpu")}, precision {mach.get("precision", {}).get("flag", "default")}. '
    f'{common.describe(mach)}'
  )
  return '\n'.join(lines) + '\n'


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument('--sizes', default='small', help=f'comma-separated subset of {sorted(SIZES)}')
  p.add_argument('--repeats', type=int, default=5)
  p.add_argument('--warmup', type=int, default=1)
  p.add_argument(
    '--threads', type=int, default=0, help='torch intra-op threads (0: the usable CPUs)'
  )
  p.add_argument(
    '--torch_device',
    default='auto',
    help="torch's device: cpu, cuda, or auto (cuda when available)",
  )
  p.add_argument(
    '--precision',
    choices=('default', 'highest'),
    default='default',
    help="float32 convolutions and matmuls: default = each library's (on NVIDIA GPUs TF32 in both), "
    'highest = true float32 in both (jax_default_matmul_precision, torch allow_tf32 off)',
  )
  p.add_argument(
    '--loss_rtol', type=float, default=1e-4, help='largest relative MI loss difference accepted'
  )
  p.add_argument('--out', default='bench_vs_torch.json')
  p.add_argument('--md', default=None)
  p.add_argument(
    '--check_grads',
    action='store_true',
    help='only compare float32 gradients of both against float64 torch at the small size',
  )
  args = p.parse_args()
  if args.check_grads:
    print('| parameter | yiplearn f32 vs f64 | torch f32 vs f64 |\n|---|---|---|')
    for r in grad_check():
      print(f'| {r["param"]} | {r["yiplearn_f32"]:.1e} | {r["torch_f32"]:.1e} |')
    return
  sizes = common.parse_sizes(args.sizes)
  if args.repeats < 1 or args.warmup < 0:
    raise ValueError(f'--repeats/--warmup: got {args.repeats}/{args.warmup}, expected >= 1 / >= 0')
  import torch  # pylint: disable=g-import-not-at-top

  torch.set_num_threads(args.threads or len(os.sched_getaffinity(0)))
  dev = args.torch_device
  if dev == 'auto':
    dev = 'cuda' if torch.cuda.is_available() else 'cpu'
  if args.precision == 'highest':
    jax.config.update('jax_default_matmul_precision', 'highest')
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
  warnings.filterwarnings('ignore', message='Some donated buffers were not usable')
  mach = common.machine()
  mach['torch'] = torch.__version__
  mach['torch_threads'] = torch.get_num_threads()
  mach['torch_device'] = torch.cuda.get_device_name(0) if dev.startswith('cuda') else dev
  mach['precision'] = {
    'flag': args.precision,
    'jax_default_matmul_precision': jax.config.jax_default_matmul_precision,
    'torch_cudnn_allow_tf32': torch.backends.cudnn.allow_tf32,
    'torch_matmul_allow_tf32': torch.backends.cuda.matmul.allow_tf32,
  }
  peaks = {'jax': common.measure_matmul_peak(), 'torch': torch_matmul_peak(device=dev)}
  rows = []
  for s in sizes:
    rows.append(bench_size(s, args.repeats, args.warmup, dev, args.loss_rtol))
    peaks['torch_end'] = torch_matmul_peak(device=dev)
    peaks['jax_end'] = common.measure_matmul_peak()
    mach['load_end'] = common.load_avg()
    table = markdown(rows, mach, peaks)
    common.save_results(
      args.out,
      args.md,
      {
        'machine': mach,
        'argv': sys.argv,
        'matmul_peaks': peaks,
        'rows': rows,
        'paper_gpu_s': PAPER_GPU,
      },
      table,
    )
  common.print_results(table, args.out, args.md)


if __name__ == '__main__':
  main()
