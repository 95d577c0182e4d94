"""Why the rolled click loop was slow on CPU: a convolution's gradients inside and outside `lax.scan`.

For one 3x3 'SAME' convolution (1 x 128 x 128 x 72 -> 72) this times, per loop iteration, a scan of 4 steps
rolled (a while loop) and fully unrolled, for: the forward conv; XLA's weight gradient (dW) and input
gradient (dX) from `jax.vjp`; and yiplearn's `models.unet.conv3x3` gradients (dX as a forward conv with the
flipped kernel, dW as nine matrix products).

Run:  python benchmarks/bench_conv_grads.py [--hw 128] [--channels 72]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from yiplearn.models.unet import conv3x3  # noqa: E402


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument('--hw', type=int, default=128)
  p.add_argument('--channels', type=int, default=72)
  p.add_argument('--steps', type=int, default=4)
  args = p.parse_args()
  hw, c = args.hw, args.channels
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(1, hw, hw, c)), jnp.float32)
  k = jnp.asarray(rng.normal(size=(3, 3, c, c)) * 0.05, jnp.float32)
  xla = lambda x, k: jax.lax.conv_general_dilated(
    x, k, (1, 1), 'SAME', dimension_numbers=('NHWC', 'HWIO', 'NHWC')
  )
  loss = lambda conv: lambda x, k: jnp.mean(conv(x, k) ** 2)
  cases = {
    'forward': lambda x, k: (x, k * (1 + 1e-6 * jnp.mean(xla(x, k)))),
    'dW (XLA)': lambda x, k: (x, k - 1e-3 * jax.grad(loss(xla), 1)(x, k)),
    'dX (XLA)': lambda x, k: (x - 1e-3 * jax.grad(loss(xla), 0)(x, k), k),
    'dW (conv3x3)': lambda x, k: (x, k - 1e-3 * jax.grad(loss(conv3x3), 1)(x, k)),
    'dX (conv3x3)': lambda x, k: (x - 1e-3 * jax.grad(loss(conv3x3), 0)(x, k), k),
  }
  print(
    f'| 3x3 conv, {hw}x{hw}x{c} -> {c} | rolled scan ms/step | unrolled ms/step | rolled / unrolled |'
  )
  print('|---|---|---|---|')
  for name, f in cases.items():
    ms = []
    for unroll in (1, True):
      fn = jax.jit(
        lambda x, k, f=f, u=unroll: jax.lax.scan(
          lambda c, _: (f(*c), 0.0), (x, k), None, length=args.steps, unroll=u
        )[0]
      )
      jax.block_until_ready(fn(x, k))
      ts = []
      for _ in range(3):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(x, k))
        ts.append((time.perf_counter() - t0) / args.steps)
      ms.append(1e3 * float(np.median(ts)))
    print(f'| {name} | {ms[0]:.1f} | {ms[1]:.1f} | {ms[0] / ms[1]:.1f} |', flush=True)
  print(f'\n{common.describe(common.machine())}')


if __name__ == '__main__':
  main()
