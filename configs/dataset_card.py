"""Dataset card of one dataset: counts per domain and split, intensity statistics, sample grids.

Run (real data: point `manual_dir` at the unpacked official release):
  python -m launch.run --config configs/dataset_card.py:dataset=lgg_kaggle_3m --workdir runs/card_lgg
  python -m launch.run --config configs/dataset_card.py:dataset=rimone_dl,manual_dir=/data/RIM-ONE_DL --workdir runs/card_rimone
  python -m launch.run --config configs/dataset_card.py:dataset=rotated_digits --workdir runs/card_digits

Writes `results/dataset_card.{md,csv,json}` and `plots/samples_<dataset>.png`.
"""

import os

import ml_collections

from configs import common

ENTRIES = {
  'synthetic_fundus': {
    'domains': ['source', 'camera_b', 'camera_c', 'noisy', 'pathology'],
    'domain_arg': 'domain',
    'splits': ['train', 'test'],
  },
  'synthetic_mri': {
    'domains': ['site_a', 'site_b', 'site_c', 'site_d'],
    'domain_arg': 'domain',
    'splits': ['train', 'test'],
  },
  'rotated_digits': {
    'domains': [0, 15, 30, 45, 60, 75],
    'domain_arg': 'angle',
    'splits': ['train', 'test'],
  },
  'lgg_kaggle_3m': {'group_by': 'site', 'splits': ['train', 'validation', 'test']},
  'rimone_dl': {'group_by': 'domain', 'splits': ['train', 'test']},
  'drishti_gs1': {'group_by': 'domain', 'splits': ['train', 'test']},
}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  a = common.parse_arg(arg, dataset='synthetic_fundus', manual_dir='', image_size=0)
  common.check_choice('dataset', a.dataset, tuple(ENTRIES))
  entry = dict(ENTRIES[a.dataset], name=a.dataset, kwargs={})
  if a.image_size:
    entry['kwargs']['image_size'] = a.image_size
  manual = a.manual_dir
  if not manual and a.dataset == 'lgg_kaggle_3m':
    manual = os.path.join(os.path.dirname(__file__), '..', '..', 'shared', 'data', 'lgg_kaggle_3m')
  if manual:
    entry['manual_dir'] = os.path.abspath(manual)
  c = ml_collections.ConfigDict()
  c.experiment = 'dataset_card'
  c.samples_per_domain = 6
  c.datasets = [entry]
  return c
