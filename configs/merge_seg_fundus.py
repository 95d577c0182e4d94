"""Online merging of fundus segmentation U-Nets (disc and cup), leave-one-domain-out.

Default: the synthetic fundus camera/site domains (source, camera_b, camera_c, noisy), K = 3.
`dataset=rimone_dl,manual_dir=DIR`: leave-one-release-out over RIM-ONE DL's sub-releases r1 / r2 / r3
(the `release` feature), K = 2; train / test are one of the release's official partitions: the
config looks below DIR and takes `partitioned_randomly` when present (every release then has both
splits), else `partitioned_by_hospital` (`partition=...` forces one); `config.data.partition_note`
says which. `drishti_dir=DIR2` adds Drishti-GS1 as a further unseen target (experts: all releases).

Run:
  python -m launch.run --config configs/merge_seg_fundus.py:quick --workdir runs/merge_seg_fundus_quick
  python -m launch.run --config 'configs/merge_seg_fundus.py:seeds=0;1;2' --workdir runs/merge_seg_fundus
  python -m launch.run --config configs/merge_seg_fundus.py:dataset=rimone_dl,manual_dir=/data/RIM-ONE_DL \
      --workdir runs/merge_seg_rimone
  Arguments: quick, dataset=synthetic|rimone_dl, manual_dir, drishti_dir, partition=auto|random|
  by_hospital, size=64, n=120 (synthetic images per domain), batch=8, T=0.05, seeds=0;1;2, targets.

Writes: as configs/merge_seg_lgg.py.
"""

import os

import ml_collections

from configs import common, merge_seg_common


def _partition(manual_dir: str, wanted: str) -> tuple[str, str]:
  if wanted != 'auto':
    return wanted, f'partition={wanted} (asked for)'
  for _, dirs, _ in os.walk(manual_dir):
    if 'partitioned_randomly' in dirs:
      return 'random', 'partitioned_randomly found: train/test = the official random partition'
  return 'by_hospital', 'no partitioned_randomly folder: train/test = the by-hospital partition'


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  a = common.parse_arg(
    arg,
    dataset='synthetic',
    manual_dir='',
    drishti_dir='',
    partition='auto',
    n=120,
    **merge_seg_common.COMMON_ARGS,
  )
  common.check_choice('dataset', a.dataset, ('synthetic', 'rimone_dl'))
  common.check_choice('partition', a.partition, ('auto', 'random', 'by_hospital'))
  c = merge_seg_common.base_config(a)
  if a.dataset == 'synthetic':
    c.data = ml_collections.ConfigDict(
      dict(
        name='synthetic_fundus',
        domains=('source', 'camera_b', 'camera_c', 'noisy'),
        image_size=a.size,
        norm='unit',
        kwargs=dict(num_train=a.n, num_test=max(a.n // 4, 8)),
        foreground_only=True,
        max_train=0,
        max_test=0,
        drishti_dir='',
        partition_note='',
      )
    )
  else:
    partition, note = _partition(a.manual_dir, a.partition)
    c.data = ml_collections.ConfigDict(
      dict(
        name='rimone_dl',
        domains=('r1', 'r2', 'r3'),
        image_size=a.size,
        norm='unit',
        manual_dir=a.manual_dir,
        kwargs=dict(image_size=max(a.size, 16), partition=partition),
        foreground_only=True,
        max_train=0,
        max_test=0,
        drishti_dir=a.drishti_dir,
        partition_note=note,
      )
    )
  if a.quick:
    c.data.image_size = 32
    c.data.max_train, c.data.max_test = 24, 8
    if a.dataset == 'synthetic':
      c.data.kwargs = dict(num_train=32, num_test=8)
    if not a.targets:
      c.targets = (c.data.domains[-1],)
  return c
