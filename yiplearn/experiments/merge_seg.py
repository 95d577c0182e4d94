"""Leave-one-domain-out online merging of segmentation U-Nets (DESIGN 1.3), over seeds.

Launch (see configs/merge_seg_lgg.py, configs/merge_seg_fundus.py):
  python -m launch.run --config configs/merge_seg_lgg.py:quick --workdir runs/merge_seg_quick
  python -m launch.run --config configs/merge_seg_lgg.py:seeds=0;1;2 --workdir runs/merge_seg_lgg

For every seed in `config.seeds` and every target in `config.targets` (default: every domain) a
shared base U-Net (image channels only) is trained briefly on the pooled source domains and one
expert fine-tuned from it per source (`train_experts.train_family`, checkpointed under
`checkpoints/seed<s>/<target>/`). Streams (`config.streams`): 'iid' over the unseen target's images
(all its splits: no model saw them), 'mixed' and 'continual' (site after site, target first) over
the target's images and the sources' test splits. Every method in `config.methods` runs on every
stream; Dice is the mean over images of the mean foreground-class Dice, each image scored once as
its batch arrives.

Methods: 'experts' (rows expert_<domain>; `best_expert` is the oracle-best per stream), 'mean',
'task_arithmetic', 'ties', 'dare', 'fisher', 'ensemble_mean', 'ensemble_entropy',
'adamerging_task', 'adamerging_layer', 'tent' (as `merge_methods`), and the segmentation
entropy-adaptive variants of `EAM_VARIANTS` ('eam': decoupled encoder / decoder paths, mean
pixel entropy; 'eam_coupled', 'eam_argmin', 'eam_fg' (foreground pixels), 'eam_marginal',
'eam_fg_marginal').

Writes to the workdir:
  results/merge_seg_dice.{md,csv,json}     Dice per target x stream x method: mean +- std over seeds
  results/merge_seg_summary.{md,csv,json}  per method x stream: mean over targets, mean +- std over seeds
  results/merge_seg_candidates.{md,csv,json}  the best candidate by Dice per batch against entropy's
      choices (`merge_seg_diagnostics`); results/merge_seg_best_candidate.jsonl per batch
  results/merge_seg_trace.jsonl            per batch: coefficients (lambda_enc / lambda_dec, AdaMerging
      lambda, ensemble weights), batch Dice, majority domain
  results/landscape_<target>_seed<s>.json, plots/landscape_<target>_seed<s>.png   K = 3: entropy
      (mean and foreground) and Dice over the simplex for the same candidates
  streams/seed<s>/<target>/<method>__<stream>/  checkpoints every `checkpoint_every` batches; a run
      killed at any point and started again ends with byte-identical results
  checkpoints/seed<s>/<target>/  base, experts, Fisher; partial/seed<s>/<target>.json finished targets
"""

from __future__ import annotations

import collections
import os
from typing import Any

import jax
import ml_collections
import numpy as np
from absl import logging

from yiplearn import errors
from yiplearn.experiments import (
  merge_methods,
  merge_online,
  merge_seg_diagnostics,
  seg_common,
  train_experts,
)
from yiplearn.experiments import seeds as seeds_lib
from yiplearn.io import files, tables
from yiplearn.merging import segmentation
from yiplearn.merging import tree as tr

STREAMS = ('iid', 'mixed', 'continual')
EAM_VARIANTS = {
  'eam': {},
  'eam_coupled': {'decouple': False},
  'eam_argmin': {'temperature': 0.0},
  'eam_fg': {'scoring': 'foreground'},
  'eam_marginal': {'marginal': True},
  'eam_fg_marginal': {'scoring': 'foreground', 'marginal': True},
}
BASELINES = tuple(m for m in merge_methods.KNOWN if not m.startswith('eam'))
KNOWN = BASELINES + tuple(EAM_VARIANTS)


