"""Online merging on real LGG brain MRI (tumour-present classification), leave-one-domain-out.

Label: the slice shows a lesion (lesion_area > 0). Domains: `by=sequence` (default) each MRI
channel as a grey image ('pre' T1, 'flair', 'post' T1c; FLAIR-copy patients left out of pre/post),
K = 2 experts per target; `by=site` the TCGA sites DU, HT, CS, FG (3 channels), K = 3 (entropy
landscape plots). Splits by patient: experts train on 'train', streams use 'validation+test'.
Data: the kaggle_3m folder at $YIPLEARN_LGG_DIR or ../shared/data/lgg_kaggle_3m (or
`--config.data.manual_dir=...`).

Run:
  python -m launch.run --config configs/merge_lgg.py --workdir runs/merge_lgg
  python -m launch.run --config configs/merge_lgg.py:by=site --workdir runs/merge_lgg_site
  python -m launch.run --config configs/merge_lgg.py:quick --workdir runs/merge_lgg_quick
  Arguments: quick (CPU smoke run, under a minute), by=sequence|site, size=64, batch=16,
  alpha=0.1, T=0.05, seed=0, seeds=0;1;2 (one run per seed under <workdir>/seed_<s>/, then
  results/merge_summary_seeds.* with mean +- std), targets=pre;post.
  The README table (seeds 0, 1, 2):
  python -m launch.run --config configs/merge_lgg.py:table --workdir runs/merge_lgg_table
  `table`: held-out post-contrast T1 (K = 2), 32x32 images, ResNet widths (8, 16, 32), streams
  iid/dirichlet/continual, merge_common.TABLE_METHODS, seeds 0;1;2.

Writes: results/merge_accuracy.{md,csv,json}, results/merge_summary.{md,csv,json},
results/lambda_trace.jsonl, plots/entropy_landscape_*.png (K = 3), checkpoints/<target>/.
"""

import ml_collections

from configs import common, merge_common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  a = common.parse_arg(arg, size=64, by='sequence', table=False, **merge_common.COMMON_ARGS)
  common.check_choice('by', a.by, ('sequence', 'site'))
  c = merge_common.base_config(a)
  domains = ['pre', 'flair', 'post'] if a.by == 'sequence' else ['DU', 'HT', 'CS', 'FG']
  c.data = ml_collections.ConfigDict(
    dict(
      name='lgg_kaggle_3m',
      domains=tuple(domains),
      domain_by=a.by,
      image_size=a.size,
      norm='zscore',
      manual_dir='',
      max_train=0,
      max_test=0,
    )
  )
  c.train.update(dict(base_steps=300, expert_steps=100, batch_size=32))
  if a.quick:
    c.data.image_size = 32
    c.train.update(dict(base_steps=60, expert_steps=20, batch_size=32))
    c.targets = (domains[-1],)
  if a.table:
    merge_common.table_preset(c)
    c.targets = ('post',) if a.by == 'sequence' else (domains[-1],)
    c.data.image_size = 32 if a.size == 64 else a.size
    c.model.widths = (8, 16, 32)
  if a.targets:
    c.targets = tuple(a.targets.split(';'))
  return c
