"""Candidate evaluation throughput of entropy-adaptive merging: vmapped/chunked vs a Python loop.

For several numbers of experts K and candidates J, times `online.score_candidates` (all J
candidates merged and forwarded with `lax.map` over chunks of vmapped candidates, one jit) against
a loop that merges and runs one candidate at a time (a jitted single-candidate function called J
times), and reports candidates/second and peak memory (device `peak_bytes_in_use` where the
backend reports it, else the process's max RSS).

Run:
  python benchmarks/bench_merging.py                 # default sizes
  python benchmarks/bench_merging.py --quick         # tiny, seconds
  python benchmarks/bench_merging.py --out bench.json
Prints a Markdown table and writes JSON with the machine description.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from yiplearn.merging import candidates, online  # noqa: E402
from yiplearn.merging import tree as tr  # noqa: E402
from yiplearn.models.resnet import resnet_classifier  # noqa: E402


def _peak_bytes() -> int | None:
  try:
    stats = jax.devices()[0].memory_stats()
    if stats and 'peak_bytes_in_use' in stats:
      return int(stats['peak_bytes_in_use'])
  except Exception:  # pylint: disable=broad-except
    pass
  return None


def _rss_mb() -> float:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _time(fn, repeats: int) -> float:
  jax.block_until_ready(fn())  # compile + warm-up
  t = time.perf_counter()
  for _ in range(repeats):
    jax.block_until_ready(fn())
  return (time.perf_counter() - t) / repeats


def bench(k: int, j: int, *, widths, image_size: int, batch: int, chunk: int, repeats: int) -> dict:
  model = resnet_classifier(10, stage_sizes=(1,) * len(widths), widths=widths)
  x = jax.random.normal(jax.random.key(0), (batch, image_size, image_size, 3))
  base = model.init(jax.random.key(1), x)
  experts = tr.stack([jax.tree.map(lambda a, i=i: a + 0.05 * jax.random.normal(
      jax.random.fold_in(jax.random.key(2), i), a.shape), base) for i in range(k)])
  tau = tr.task_vectors(experts, base)
  cands = jnp.asarray(candidates.quasi_dirichlet(k, j))

  vmapped = jax.jit(lambda b, t, xx, c: online.score_candidates(model, b, t, xx, c,
                                                                 chunk_size=chunk))

  @jax.jit
  def one(b, t, xx, lam):
    v = tr.merge(b, t, lam)
    return online.entropy_score(model.apply(v, xx))

  t_vmap = _time(lambda: vmapped(base, tau, x, cands), repeats)
  peak_vmap = _peak_bytes()
  t_loop = _time(lambda: jnp.stack([one(base, tau, x, cands[i]) for i in range(j)]), repeats)
  a = np.asarray(vmapped(base, tau, x, cands))
  b = np.asarray(jnp.stack([one(base, tau, x, cands[i]) for i in range(j)]))
  return {'K': k, 'J': j, 'chunk': chunk, 'batch': batch,
          'vmapped_cands_per_s': j / t_vmap, 'loop_cands_per_s': j / t_loop,
          'speedup': t_loop / t_vmap, 'max_abs_diff': float(np.abs(a - b).max()),
          'peak_device_mb': None if peak_vmap is None else peak_vmap / 2**20,
          'max_rss_mb': _rss_mb()}


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument('--quick', action='store_true')
  p.add_argument('--out', default='bench_merging.json')
  args = p.parse_args()
  if args.quick:
    grid, kw, reps = [(2, 8), (3, 16)], dict(widths=(4, 8), image_size=16, batch=8, chunk=8), 2
  else:
    grid = [(2, 16), (3, 16), (3, 64), (5, 64), (8, 128)]
    kw, reps = dict(widths=(16, 32), image_size=28, batch=16, chunk=16), 3
  rows = []
  for k, j in grid:
    r = bench(k, j, repeats=reps, **kw)
    rows.append(r)
    print(f"K={k} J={j}: vmapped {r['vmapped_cands_per_s']:.1f}/s, loop {r['loop_cands_per_s']:.1f}/s",
          flush=True)
  cols = ['K', 'J', 'chunk', 'batch', 'vmapped_cands_per_s', 'loop_cands_per_s', 'speedup',
          'max_abs_diff', 'peak_device_mb', 'max_rss_mb']
  print('| ' + ' | '.join(cols) + ' |')
  print('|' + '---|' * len(cols))
  for r in rows:
    print('| ' + ' | '.join(f'{r[c]:.4g}' if isinstance(r[c], float) else str(r[c]) for c in cols)
          + ' |')
  machine = {'platform': platform.platform(), 'python': platform.python_version(),
             'processor': platform.processor(), 'cpu_count': os.cpu_count(),
             'jax': jax.__version__, 'backend': jax.default_backend(),
             'devices': [str(d) for d in jax.devices()], 'model': kw}
  with open(args.out, 'w') as f:
    json.dump({'machine': machine, 'rows': rows}, f, indent=2)
  print(f'wrote {args.out}')


if __name__ == '__main__':
  main()