def validate(config: Any) -> None:
  """The fields users set most, checked before any data is built or model trained."""
  if not tuple(config.methods):
    raise errors.invalid('methods', (), f'at least one of {KNOWN}')
  for m in config.methods:
    if m not in KNOWN:
      raise errors.invalid('methods entry', m, f'one of {KNOWN}')
  if not tuple(config.streams):
    raise errors.invalid('streams', (), f'at least one of {STREAMS}')
  for s in config.streams:
    if s not in STREAMS:
      raise errors.invalid(
        'streams entry', s, f'one of {STREAMS} (segmentation has no labels to shift)'
      )
  if len(tuple(config.data.domains)) < 3:
    raise errors.invalid('data.domains', tuple(config.data.domains), 'at least 3 domains')
  if not tuple(config.seeds):
    raise errors.invalid('seeds', (), 'at least one seed')
  if config.model.get('arch', 'unet') != 'unet':
    raise errors.invalid('model.arch', config.model.arch, "'unet'")
  if 'tent' in config.methods and config.model.norm not in ('group', 'batch'):
    raise errors.invalid(
      'model.norm', config.model.norm, "'group' or 'batch' for tent (affine norms)"
    )
  train_experts.validate(config)
  for name, value in (
    ('stream.batch_size', config.stream.batch_size),
    ('checkpoint_every', config.checkpoint_every),
    ('tent.lr', config.tent.lr),
    ('ada.lr', config.ada.lr),
  ):
    if not value > 0:
      raise errors.invalid(name, value, 'a positive number')


def seg_eam(
  model, k: int, e: Any, *, decouple=True, temperature=None, scoring=None, marginal=False
):
  return segmentation.entropy_adaptive(
    model,
    k,
    temperature=float(e.temperature if temperature is None else temperature),
    scoring=scoring or e.scoring,
    marginal_weight=float(e.gamma_ablation if marginal else e.marginal_weight),
    scale=float(e.scale),
    refine_radius=float(e.refine_radius),
    ema=float(e.ema),
    score_decoder=e.score_head,
    decouple=decouple,
    chunk_size=merge_methods.auto_chunk(int(e.chunk_size)),
    grid_resolution=None if int(e.grid_resolution) < 0 else int(e.grid_resolution),
    num_random=int(e.num_random),
  )


def build_methods(config: Any, fam, data: dict) -> dict:
  """{row name: OnlineMethod}: the baselines through `merge_methods.build` (BatchNorm options as
  there; a GroupNorm U-Net has no statistics), then the segmentation entropy-adaptive variants."""
  sub = ml_collections.ConfigDict(config.to_dict())
  sub.methods = tuple(m for m in config.methods if m in BASELINES)
  out = {}
  if sub.methods:
    calib = None
    if merge_methods.needs_calibration(sub):
      calib = merge_methods.calibration_images(sub, data, fam.sources)
    out = merge_methods.build(sub, fam, calib)
  for name in config.methods:
    if name in EAM_VARIANTS:
      out[name] = seg_eam(fam.model, len(fam.experts), config.eam, **EAM_VARIANTS[name])
  return out


def target_data(data: dict, target: str) -> dict:
  """The target's images are all unseen: its stream uses every split of it."""
  out = dict(data)
  x = np.concatenate([data[target]['train'][0], data[target]['test'][0]])
  y = np.concatenate([data[target]['train'][1], data[target]['test'][1]])
  out[target] = {'train': data[target]['train'], 'test': (x, y)}
  return out


def _dirs(workdir: str, seed: int, target: str) -> dict[str, str]:
  sub = os.path.join(f'seed{seed}', target)
  return {k: os.path.join(workdir, k, sub) for k in ('checkpoints', 'streams', 'partial')}


def run_target(config: Any, data: dict, num_classes: int, target: str, workdir: str) -> tuple:
  """Every method on every stream of one target for `config.seed` (rows of the Dice table)."""
  sources = [d for d in config.data.domains if d != target]  # an extra target is never a source
  dirs = _dirs(workdir, config.seed, target)
  ckpt_root = _dirs(config.get('experts_workdir', '') or workdir, config.seed, target)[
    'checkpoints'
  ]
  fam = train_experts.train_family(
    config, data, num_classes, sources, ckpt_root, with_fisher='fisher' in config.methods
  )
  tr.check_experts(fam.experts, fam.sources)
  experts, base = tr.stack(fam.experts), fam.base
  methods = build_methods(config, fam, data)
  streams = merge_online.build_streams(config, target_data(data, target), target, sources)
  rows = []
  for mname, method in methods.items():
    update = jax.jit(method.update, donate_argnums=0)
    for sname, stream in streams.items():
      meta = {'seed': int(config.seed), 'target': target, 'stream': sname, 'method': mname}
      res, _ = merge_online.run_stream_resumable(
        update,
        lambda method=method: method.init(experts, base),
        stream,
        stream_dir=dirs['streams'],
        name=f'{mname}__{sname}',
        meta=meta,
        checkpoint_every=int(config.checkpoint_every),
        metric=segmentation.dice,
        metric_name='dice',
      )
      rows.append(dict(meta, dice=res['dice'], n=res['n'], skipped=res['skipped']))
  for sname in streams:
    singles = [r for r in rows if r['stream'] == sname and r['method'].startswith('expert_')]
    if singles:
      best = max(singles, key=lambda r: r['dice'])
      rows.append(dict(best, method='best_expert', skipped=0))
  eam = next((m for m in config.methods if m in EAM_VARIANTS), None)
  diag = []
  if eam is not None and config.get('diagnostics', True):
    diag = merge_seg_diagnostics.run(config, fam, experts, base, streams, workdir, target, eam)
  return rows, diag


