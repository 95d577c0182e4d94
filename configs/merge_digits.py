"""Online merging on rotated digits: 6 domains by angle (0..75 degrees), leave-one-domain-out.

Run:
  python -m launch.run --config configs/merge_digits.py --workdir runs/merge_digits
  python -m launch.run --config configs/merge_digits.py:quick --workdir runs/merge_digits_quick
  Arguments: quick (3 domains, tiny ResNet, few steps: a CPU smoke run under a minute), batch=16
  (stream batch size), alpha=0.1 (Dirichlet label shift), T=0.05 (entropy temperature), seed=0,
  targets=rot0;rot30 (held-out targets, default all), size=28, seeds=0;1;2 (one run per seed under
  <workdir>/seed_<s>/, then results/merge_summary_seeds.* with mean +- std).
  The README table (seeds 0, 1, 2; 71 minutes on 2 busy shared CPU cores):
  python -m launch.run --config configs/merge_digits.py:table --workdir runs/merge_digits_table
  `table`: held-out rot30 (K = 5), 16x16 images, ResNet widths (8, 16, 32), 128 test images per
  domain, streams iid/dirichlet/continual, merge_common.TABLE_METHODS, seeds 0;1;2.
  Only the experts: add `--config.experiment=train_experts`.

Writes (see yiplearn/experiments/merge_online.py): results/merge_accuracy.{md,csv,json},
results/merge_summary.{md,csv,json}, results/lambda_trace.jsonl, plots/entropy_landscape_*.png
(K = 3 only, e.g. `quick`), checkpoints/<target>/{base,expert_*,fisher_*}.
"""

import ml_collections

from configs import common, merge_common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  a = common.parse_arg(arg, size=28, table=False, **merge_common.COMMON_ARGS)
  c = merge_common.base_config(a)
  domains = ['rot0', 'rot15', 'rot30', 'rot45', 'rot60', 'rot75']
  c.data = ml_collections.ConfigDict(
    dict(
      name='rotated_digits',
      domains=tuple(domains),
      image_size=a.size,
      norm='unit',
      max_train=0,
      max_test=0,
    )
  )
  # A briefly trained shared base and longer per-domain fine-tuning: specialised experts.
  c.train.update(dict(base_steps=100, expert_steps=300, expert_lr=3e-3))
  c.eam.grid_resolution = 2  # K = 5: one-hots, pairwise midpoints, mean (+ refinement)
  if a.quick:
    c.data.domains = ('rot0', 'rot30', 'rot60', 'rot75')  # K = 3 experts per target
    c.data.image_size = 16
    c.data.max_train, c.data.max_test = 256, 64
    c.targets = ('rot30',)
  if a.table:
    merge_common.table_preset(c)
    c.targets = ('rot30',)
    c.data.image_size = 16 if a.size == 28 else a.size
    c.model.widths = (8, 16, 32)
    c.data.max_test = 128
  if a.targets:
    c.targets = tuple(a.targets.split(';'))
  return c
