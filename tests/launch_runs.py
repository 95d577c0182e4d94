"""Helpers of the subprocess tests (test_kill_resume.py, test_merge_seg.py): tiny launch commands,
a pre-trained click model made in-process, a persistent XLA cache shared by every subprocess of the
session (only the first run of a config compiles) and byte-level snapshots of the results files."""

from __future__ import annotations

import os
import pathlib
import random
import signal
import subprocess
import sys
import time

REPO = pathlib.Path(__file__).resolve().parents[1]

# adapt_interactive (PI + MI) on 6 synthetic fundus images (camera_c), 3 clicks, a checkpoint after every image.
ADAPT = [
  'configs/interactive_fundus.py:quick,stage=adapt,targets=camera_c',
  '--config.checkpoint_every=1',
  '--config.clicks.max_clicks=3',
  '--config.targets.camera_c.max_images=6',
  "--config.methods=('pi_mi',)",
]
# merge_online on rotated digits (K = 3 one-block ResNets, target rot30), 8 batches of 8, a checkpoint per batch.
MERGE = [
  'configs/merge_digits.py:quick,batch=8',
  '--config.model.stage_sizes=(1,)',
  '--config.model.widths=(4,)',
  '--config.train.base_steps=20',
  '--config.train.expert_steps=10',
  "--config.methods=('adamerging_task','eam')",
  "--config.streams=('iid',)",
  '--config.landscape=False',
  '--config.checkpoint_every=1',
]


def root(tmp_path_factory) -> pathlib.Path:
  """One folder per pytest session shared by both test files (XLA cache, pre-trained model, reference runs)."""
  path = tmp_path_factory.getbasetemp() / 'launch_runs'
  path.mkdir(exist_ok=True)
  return path


def env(base: pathlib.Path) -> dict[str, str]:
  e = dict(os.environ)
  e.update(
    YIPLEARN_DATA_DIR=str(base / 'data'),
    JAX_PLATFORMS='cpu',
    JAX_COMPILATION_CACHE_DIR=os.environ.get('JAX_COMPILATION_CACHE_DIR', str(base / 'xla_cache')),
    JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS='0',
    JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES='0',
    PYTHONPATH=str(REPO),
  )
  return e


def pretrained(base: pathlib.Path) -> str:
  """A randomly initialised click U-Net of the quick fundus config saved like a pretrain run's best/."""
  best = base / 'pretrained' / 'best'
  if not best.is_dir():
    import jax  # pylint: disable=g-import-not-at-top
    import jax.numpy as jnp  # pylint: disable=g-import-not-at-top

    from configs import interactive_fundus  # pylint: disable=g-import-not-at-top
    from yiplearn.experiments import seg_common  # pylint: disable=g-import-not-at-top
    from yiplearn.io import checkpoints  # pylint: disable=g-import-not-at-top

    cfg = interactive_fundus.get_config('quick,stage=adapt')
    model = seg_common.make_unet(cfg.model, 3)
    params = jax.jit(model.init)(jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 6)))
    with checkpoints.Checkpointer(best) as ckpt:
      ckpt.save(1, params)
  return str(best)


def command(args: list[str], workdir: pathlib.Path) -> list[str]:
  return [
    sys.executable,
    '-m',
    'launch.run',
    '--config',
    args[0],
    *args[1:],
    '--workdir',
    str(workdir),
  ]


def adapt_args(base: pathlib.Path) -> list[str]:
  return ADAPT + [f'--config.checkpoint_dir={pretrained(base)}']


def merge_args(base: pathlib.Path) -> list[str]:
  """Every merge run of the session shares the experts trained by the first one (their own resume is
  tested in test_train_experts.py); the streams run, and are killed, in each run's workdir."""
  return MERGE + [f'--config.experts_workdir={base / "experts"}']


def launch(args: list[str], workdir: pathlib.Path, base: pathlib.Path) -> None:
  """Runs one experiment to the end; fails with its output if it does not exit 0."""
  t0 = time.monotonic()
  proc = subprocess.run(
    command(args, workdir), cwd=REPO, env=env(base), capture_output=True, text=True, timeout=600
  )
  print(f'{workdir.name}: exit {proc.returncode} after {time.monotonic() - t0:.1f} s')
  assert proc.returncode == 0, proc.stderr[-3000:]


def reference(args: list[str], name: str, base: pathlib.Path) -> pathlib.Path:
  """An uninterrupted run, made once per session."""
  workdir = base / f'reference_{name}'
  if not (workdir / '.complete').exists():
    launch(args, workdir, base)
    (workdir / '.complete').write_text('')
  return workdir


def _has_checkpoint(workdir: pathlib.Path) -> bool:
  streams = workdir / 'streams'
  return streams.is_dir() and any(p.name.isdigit() for p in streams.glob('**/*') if p.is_dir())


def _records(workdir: pathlib.Path) -> int:
  """Complete lines in the per-item logs of the streams (one per image or batch done)."""
  n = 0
  for folder, _, names in os.walk(workdir / 'streams'):  # checkpoint folders come and go meanwhile
    for name in names:
      if name.endswith('.jsonl'):
        try:
          n += pathlib.Path(folder, name).read_bytes().count(b'\n')
        except FileNotFoundError:  # replaced by an atomic rewrite meanwhile
          pass
  return n


def launch_and_kill(
  args: list[str],
  workdir: pathlib.Path,
  base: pathlib.Path,
  seed: int,
  after_records: int,
  max_delay_s: float,
) -> dict:
  """Starts the experiment, waits until its streams have logged `after_records` items, then
  SIGKILLs it after a seeded random delay in [0, max_delay_s) (a point inside the next items,
  however fast the machine). Returns what happened (delay, whether it was still running)."""
  delay = random.Random(seed).uniform(0.0, max_delay_s)
  t0 = time.monotonic()
  proc = subprocess.Popen(
    command(args, workdir),
    cwd=REPO,
    env=env(base),
    stdout=subprocess.DEVNULL,
    stderr=subprocess.PIPE,
    text=True,
  )
  try:
    deadline = time.monotonic() + 600
    while _records(workdir) < after_records and proc.poll() is None:
      if time.monotonic() > deadline:
        break
      time.sleep(0.01)
    time.sleep(delay)
    running = proc.poll() is None
    if running:
      proc.send_signal(signal.SIGKILL)
    _, err = proc.communicate(timeout=60)
  finally:
    if proc.poll() is None:
      proc.kill()
      proc.wait()
  if not running:
    assert proc.returncode == 0, err[-3000:]
  finished = len([p for p in (workdir / 'streams').glob('**/*') if p.suffix in ('.json', '.npz')])
  info = {
    'delay_s': round(delay, 3),
    'killed': running,
    'returncode': proc.returncode,
    'after_s': round(time.monotonic() - t0, 1),
    'records': _records(workdir),
    'finished_streams': finished,
  }
  print(f'SIGKILL {workdir.name}: {info}')
  return info


def snapshot(workdir: pathlib.Path) -> dict[str, bytes]:
  """Every deterministic output: all of results/ and per_click.jsonl (bytes by relative path)."""
  out = {}
  for path in sorted(workdir.glob('results/**/*')) + [workdir / 'per_click.jsonl']:
    if path.is_file():
      out[str(path.relative_to(workdir))] = path.read_bytes()
  return out


def assert_same_files(a: pathlib.Path, b: pathlib.Path) -> dict[str, bytes]:
  sa, sb = snapshot(a), snapshot(b)
  assert sorted(sa) == sorted(sb)
  differ = [name for name in sa if sa[name] != sb[name]]
  assert not differ, f'files differ between {a} and {b}: {differ}'
  return sa
