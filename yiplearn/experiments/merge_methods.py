"""The online methods of `merge_online`, built by name from the config.

`config.methods` lists names:
  'experts'            every expert alone (rows `expert_<domain>`)
  'mean', 'task_arithmetic', 'ties', 'dare', 'fisher'   static merges (config.static)
  'ensemble_mean', 'ensemble_entropy'                   output ensembles (config.eam.temperature)
  'adamerging_task', 'adamerging_layer'                 AdaMerging (config.ada)
  'tent'                                                Tent on the mean merge (config.tent)
  'eam'                entropy-adaptive merging with config.eam
  'eam_coupled'        ... with lambda_head = lambda_enc (no decoupled head search)
  'eam_argmin'         ... with T = 0
  'eam_marginal'       ... with the marginal-entropy term (gamma = config.eam.gamma_ablation)
  'eam_bnbatch'        ... with BatchNorm statistics of the batch
"""

from __future__ import annotations

from typing import Any

import jax

from yiplearn import parallel
from yiplearn.merging import adamerging, ensemble, online, static, tent
from yiplearn.merging import tree as tr

KNOWN = (
  'experts',
  'mean',
  'task_arithmetic',
  'ties',
  'dare',
  'fisher',
  'ensemble_mean',
  'ensemble_entropy',
  'adamerging_task',
  'adamerging_layer',
  'tent',
  'eam',
  'eam_coupled',
  'eam_argmin',
  'eam_marginal',
  'eam_bnbatch',
)


def auto_chunk(chunk_size: int) -> int:
  """0 = automatic: 1 on CPU (XLA:CPU runs vmapped per-candidate convolutions as slow grouped
  convolutions; a sequential scan is ~5x faster, see benchmarks/bench_merging.py), else 16."""
  if chunk_size > 0:
    return chunk_size
  return 1 if jax.default_backend() == 'cpu' else 16


def candidate_mesh(config: Any):
  """The mesh that entropy-adaptive candidates are split over: `config.mesh` over this process's
  devices (each process runs the whole online stream; a stream is sequential, candidates are not).
  One device: None (the plain chunked loop)."""
  mesh = parallel.mesh_from_config(config.get('mesh', None), devices=jax.local_devices())
  return mesh if mesh.size > 1 else None


def _eam(model, k: int, e: Any, mesh=None, **overrides) -> online.OnlineMethod:
  kw = dict(
    mesh=mesh,
    temperature=float(e.temperature),
    marginal_weight=float(e.marginal_weight),
    scale=float(e.scale),
    refine_radius=float(e.refine_radius),
    ema=float(e.ema),
    bn_mode=e.bn_mode,
    score_head=e.score_head,
    chunk_size=auto_chunk(int(e.chunk_size)),
    grid_resolution=None if int(e.grid_resolution) < 0 else int(e.grid_resolution),
    num_random=int(e.num_random),
    seed=0,
  )
  kw.update(overrides)
  return online.entropy_adaptive(model, k, **kw)


def _params_only(merge_fn):
  """Applies a task-vector merge to `params` only; other collections (BatchNorm statistics) are
  averaged: trimming/dropping/summing running variances with the weights' rule breaks them."""

  def fn(ex, b):
    out = {c: static.mean_merge(ex[c]) for c in ex if c != 'params'}
    out['params'] = merge_fn(ex['params'], b['params'])
    return out

  return fn


def build(config: Any, fam) -> dict[str, online.OnlineMethod]:
  """{row name: OnlineMethod} for `config.methods` and the family `fam` (train_experts.Family)."""
  model, k = fam.model, len(fam.experts)
  s, e = config.static, config.eam
  mesh = candidate_mesh(config) if any(n.startswith('eam') for n in config.methods) else None
  out: dict[str, online.OnlineMethod] = {}
  for name in config.methods:
    if name not in KNOWN:
      raise ValueError(f'methods entry {name!r}; expected one of {KNOWN}')
    if name == 'experts':
      for i, d in enumerate(fam.sources):
        out[f'expert_{d}'] = online.fixed_model(
          model, lambda ex, b, i=i: jax.tree.map(lambda a: a[i], ex)
        )
    elif name == 'mean':
      out[name] = online.fixed_model(model, lambda ex, b: static.mean_merge(ex))
    elif name == 'task_arithmetic':
      out[name] = online.fixed_model(
        model, _params_only(lambda ex, b: static.task_arithmetic(ex, b, float(s.ta_scale)))
      )
    elif name == 'ties':
      out[name] = online.fixed_model(
        model,
        _params_only(
          lambda ex, b: static.ties_merge(ex, b, float(s.ties_density), float(s.ties_scale))
        ),
      )
    elif name == 'dare':
      out[name] = online.fixed_model(
        model,
        _params_only(
          lambda ex, b: static.dare_merge(
            ex,
            b,
            jax.random.key(config.seed),
            float(s.dare_rate),
            then='task_arithmetic',
            scale=float(s.ta_scale),
          )
        ),
      )
    elif name == 'fisher':
      if fam.fishers is None:
        raise ValueError("methods entry 'fisher' needs Fisher estimates (train_family with_fisher)")
      fishers = {'params': tr.stack(fam.fishers)}

      def fisher_fn(ex, b, fishers=fishers):
        # BN running statistics follow the Fisher of their module's scale/bias (per channel).
        f = dict(fishers, **{c: None for c in ex if c not in ('params', 'batch_stats')})
        if 'batch_stats' in ex:
          f['batch_stats'] = static.batch_stats_fisher(fishers['params'], ex['batch_stats'])
        return static.fisher_merge(ex, f)

      out[name] = online.fixed_model(model, fisher_fn)
    elif name == 'ensemble_mean':
      out[name] = ensemble.output_ensemble(model, weighting='mean')
    elif name == 'ensemble_entropy':
      out[name] = ensemble.output_ensemble(
        model, weighting='entropy', temperature=float(e.temperature)
      )
    elif name.startswith('adamerging'):
      a = config.ada
      out[name] = adamerging.adamerging(
        model, k, layerwise=name.endswith('layer'), learning_rate=float(a.lr), steps=int(a.steps)
      )
    elif name == 'tent':
      out[name] = tent.tent(model, learning_rate=float(config.tent.lr))
    elif name == 'eam':
      out[name] = _eam(model, k, e, mesh)
    elif name == 'eam_coupled':
      out[name] = _eam(model, k, e, mesh, decouple_head=False, score_head='same')
    elif name == 'eam_argmin':
      out[name] = _eam(model, k, e, mesh, temperature=0.0)
    elif name == 'eam_marginal':
      out[name] = _eam(model, k, e, mesh, marginal_weight=float(e.gamma_ablation))
    elif name == 'eam_bnbatch':
      out[name] = _eam(model, k, e, mesh, bn_mode='batch')
  return out
