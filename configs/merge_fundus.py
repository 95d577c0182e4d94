"""Online merging on synthetic fundus crops: large-cup (cup-to-disc ratio > 0.425) vs small-cup
classification across four camera/site domains (source, camera_b, camera_c, noisy), K = 3 experts
per held-out target (entropy landscape plots).

Run:
  python -m launch.run --config configs/merge_fundus.py --workdir runs/merge_fundus
  python -m launch.run --config configs/merge_fundus.py:quick --workdir runs/merge_fundus_quick
  Arguments: quick (CPU smoke run, under a minute), size=32, n=200 (train images per domain),
  batch=16, alpha=0.1, T=0.05, seed=0, targets=noisy;camera_b.

Writes: results/merge_accuracy.{md,csv,json}, results/merge_summary.{md,csv,json},
results/lambda_trace.jsonl, plots/entropy_landscape_*.png, checkpoints/<target>/.
"""

import ml_collections

from configs import common, merge_common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  a = common.parse_arg(arg, size=32, n=200, **merge_common.COMMON_ARGS)
  c = merge_common.base_config(a)
  c.data = ml_collections.ConfigDict(
    dict(
      name='synthetic_fundus',
      domains=('source', 'camera_b', 'camera_c', 'noisy'),
      image_size=a.size,
      norm='unit',
      num_train=a.n,
      num_test=max(a.n // 4, 8),
      cdr_threshold=0.425,
      max_train=0,
      max_test=0,
    )
  )
  if a.quick:
    c.data.update(dict(image_size=16, num_train=48, num_test=16))
    c.train.update(dict(base_steps=60, expert_steps=20))
    c.targets = ('noisy',)
  if a.targets:
    c.targets = tuple(a.targets.split(';'))
  return c
