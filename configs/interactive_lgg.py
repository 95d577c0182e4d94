"""Interactive segmentation on the real LGG brain MRI (TCGA lower-grade glioma), with online adaptation.

Shifts (arg `shift`):
  modality  pre-train on FLAIR, adapt on pre-contrast T1 (`t1`) and post-contrast T1 (`t1c`) of unseen
            patients (the paper's BraTS FLAIR -> T1 / T1c protocol); patients whose channel is a copy of
            FLAIR are left out of that target.
            `control` (default on) adds the no-shift control: FLAIR of the same test patients.
  site      pre-train on FLAIR of sites DU and HT, adapt on FLAIR of the unseen sites CS and FG (+EZ).

Run (stage=all pre-trains into <workdir>/pretrain, then adapts every method on every target):
  python -m launch.run --config configs/interactive_lgg.py --workdir runs/lgg_modality
  python -m launch.run --config configs/interactive_lgg.py:shift=site --workdir runs/lgg_site
  python -m launch.run --config configs/interactive_lgg.py:quick --workdir /tmp/lgg_quick   (CPU smoke run)
  stage=pretrain or stage=adapt (with --config.checkpoint_dir=...) run one half.
  seeds=0;1;2 runs the pipeline once per pre-training seed (<workdir>/seed_<s>/), then writes
  results/interactive_seeds.* (mean ± std per target and method). The README table:
    python -m launch.run --config 'configs/interactive_lgg.py:size=64,steps=800,seeds=0;1;2' \
      --workdir runs/lgg_modality --config.adapt.methods="('frozen','pi','pi_mi')"
  and the same with `released` added to the arguments (the authors' released code, DESIGN.md 1.1).
  `released` runs the authors' released code instead of the paper's text (interactive_common.released).

Data: `../shared/data/lgg_kaggle_3m` beside the checkout, or `--config.data.manual_dir=/path/to/kaggle_3m`
(the Kaggle "LGG Segmentation Dataset", https://www.kaggle.com/datasets/mateuszbuda/lgg-mri-segmentation).
Writes: pretrain/ (checkpoints, best/, metrics, results/pretrain_val.*), results/interactive_*.{md,csv,json}
(Dice@1/5/10, NoC@80/85/90, AUC per target and method), per_click.jsonl, plots/dice_vs_clicks_*.png.
"""

import ml_collections

from configs import common
from configs import interactive_common as ic
from yiplearn.experiments import seg_common

SITE_TRAIN = ('DU', 'HT')
SITE_TEST = ('CS', 'FG', 'EZ')


def _data(split: str, sequence: str, size: int, sites=(), quick=False) -> ml_collections.ConfigDict:
  return seg_common.data_config(
    'lgg_kaggle_3m',
    kwargs={'variant': 'all_slices'},
    split=split,
    val_split='validation',
    sequence=sequence,
    sites=tuple(sites),
    image_size=size,
    norm='zscore',
    max_images=12 if quick else 0,
  )


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  a = common.parse_arg(
    arg,
    quick=False,
    shift='modality',
    stage='all',
    size=128,
    steps=1500,
    paper_model=False,
    released=False,
    control=True,
    seeds='',
  )
  common.check_choice('shift', a.shift, ('modality', 'site'))
  common.check_choice('stage', a.stage, ('all', 'pretrain', 'adapt'))
  size = 32 if a.quick else a.size
  steps = 6 if a.quick else a.steps
  source_sites = SITE_TRAIN if a.shift == 'site' else ()
  pre = ic.pretrain(
    _data('train', 'flair', size, source_sites, a.quick),
    num_classes=2,
    report={'lesion': [1]},
    quick=a.quick,
    steps=steps,
    paper_model=a.paper_model,
  )
  if a.shift == 'modality':
    targets = {
      't1': _data('test', 't1', size, quick=a.quick),
      't1c': _data('test', 't1c', size, quick=a.quick),
    }
    if a.control:  # no shift: FLAIR (the pre-training sequence) of the same unseen test patients
      targets['flair'] = _data('test', 'flair', size, quick=a.quick)
  else:
    targets = {'unseen_sites': _data('all', 'flair', size, SITE_TEST, a.quick)}
  methods = ('frozen', 'pi', 'pi_mi') if a.quick else ic.METHODS
  adapt = ic.adapt(
    targets, num_classes=2, report={'lesion': [1]}, quick=a.quick, lr=5e-5, methods=methods
  )
  if a.released:
    ic.released(pre, adapt, size)
  seeds = tuple(int(x) for x in str(a.seeds).split(';') if x != '')
  return ic.stage_config(a.stage, pre, adapt, seeds)
