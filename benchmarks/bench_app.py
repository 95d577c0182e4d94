"""Click latency of the click-and-learn app, measured through HTTP against the real server (issue 12).

For each image size the served model is the click U-Net with the paper's widths (12, 72, 144, 288) + 576
(random weights: latency does not depend on them), 1 image channel, 2 classes, PI + MI only. Each size runs the
real launcher (`python -m launch.run --config configs/annotate.py:data=folder,...`) twice:

  cold   a fresh compilation cache: the server is waited on until its background compilations are done,
         then `--images` images get `--clicks` clicks each (explicit coordinates: the first on the
         lesion, then alternating background / lesion points), each image accepted. Per click:
         click -> first response (the NDJSON line with the pseudo-label, one forward pass) and
         click -> adapted prediction (the second line: MI update + forward with the new weights);
         click 1 of an image (no MI) is reported apart. Accept = PI update + mask + state saved.
  warm   the server restarted on a new workdir with the same (now warm) compilation cache; the first
         click is sent as soon as the URL is printed: its first response is the "first click with a warm
         cache" (from the URL line), then the next click's adapted prediction.

Targets on 2 cores at 256 x 256: first response p90 <= 0.3 s, adapted p90 <= 1.0 s. The CPU of this
project's machine is shared with other jobs: the load average is recorded with each size.

Run:
  python benchmarks/bench_app.py --sizes 64,256 --out benchmarks/results/app_cpu.json \\
      --md benchmarks/results/app_cpu.md
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from benchmarks import common as bc  # noqa: E402


def write_inputs(root: str, size: int, n: int) -> None:
  """``n`` grey images with a disk lesion (and masks), and a paper-width U-Net checkpoint."""
  from yiplearn.io import checkpoints  # pylint: disable=g-import-not-at-top
  from yiplearn.models.unet import UNet  # pylint: disable=g-import-not-at-top

  rng = np.random.default_rng(0)
  folder = os.path.join(root, 'images')
  os.makedirs(os.path.join(folder, 'masks'), exist_ok=True)
  yy, xx = np.mgrid[:size, :size]
  for i in range(n):
    cy, cx = rng.integers(size // 3, 2 * size // 3, 2)
    mask = ((yy - cy) ** 2 + (xx - cx) ** 2 <= (size // 6) ** 2).astype(np.uint8)
    image = np.clip(60 + 120 * mask + rng.normal(0, 20, (size, size)), 0, 255).astype(np.uint8)
    Image.fromarray(image).save(os.path.join(folder, f'img{i}.png'))
    Image.fromarray(mask * 255).save(os.path.join(folder, 'masks', f'img{i}.png'))
  model = UNet(num_classes=2, widths=bc.PAPER_WIDTHS, bottleneck=bc.PAPER_BOTTLENECK)
  shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3)))
  params = jax.tree_util.tree_map(
    lambda s: jnp.asarray(rng.normal(0, 0.05, s.shape), s.dtype), shapes
  )
  with checkpoints.Checkpointer(os.path.join(root, 'best'), max_to_keep=1) as ckpt:
    ckpt.save(0, params)


def server_args(root: str, workdir: str, cache: str) -> list[str]:
  folder = os.path.join(root, 'images')
  return [
    sys.executable,
    '-m',
    'launch.run',
    f'--config=configs/annotate.py:data=folder,folder={folder},classes=background+lesion,channels=1,port=0',
    f'--config.checkpoint_dir={os.path.join(root, "best")}',
    f'--config.model.widths={bc.PAPER_WIDTHS}',
    f'--config.model.bottleneck={bc.PAPER_BOTTLENECK}',
    f'--config.cache_dir={cache}',
    "--config.methods=('pi_mi',)",  # the measured method only (fewer background compilations)
    '--config.method=pi_mi',
    f'--workdir={workdir}',
  ]


def start(args: list[str]):
  t0 = time.time()
  proc = subprocess.Popen(
    args, cwd=bc.REPO, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
  )
  while True:
    line = proc.stdout.readline()
    if not line and proc.poll() is not None:
      raise RuntimeError(f'server exited with {proc.returncode}')
    if line.startswith('http://'):
      return proc, line.strip(), time.time() - t0


def click(client, row: int, col: int, label: int) -> dict:
  t0 = time.perf_counter()
  first = adapted = None
  with client.stream('POST', 'api/click', json={'row': row, 'col': col, 'label': label}) as r:
    if r.status_code != 200:
      raise RuntimeError(r.read())
    for line in r.iter_lines():
      if not line:
        continue
      if first is None:
        first = time.perf_counter() - t0
      else:
        adapted = time.perf_counter() - t0
        json.loads(line)
  return {'first_s': first, 'adapted_s': adapted}


def clicks_for(gt: np.ndarray, n: int, rng) -> list[tuple[int, int, int]]:
  fg, bg = np.argwhere(gt > 0), np.argwhere(gt == 0)
  c = fg.mean(0).round().astype(int)
  out = [(int(c[0]), int(c[1]), 1)]
  for t in range(1, n):
    pts, label = (bg, 0) if t % 2 else (fg, 1)
    p = pts[rng.integers(len(pts))]
    out.append((int(p[0]), int(p[1]), label))
  return out


def pct(values, q):
  return float(np.percentile(values, q)) if values else None


def bench_size(size: int, n_images: int, n_clicks: int, root: str) -> dict:
  import httpx  # pylint: disable=g-import-not-at-top

  write_inputs(root, size, n_images)
  gts = [
    (np.asarray(Image.open(os.path.join(root, 'images', 'masks', f'img{i}.png'))) > 0).astype(int)
    for i in range(n_images)
  ]
  cache = os.path.join(root, 'cache')
  rng = np.random.default_rng(1)
  load0 = bc.load_avg()
  proc, url, t_url = start(server_args(root, os.path.join(root, 'cold'), cache))
  try:
    client = httpx.Client(base_url=url, timeout=600)
    t0 = time.time()
    while client.get('api/state').json()['warming']:
      time.sleep(0.5)
    compile_s = time.time() - t0
    firsts, adapteds, click1, accepts = [], [], [], []
    for i in range(n_images):
      for t, (r, c, k) in enumerate(clicks_for(gts[i], n_clicks, rng)):
        m = click(client, r, c, k)
        (click1 if t == 0 else firsts).append(m['first_s'])
        if t:
          adapteds.append(m['adapted_s'])
      t1 = time.perf_counter()
      client.post('api/accept', json={}).raise_for_status()
      accepts.append(time.perf_counter() - t1)
  finally:
    proc.terminate()
    proc.wait(60)
  # warm: a restart on the warm cache, the first click as soon as the URL is printed
  proc, url, t_url_warm = start(server_args(root, os.path.join(root, 'warm'), cache))
  try:
    client = httpx.Client(base_url=url, timeout=600)
    seq = clicks_for(gts[0], 2, rng)
    warm1 = click(client, *seq[0])
    warm2 = click(client, *seq[1])
  finally:
    proc.terminate()
    proc.wait(60)
  return {
    'size': size,
    'images': n_images,
    'clicks_per_image': n_clicks,
    'cold_url_s': t_url,
    'cold_background_compile_s': compile_s,
    'click1_p50_s': pct(click1, 50),
    'first_p50_s': pct(firsts, 50),
    'first_p90_s': pct(firsts, 90),
    'adapted_p50_s': pct(adapteds, 50),
    'adapted_p90_s': pct(adapteds, 90),
    'accept_p50_s': pct(accepts, 50),
    'warm_url_s': t_url_warm,
    'warm_first_click_first_s': warm1['first_s'],
    'warm_second_click_adapted_s': warm2['adapted_s'],
    'first_all_s': firsts,
    'adapted_all_s': adapteds,
    'load_avg_before': load0,
    'load_avg_after': bc.load_avg(),
  }


COLS = [
  ('size', 'size'),
  ('first_p50_s', 'first response p50 s'),
  ('first_p90_s', 'first response p90 s'),
  ('adapted_p50_s', 'adapted p50 s'),
  ('adapted_p90_s', 'adapted p90 s'),
  ('click1_p50_s', 'click 1 p50 s'),
  ('accept_p50_s', 'accept p50 s'),
  ('cold_background_compile_s', 'cold: compile after URL s'),
  ('warm_url_s', 'warm: spawn to URL s'),
  ('warm_first_click_first_s', 'warm: first click s'),
  ('warm_second_click_adapted_s', 'warm: 2nd click adapted s'),
]


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--sizes', default='64,256')
  parser.add_argument('--images', type=int, default=3)
  parser.add_argument('--clicks', type=int, default=6)
  parser.add_argument('--out', default='benchmarks/results/app_cpu.json')
  parser.add_argument('--md', default=None)
  a = parser.parse_args()
  rows = []
  for size in [int(s) for s in a.sizes.split(',') if s]:
    with tempfile.TemporaryDirectory(prefix=f'bench_app_{size}_') as root:
      rows.append(bench_size(size, a.images, a.clicks, root))
    print(json.dumps({k: v for k, v in rows[-1].items() if not k.endswith('_all_s')}), flush=True)
  mach = bc.machine()
  cmd = 'python benchmarks/bench_app.py ' + ' '.join(sys.argv[1:])
  table = (
    '# Click latency of the app through HTTP (paper widths, PI + MI)\n\n'
    f'Command: `{cmd}`\n\n'
    + bc.markdown_table(rows, COLS, digits=3)
    + '\nTargets on 2 cores at 256 x 256: first response p90 <= 0.3 s, adapted p90 <= 1.0 s.\n'
    + ''.join(
      f'- {r["size"]}: load average before {bc.fmt_load(r["load_avg_before"])}, after '
      f'{bc.fmt_load(r["load_avg_after"])}.\n'
      for r in rows
    )
    + '\n'
    + bc.describe(mach)
    + '\n'
  )
  bc.save_results(a.out, a.md, {'machine': mach, 'rows': rows, 'command': cmd}, table)
  bc.print_results(table, a.out, a.md)


if __name__ == '__main__':
  main()
