"""Shared defaults of the segmentation-merging configs (merge_seg_lgg, merge_seg_fundus).

Everything but `data`: a small U-Net (image channels only, GroupNorm so that Tent has affine
parameters to adapt), base and expert training, streams, methods and the entropy-adaptive options.
"""

from __future__ import annotations

import ml_collections

from configs import merge_common
from yiplearn.experiments import merge_seg

ALL_METHODS = merge_seg.KNOWN  # every method merge_seg.build_methods knows, in its order
QUICK_METHODS = (
  'experts',
  'mean',
  'ties',
  'fisher',
  'ensemble_entropy',
  'adamerging_task',
  'tent',
  'eam',
)
COMMON_ARGS = dict(quick=False, batch=8, T=0.05, seeds=(0,), targets='', size=64)


def base_config(a) -> ml_collections.ConfigDict:
  """`a`: the parsed common args (quick, batch, T, seeds, targets, size)."""
  c = merge_common.base_config(
    ml_collections.ConfigDict(
      dict(a, alpha=1.0, seed=a.seeds[0], seeds=';'.join(map(str, a.seeds)))
    )
  )
  c.experiment = 'merge_seg'
  c.seeds = tuple(int(s) for s in a.seeds)
  c.diagnostics = True  # per batch the best candidate by Dice against entropy's choice
  c.landscape_resolution = 8
  c.model = ml_collections.ConfigDict(
    dict(arch='unet', widths=(4, 8, 16), bottleneck=32, norm='group')
  )
  c.train.update(
    dict(
      base_steps=120,
      expert_steps=80,
      batch_size=8,
      lr=3e-3,
      expert_lr=1e-3,
      weight_decay=1e-4,
      fisher_batches=2,
      flip=True,
    )
  )
  c.stream = ml_collections.ConfigDict(dict(batch_size=a.batch, alpha=1.0, continual_within='iid'))
  c.streams = ('iid', 'mixed', 'continual')
  c.methods = ALL_METHODS
  c.eam.update(dict(scoring='mean', gamma_ablation=0.5))
  c.tent.lr = 1e-3
  if a.quick:
    c.model.update(dict(widths=(4, 8), bottleneck=8))
    c.train.update(dict(base_steps=10, expert_steps=5, batch_size=8, fisher_batches=1))
    c.streams = ('iid', 'continual')
    c.methods = QUICK_METHODS
    c.eam.grid_resolution = 2
    c.landscape_resolution = 4
  if a.targets:
    c.targets = tuple(a.targets.split(';'))
  return c
