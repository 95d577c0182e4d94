"""Ablation of the Mid-Interaction step's speed: U-Net formulations side by side with PyTorch eager.

Times one Mid-Interaction click of the per-click tool (`propose` + `adapt`, state donated) at the brain size (256 x 256, 1 + 2 input channels, paper
widths) for U-Net variants that compute the same function, alternating with the PyTorch eager reference
(`torch_reference.Adapter.mi_step`) so that all see the same load:

  window-flax     flax `nn.max_pool` (reduce_window) and `nn.ConvTranspose` (conv over a zero-dilated input):
                  the straightforward flax U-Net
  reshape-einsum  2x2 max-pool as reshape + max, transposed conv as one matmul (yiplearn's U-Net layers)
  lib-xla         `yiplearn.models.unet.UNet(conv_grads='xla')` (= the library default outside sessions)
  lib-matmul      `UNet(conv_grads='matmul')`: 3x3 convolutions with forward-style gradients (custom VJP)

With `--parts`, instead: the forward pass alone and forward + backward (gradient of a mean-squared output) of
the library U-Net against the torch reference, to see which half of the step holds the time, and the U-Net
without its instance norms (norm='none') for the norms' share.

Run:  python benchmarks/bench_mi_ablation.py --repeats 7 [--size brain] [--variants a,b] [--parts]
Prints median and min seconds per MI step and the ratio of the minima to torch's; results in benchmarks/NOTES.md.
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
import flax.linen as nn  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from yiplearn.interactive import rules  # noqa: E402
from yiplearn.interactive.spec import SessionSpec  # noqa: E402
from yiplearn.interactive.tool import make_tool  # noqa: E402
from yiplearn.models import unet as unet_mod  # noqa: E402

VARIANTS = ('window-flax', 'reshape-einsum', 'lib-xla', 'lib-matmul')


class _Variant(nn.Module):
  """The U-Net with its pooling ('window' | 'reshape') and up-sampling ('flax' | 'einsum') chosen."""

  num_classes: int
  widths: tuple
  bottleneck: int
  pool: str
  up: str

  @nn.compact
  def __call__(self, x):
    skips = []
    for w in self.widths:
      x = unet_mod._Block(w, 'instance', jnp.float32, 'xla')(x, False)  # pylint: disable=protected-access
      skips.append(x)
      x = (
        nn.max_pool(x, (2, 2), strides=(2, 2))
        if self.pool == 'window'
        else unet_mod._max_pool_2x2(x)
      )  # pylint: disable=protected-access
    x = unet_mod._Block(self.bottleneck, 'instance', jnp.float32, 'xla')(x, False)  # pylint: disable=protected-access
    for i, (w, s) in enumerate(zip(reversed(self.widths), reversed(skips))):
      if self.up == 'flax':
        x = nn.ConvTranspose(w, (2, 2), strides=(2, 2), name=f'ConvTranspose_{i}')(x)
      else:
        x = unet_mod._UpConv(w, jnp.float32, name=f'ConvTranspose_{i}')(x)  # pylint: disable=protected-access
      x = unet_mod._Block(w, 'instance', jnp.float32, 'xla')(jnp.concatenate([x, s], -1), False)  # pylint: disable=protected-access
    return nn.Conv(self.num_classes, (1, 1))(x)


def make_model(variant: str, classes: int, widths, bottleneck: int):
  if variant.startswith('lib-'):
    return unet_mod.UNet(
      num_classes=classes, widths=widths, bottleneck=bottleneck, conv_grads=variant[4:]
    )
  pool, up = {'window-flax': ('window', 'flax'), 'reshape-einsum': ('reshape', 'einsum')}[variant]
  return _Variant(classes, tuple(widths), bottleneck, pool, up)


def parts(size: str, repeats: int, torch, tr) -> None:
  hw, channels, classes, widths, bottleneck, _ = common.SIZES[size]
  m = unet_mod.UNet(num_classes=classes, widths=widths, bottleneck=bottleneck)
  x = jnp.asarray(
    np.random.default_rng(0).normal(size=(1, hw, hw, channels + classes)), jnp.float32
  )
  params = jax.jit(m.init)(jax.random.key(0), x[:, :32, :32])
  fwd = jax.jit(m.apply)
  fwd_bwd = jax.jit(jax.grad(lambda p, x: jnp.mean(m.apply(p, x)[..., 1] ** 2)))
  tm = tr.UNet(channels + classes, classes, widths, bottleneck)
  xt = torch.from_numpy(np.ascontiguousarray(np.asarray(x).transpose(0, 3, 1, 2)))

  def t_fwd():
    with torch.no_grad():
      tm(xt)

  def t_fwd_bwd():
    tm.zero_grad()
    (tm(xt)[:, 1] ** 2).mean().backward()

  plain = unet_mod.UNet(num_classes=classes, widths=widths, bottleneck=bottleneck, norm='none')
  p_plain = jax.jit(plain.init)(jax.random.key(0), x[:, :32, :32])
  plain_fwd_bwd = jax.jit(jax.grad(lambda p, x: jnp.mean(plain.apply(p, x)[..., 1] ** 2)))
  calls = {
    'yiplearn forward': lambda: jax.block_until_ready(fwd(params, x)),
    'torch forward': t_fwd,
    'yiplearn forward + backward': lambda: jax.block_until_ready(fwd_bwd(params, x)),
    'torch forward + backward': t_fwd_bwd,
    'yiplearn forward + backward, no instance norm': lambda: jax.block_until_ready(
      plain_fwd_bwd(p_plain, x)
    ),
  }
  for f in calls.values():
    f()
  times = {k: [] for k in calls}
  for _ in range(repeats):
    for k, f in calls.items():
      t0 = time.perf_counter()
      f()
      times[k].append(time.perf_counter() - t0)
  print(f'\n| {size} U-Net | median s | min s |\n|---|---|---|')
  for k, t in times.items():
    print(f'| {k} | {np.median(t):.3f} | {np.min(t):.3f} |')
  print(f'\n{common.describe(common.machine())}')


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument('--size', default='brain')
  p.add_argument('--variants', default=','.join(VARIANTS))
  p.add_argument('--repeats', type=int, default=7)
  p.add_argument('--parts', action='store_true', help='time forward and forward + backward instead')
  args = p.parse_args()
  (size,) = common.parse_sizes(args.size, '--size')
  variants = [v.strip() for v in args.variants.split(',') if v.strip()]
  if not variants or any(v not in VARIANTS for v in variants):
    raise ValueError(
      f'--variants: got {args.variants!r}, expected a comma-separated subset of {VARIANTS}'
    )
  import torch  # pylint: disable=g-import-not-at-top
  import torch_reference as tr  # pylint: disable=g-import-not-at-top

  warnings.filterwarnings('ignore', message='Some donated buffers were not usable')
  torch.set_num_threads(len(os.sched_getaffinity(0)))
  hw, channels, classes, widths, bottleneck, lr = common.SIZES[size]
  spec, tx = SessionSpec(num_classes=classes, num_clicks=4), rules.make_optimizer(lr)
  img = jnp.asarray(np.random.default_rng(1).normal(size=(hw, hw, channels)), jnp.float32)
  p1, p2 = (hw // 2, hw // 2), (5, 5)
  if args.parts:
    return parts(size, args.repeats, torch, tr)
  fns = {}
  for v in variants:
    m = make_model(v, classes, widths, bottleneck)
    params = jax.jit(m.init)(jax.random.key(0), jnp.zeros((1, 32, 32, channels + classes)))
    tool = make_tool(m, spec, rules.make('mi'), tx=tx)
    state, view1 = tool.start(tool.init(params), np.asarray(img), p1, classes - 1)
    # One MI click of the tool (production): propose (pseudo-label forward) + adapt (backward through
    # the displayed forward pass's VJP + Adam); the adapted prediction's `show` is not timed here.
    f = lambda s, j=tool.jitted, v1=view1: j['adapt'](
      s, j['propose'](s, v1, jnp.asarray(p2, jnp.int32), jnp.int32(0))[0]
    )[0]
    t0 = time.perf_counter()
    fns[v] = [f, jax.block_until_ready(f(state))]
    print(f'{v}: compile + first step {time.perf_counter() - t0:.1f} s', flush=True)
  xp = view1.x
  xc = tool.propose(state, view1, p2, 0)[0].x
  ad = tr.Adapter(tr.UNet(channels + classes, classes, widths, bottleneck), classes, lr)
  to_t = lambda x: torch.from_numpy(np.ascontiguousarray(np.asarray(x).transpose(2, 0, 1)[None]))
  xpt, xct = to_t(xp), to_t(xc)
  ad.mi_step(xpt, xct, (5, 5), 0)
  times = {v: [] for v in variants + ['torch']}
  for _ in range(args.repeats):
    for v in variants:
      t0 = time.perf_counter()
      fns[v][1] = jax.block_until_ready(fns[v][0](fns[v][1]))
      times[v].append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    ad.mi_step(xpt, xct, (5, 5), 0)
    times['torch'].append(time.perf_counter() - t0)
  print(f'\n| {size} MI step | median s | min s | min / torch min |\n|---|---|---|---|')
  for v, t in times.items():
    print(
      f'| {v} | {np.median(t):.3f} | {np.min(t):.3f} | {np.min(t) / np.min(times["torch"]):.2f} |'
    )
  print(f'\n{common.describe(common.machine())}')


if __name__ == '__main__':
  main()
