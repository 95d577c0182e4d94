"""Interactive optic disc and cup segmentation on synthetic fundus domains, with online adaptation.

Pre-trains the click model on the `source` camera, then adapts online on shifted target streams:
`camera_b` (colour balance, gamma), `camera_c` (illumination gradient, blur, low resolution),
`noisy` (sensor noise, low contrast) and `pathology` (glaucoma-like large cups).

Run:
  python -m launch.run --config configs/interactive_fundus.py --workdir runs/fundus
  python -m launch.run --config configs/interactive_fundus.py:quick --workdir /tmp/fundus_quick
  args: quick, stage=all|pretrain|adapt, size=, steps=, n=, targets=camera_b;pathology, paper_model,
  released (the authors' released code instead of the paper's text: interactive_common.released)

Writes: pretrain/ (checkpoints, best/, metrics, results/pretrain_val.*), results/interactive_*.{md,csv,json}
(disc and cup Dice@1/5/10, NoC@80/85/90, AUC per target and method), per_click.jsonl, plots/.
"""

import ml_collections

from configs import common
from configs import interactive_common as ic
from yiplearn.experiments import seg_common

TARGETS = ('camera_b', 'camera_c', 'noisy', 'pathology')


def _data(
  domain: str, split: str, size: int, n_train: int, n_test: int, quick: bool
) -> ml_collections.ConfigDict:
  kwargs = {'domain': domain, 'image_size': size, 'num_train': n_train, 'num_test': n_test}
  return seg_common.data_config(
    'synthetic_fundus', kwargs=kwargs, split=split, max_images=8 if quick else 0
  )


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  a = common.parse_arg(
    arg,
    quick=False,
    stage='all',
    size=64,
    steps=800,
    n=400,
    n_test=40,
    targets=TARGETS,
    paper_model=False,
    released=False,
  )
  common.check_choice('stage', a.stage, ('all', 'pretrain', 'adapt'))
  for t in a.targets:
    common.check_choice('targets', t, TARGETS)
  size = 32 if a.quick else a.size
  n, n_test = (16, 8) if a.quick else (a.n, a.n_test)
  steps = 6 if a.quick else a.steps
  report = {'disc': [1, 2], 'cup': [2]}
  pre = ic.pretrain(
    _data('source', 'train', size, n, n_test, a.quick),
    num_classes=3,
    report=report,
    quick=a.quick,
    steps=steps,
    paper_model=a.paper_model,
  )
  targets = {t: _data(t, 'test', size, n, n_test, a.quick) for t in a.targets}
  adapt = ic.adapt(targets, num_classes=3, report=report, quick=a.quick, lr=1e-4)
  if a.released:
    ic.released(pre, adapt, size)
  return ic.stage_config(a.stage, pre, adapt)
