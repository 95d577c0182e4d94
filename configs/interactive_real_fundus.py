"""Interactive disc/cup segmentation on the official fundus releases (bring your own copy).

  dataset=rimone_dl    pre-train on RIM-ONE DL's training hospital (HUC, split `train`), adapt on the
                       test hospitals (HUMS, HCSC, split `test`): a site shift.
  dataset=drishti_gs1  pre-train on the synthetic source camera, adapt on Drishti-GS1 (`train` + `test`):
                       a synthetic-to-real shift; or pre-train on RIM-ONE with source=rimone_dl.

Run (manual_dir = where you unpacked the official archive; files are found by name):
  python -m launch.run --config configs/interactive_real_fundus.py:dataset=rimone_dl,manual_dir=/data/RIM-ONE_DL --workdir runs/rimone
  python -m launch.run --config configs/interactive_real_fundus.py:dataset=drishti_gs1,manual_dir=/data/Drishti-GS1 --workdir runs/drishti
  add `released` for the authors' released code instead of the paper's text (interactive_common.released).
  add `quick` for a CPU smoke run. A missing or wrongly laid-out directory fails with a message that
  says what to download and where to put it.

Writes: pretrain/, results/interactive_*.{md,csv,json} (disc and cup Dice@1/5/10, NoC, AUC), per_click.jsonl, plots/.
"""

import ml_collections

from configs import common
from configs import interactive_common as ic
from yiplearn.experiments import seg_common


def _data(
  name: str, split: str, size: int, manual_dir: str, quick: bool, kwargs=None
) -> ml_collections.ConfigDict:
  return seg_common.data_config(
    name,
    kwargs=kwargs if kwargs is not None else {'image_size': size},
    split=split,
    manual_dir=manual_dir,
    max_images=8 if quick else 0,
  )


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  a = common.parse_arg(
    arg,
    quick=False,
    stage='all',
    dataset='rimone_dl',
    manual_dir='',
    source='synthetic',
    source_manual_dir='',
    size=256,
    steps=2000,
    paper_model=False,
    released=False,
  )
  common.check_choice('dataset', a.dataset, ('rimone_dl', 'drishti_gs1'))
  common.check_choice('stage', a.stage, ('all', 'pretrain', 'adapt'))
  common.check_choice('source', a.source, ('synthetic', 'rimone_dl'))
  size = 32 if a.quick else a.size
  steps = 6 if a.quick else a.steps
  report = {'disc': [1, 2], 'cup': [2]}
  if a.dataset == 'rimone_dl':
    source = _data('rimone_dl', 'train[:85%]', size, a.manual_dir, a.quick)
    source.val_split = 'train[85%:]'  # model selection never sees the target hospitals
    targets = {'rimone_test_hospitals': _data('rimone_dl', 'test', size, a.manual_dir, a.quick)}
  else:
    if a.source == 'rimone_dl':
      source = _data('rimone_dl', 'train[:85%]', size, a.source_manual_dir, a.quick)
      source.val_split = 'train[85%:]'
    else:
      source = _data(
        'synthetic_fundus',
        'train',
        size,
        '',
        a.quick,
        {'domain': 'source', 'image_size': size, 'num_train': 400, 'num_test': 40},
      )
    targets = {'drishti_gs1': _data('drishti_gs1', 'all', size, a.manual_dir, a.quick)}
  pre = ic.pretrain(
    source, num_classes=3, report=report, quick=a.quick, steps=steps, paper_model=a.paper_model
  )
  adapt = ic.adapt(targets, num_classes=3, report=report, quick=a.quick, lr=1e-4)
  if a.released:
    ic.released(pre, adapt, size)
  return ic.stage_config(a.stage, pre, adapt)
