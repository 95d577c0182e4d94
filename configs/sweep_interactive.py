"""A sweep of online streams (clicks seeds x learning rates) of one method on one synthetic fundus target.

All S = len(seeds) x len(lrs) streams run as one vmapped session per image, the stream axis split
over the devices of `config.mesh` (default: all devices). The model is pre-trained first in
`<workdir>/pretrain` unless `--config.checkpoint_dir=DIR/best` names a `pretrain` run's best/.

Run:
  python -m launch.run --config configs/sweep_interactive.py:quick --workdir /tmp/sweep_quick
  python -m launch.run --config configs/sweep_interactive.py --workdir runs/sweep_fundus
  args: quick, target=camera_c, method=pi_mi, seeds=0;1;2, lrs=3e-5;1e-4;3e-4;1e-3, clicks=10, n=0,
  size=64, steps=800
  8 fake CPU devices (local check of the sharding):
  XLA_FLAGS=--xla_force_host_platform_device_count=8 python -m launch.run --config configs/sweep_interactive.py:quick ...

Writes (yiplearn/experiments/sweep_interactive.py): results/sweep_<target>.{md,csv,json} (per stream:
seed, lr, disc/cup Dice@1/5/10, NoC@80/85/90, AUC, updates), results/sweep_<target>_by_lr.* (mean and
std over seeds), pretrain/ (when pre-trained here), sweep/ (resumable checkpoints).
"""

import ml_collections

from configs import common, interactive_common, interactive_fundus


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  a = common.parse_arg(
    arg,
    quick=False,
    target='camera_c',
    method='pi_mi',
    seeds=(0, 1, 2),
    lrs=(3e-5, 1e-4, 3e-4, 1e-3),
    clicks=10,
    n=0,
    size=64,
    steps=800,
  )
  common.check_choice('target', a.target, interactive_fundus.TARGETS)
  base = interactive_fundus.get_config(
    f'{"quick," if a.quick else ""}stage=all,targets={a.target},size={a.size},steps={a.steps}'
  )
  c = ml_collections.ConfigDict(base.adapt.to_dict())
  del c['methods']
  c.experiment = 'sweep_interactive'
  c.pretrain = base.pretrain
  c.method = a.method
  c.seeds = tuple(a.seeds) if not a.quick or a.seeds != (0, 1, 2) else (0, 1)
  c.lrs = tuple(a.lrs) if not a.quick or a.lrs != (3e-5, 1e-4, 3e-4, 1e-3) else (1e-4, 1e-3)
  c.clicks.max_clicks = 5 if a.quick and a.clicks == 10 else a.clicks
  if a.n or a.quick:
    c.targets[a.target].max_images = a.n or 4
  c.checkpoint_every = 2 if a.quick else 10
  c.mesh = (
    interactive_common.mesh()
  )  # the stream axis is split over the data axis (-1: all devices)
  return c