def run_seed(config: Any, data: dict, num_classes: int, workdir: str) -> tuple[list, list]:
  targets = list(config.get('targets', ()) or ()) or list(data)
  rows, diag = [], []
  for target in targets:
    if target not in data:
      raise errors.invalid('targets entry', target, f'one of {sorted(data)}')
    partial = _dirs(workdir, config.seed, target)['partial'] + '.json'
    if os.path.exists(partial):
      done = files.read_json(partial)
    else:
      r, d = run_target(config, data, num_classes, target, workdir)
      done = {'rows': r, 'diagnostics': d}
      if files.is_writer():
        files.atomic_write_json(partial, done)
    rows.extend(done['rows'])
    diag.extend(done['diagnostics'])
  return rows, diag


def aggregate(rows: list[dict]) -> tuple[list[dict], list[dict]]:
  """(per target x stream x method; per method with one column per stream, the mean over targets),
  each cell 'mean ± std' over seeds (`seeds.aggregate`). expert_<d> rows are left out of the
  summary."""
  by_seed = collections.defaultdict(list)
  for r in rows:
    by_seed[r['seed']].append({k: r[k] for k in ('target', 'stream', 'method', 'dice')})
  per, _ = seeds_lib.aggregate(by_seed, keys=('target', 'stream', 'method'))
  summaries = {}
  for seed, seed_rows in by_seed.items():
    cell = collections.defaultdict(list)
    for r in seed_rows:
      if not r['method'].startswith('expert_'):
        cell[r['method']].append(r)
    summaries[seed] = []
    for method, method_rows in cell.items():
      streams = collections.defaultdict(list)
      for r in method_rows:
        streams[r['stream']].append(r['dice'])
      summaries[seed].append({'method': method, **{k: np.mean(v) for k, v in streams.items()}})
  summary, _ = seeds_lib.aggregate(summaries, keys=('method',))
  return per, summary


def run(config: Any, workdir: str) -> dict:
  validate(config)
  data, num_classes = seg_common.load_domains(config.data, workdir)
  rows, diag = [], []
  for seed in config.seeds:
    c = ml_collections.ConfigDict(config.to_dict())
    c.seed = int(seed)
    r, d = run_seed(c, data, num_classes, workdir)
    rows.extend(r)
    diag.extend(d)
  res = os.path.join(workdir, 'results')
  if not files.is_writer():
    return {'rows': rows}
  traces = []
  for r in rows:
    path = os.path.join(
      _dirs(workdir, r['seed'], r['target'])['streams'], f'{r["method"]}__{r["stream"]}.jsonl'
    )
    if r['method'] != 'best_expert' and os.path.exists(path):
      with open(path, encoding='utf-8') as f:
        traces.append(f.read())
  files.atomic_write_text(os.path.join(res, 'merge_seg_trace.jsonl'), ''.join(traces))
  per, summary = aggregate(rows)
  tables.write_table(
    os.path.join(res, 'merge_seg_dice'),
    per,
    title='Online Dice per target, stream and method, mean ± std over seeds',
  )
  md = tables.write_table(
    os.path.join(res, 'merge_seg_summary'),
    summary,
    title='Dice per method and stream: mean over targets, mean ± std over seeds',
  )
  merge_seg_diagnostics.write(workdir, diag)
  logging.info('\n%s', md)
  return {'rows': rows, 'summary': summary, 'diagnostics': diag}
