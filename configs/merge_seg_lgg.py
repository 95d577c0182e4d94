"""Online merging of segmentation U-Nets on real LGG brain MRI (lesion masks), leave-one-out.

`by=site` (default): the TCGA institutions with enough lesion slices in the shared subset (DU 135,
HT 102, CS 48, FG 42 lesion slices; EZ, one patient, is left out), all 3 MRI channels; each site in
turn is the unseen target and K = 3 experts are fine-tuned from one base on the other three
(entropy and Dice landscapes over the simplex). `by=sequence`: FLAIR, T1 (pre-contrast) and T1c
(post-contrast) each as a grey image (FLAIR-copy patients left out of T1 / T1c), K = 2. Experts
train on the sources' patient-level 'train' split; the target stream is every lesion slice of the
target; mixed / continual streams add the sources' 'validation+test' slices.
Data: the kaggle_3m folder at $YIPLEARN_LGG_DIR or ../shared/data/lgg_kaggle_3m.

Run:
  python -m launch.run --config configs/merge_seg_lgg.py:quick --workdir runs/merge_seg_quick
  python -m launch.run --config 'configs/merge_seg_lgg.py:seeds=0;1;2' --workdir runs/merge_seg_site
  python -m launch.run --config 'configs/merge_seg_lgg.py:by=sequence,seeds=0;1;2' \
      --workdir runs/merge_seg_sequence
  Arguments: quick (CPU smoke run: one target, tiny U-Net, 32 px), by=site|sequence, size=64,
  batch=8, T=0.05, seeds=0;1;2, targets=CS;FG.

Writes: results/merge_seg_{dice,summary,candidates}.{md,csv,json}, results/merge_seg_trace.jsonl,
results/merge_seg_best_candidate.jsonl, results/landscape_*.json and plots/landscape_*.png (K = 3),
seed<s>/checkpoints/<target>/ (base, experts, Fisher).
"""

import ml_collections

from configs import common, merge_seg_common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  a = common.parse_arg(arg, by='site', **merge_seg_common.COMMON_ARGS)
  common.check_choice('by', a.by, ('site', 'sequence'))
  c = merge_seg_common.base_config(a)
  domains = ('DU', 'HT', 'CS', 'FG') if a.by == 'site' else ('flair', 't1', 't1c')
  c.data = ml_collections.ConfigDict(
    dict(
      name='lgg_kaggle_3m',
      domains=domains,
      domain_by=a.by,
      image_size=a.size,
      norm='zscore',
      manual_dir='',
      foreground_only=True,
      max_train=0,
      max_test=0,
    )
  )
  if a.quick:
    c.data.image_size = 32
    c.data.max_train, c.data.max_test = 24, 8
    if not a.targets:
      c.targets = (domains[-1],)
  return c
