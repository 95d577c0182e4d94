"""Shared defaults of the online-merging configs (merge_digits, merge_lgg, merge_fundus).

Sequences are tuples so that they can be overridden on the command line, e.g.
`--config.methods="('mean', 'eam')" --config.streams="('iid',)" --config.targets="('rot30',)"`.
"""

from __future__ import annotations

import ml_collections

from yiplearn.experiments import merge_methods

ALL_METHODS = merge_methods.KNOWN  # every method merge_methods.build knows, in its order
QUICK_METHODS = [
  'experts',
  'mean',
  'ties',
  'fisher',
  'ensemble_entropy',
  'adamerging_task',
  'tent',
  'eam',
]

# The README tables (`:table`): every static merge with re-estimated BatchNorm statistics (the default)
# and, for mean and TIES, with the experts' merged statistics and the test batch's, beside the online
# methods; run over seeds 0, 1, 2 of base and expert training.
TABLE_METHODS = [
  'experts',
  'mean',
  'mean:merge',
  'mean:batch',
  'task_arithmetic',
  'ties',
  'ties:merge',
  'dare',
  'fisher',
  'ensemble_mean',
  'ensemble_entropy',
  'adamerging_task',
  'tent',
  'eam',
  'eam_coupled',
  'eam_argmin',
  'eam_bnbatch',
]
TABLE_SEEDS = (0, 1, 2)


def table_preset(c: ml_collections.ConfigDict) -> None:
  """The settings shared by the README tables (methods, streams, seeds unless given)."""
  c.methods = tuple(TABLE_METHODS)
  c.streams = ('iid', 'dirichlet', 'continual')
  if not c.seeds:
    c.seeds = TABLE_SEEDS


def base_config(a) -> ml_collections.ConfigDict:
  """Everything but `data`; `a` holds the parsed common args (quick, batch, alpha, T, ...)."""
  c = ml_collections.ConfigDict()
  c.experiment = 'merge_online'
  c.seed = a.seed
  # Seeds of base and expert training: one full run per seed under <workdir>/seed_<s>/, then
  # results/merge_summary_seeds.* with mean +- std (yiplearn/experiments/seeds.py).
  c.seeds = tuple(int(s) for s in str(a.seeds).split(';') if s != '')
  c.targets = ()  # held-out target domains (empty = every domain)
  c.sources = ()  # train_experts only: domains to train on (empty = all)
  c.experts_workdir = ''  # read/write expert checkpoints here instead of the workdir
  c.landscape = True  # K = 3: plot the entropy landscape over the simplex
  c.checkpoint_every = 20  # batches between checkpoints of each (method, stream) pair
  c.landscape_resolution = 12
  # Device mesh (yiplearn/parallel.py): base/expert training is data parallel over all devices (the
  # batch must split evenly); entropy-adaptive candidates are split over this process's devices.
  c.mesh = ml_collections.ConfigDict(dict(shape=-1, axis_names=('data',)))
  c.model = ml_collections.ConfigDict(
    dict(
      arch='resnet',
      stage_sizes=(1, 1, 1),
      widths=(16, 32, 64),
      patch_size=4,
      dim=32,
      depth=2,
      num_heads=2,
    )
  )
  c.train = ml_collections.ConfigDict(
    dict(
      base_steps=400,
      expert_steps=150,
      batch_size=64,
      lr=3e-3,
      expert_lr=1e-3,
      weight_decay=1e-4,
      fisher_batches=4,
      save_fisher=True,
      balance=False,
      flip=False,
    )
  )
  c.stream = ml_collections.ConfigDict(
    dict(batch_size=a.batch, alpha=a.alpha, continual_within='dirichlet')
  )
  c.streams = ('iid', 'dirichlet', 'mixed', 'continual')
  c.methods = tuple(ALL_METHODS)
  c.static = ml_collections.ConfigDict(
    dict(ta_scale=0.3, ties_density=0.2, ties_scale=1.0, dare_rate=0.5, fisher_normalize=True)
  )
  # BatchNorm statistics of merged models (yiplearn/merging/bn.py): static merges re-estimate them
  # on a fixed calibration set of `calib_size` source training images ('recompute'), or 'merge' /
  # 'batch'; any method takes a per-row override as a suffix, e.g. methods=('mean:merge', 'eam:batch').
  c.bn = ml_collections.ConfigDict(dict(static='recompute', calib_size=256))
  c.eam = ml_collections.ConfigDict(
    dict(
      temperature=a.T,
      marginal_weight=0.0,
      gamma_ablation=1.0,
      scale=1.0,
      refine_radius=0.2,
      ema=0.0,
      bn_mode='merge',
      score_head='previous',
      chunk_size=0,
      grid_resolution=-1,
      num_random=0,
    )
  )
  # eam.chunk_size 0 = auto (1 on CPU, 16 on accelerators); grid_resolution -1 = auto.
  c.ada = ml_collections.ConfigDict(dict(lr=0.01, steps=2, clip_max=1.0, bn_mode='merge'))
  c.tent = ml_collections.ConfigDict(dict(lr=1e-3, bn_mode='batch'))
  if a.quick:
    c.model.stage_sizes, c.model.widths = (1, 1), (8, 16)
    c.train.update(
      dict(base_steps=150, expert_steps=40, expert_lr=1e-3, batch_size=32, fisher_batches=1)
    )
    c.streams = ('iid', 'dirichlet', 'continual')
    c.methods = tuple(QUICK_METHODS)
    c.eam.grid_resolution = 2
  return c


COMMON_ARGS = dict(quick=False, batch=16, alpha=0.1, T=0.05, seed=0, seeds='', targets='')
