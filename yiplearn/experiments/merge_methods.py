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
  'eam_bnbatch'        ... with BatchNorm statistics of the batch (the same as 'eam:batch')

BatchNorm statistics (`yiplearn.merging.bn`): a name may end in `:merge`, `:recompute` or `:batch`
to set that method's statistics (rows keep the suffix, e.g. 'mean:merge'); without one, static merges
use `config.bn.static` (default 'recompute': re-estimated for the merged weights on a fixed calibration
set of `config.bn.calib_size` source training images, `calibration_images`), the experts their own
statistics, entropy-adaptive merging `config.eam.bn_mode`, AdaMerging `config.ada.bn_mode`, the
ensembles each expert's own, Tent `config.tent.bn_mode` (default 'batch', as Tent does).
Fisher merging normalises each expert's Fisher by its global L2 norm (`config.static.fisher_normalize`,
as the reference implementations do; False weights by the raw Fisher).
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np

from yiplearn import errors, parallel
from yiplearn.merging import adamerging, bn, ensemble, online, static, tent
from yiplearn.merging import tree as tr

STATIC = ('mean', 'task_arithmetic', 'ties', 'dare', 'fisher')
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


def split_name(name: str) -> tuple[str, str | None]:
  """'mean:merge' -> ('mean', 'merge'); 'mean' -> ('mean', None). Raises a UserError otherwise."""
  base, _, mode = name.partition(':')
  if base not in KNOWN:
    raise errors.invalid('methods entry', name, f'one of {KNOWN} (optionally :<bn mode>)')
  if mode and mode not in bn.MODES:
    raise errors.invalid('methods entry', name, f'a BatchNorm suffix in {bn.MODES}')
  return base, (mode or None)


def calibration_images(config: Any, data: dict, sources: list[str]) -> np.ndarray:
  """The fixed calibration set: `config.bn.calib_size` training images drawn evenly from the source
  domains (without replacement, by `config.seed`), for re-estimating BatchNorm statistics."""
  n = int(config.get('bn', {}).get('calib_size', 256))
  rng = np.random.default_rng(config.seed + 7)
  per = [n // len(sources) + (i < n % len(sources)) for i in range(len(sources))]
  parts = []
  for s, m in zip(sources, per):
    x = data[s]['train'][0]
    parts.append(x[np.sort(rng.choice(len(x), min(m, len(x)), replace=False))])
  return np.concatenate(parts).astype(np.float32)


def bn_mode_for(config: Any, name: str) -> str:
  """The BatchNorm mode of a `config.methods` entry (its suffix, else the family default)."""
  base, mode = split_name(name)
  if mode:
    return mode
  if base in STATIC:
    return config.get('bn', {}).get('static', 'recompute')
  if base.startswith('eam'):
    return 'batch' if base == 'eam_bnbatch' else config.eam.bn_mode
  if base.startswith('adamerging'):
    return config.ada.get('bn_mode', 'merge')
  if base == 'tent':
    return config.tent.get('bn_mode', 'batch')
  return 'merge'  # experts and ensembles: each expert's own statistics


def needs_calibration(config: Any) -> bool:
  """Whether some method in `config.methods` re-estimates BatchNorm statistics."""
  return any(bn_mode_for(config, n) == 'recompute' for n in config.methods)


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
    score_head=e.score_head,
    chunk_size=auto_chunk(int(e.chunk_size)),
    grid_resolution=None if int(e.grid_resolution) < 0 else int(e.grid_resolution),
    num_random=int(e.num_random),
    seed=0,
  )
  kw.update(overrides)
  return online.entropy_adaptive(model, k, **kw)


def _params_only(merge_fn):
  """Applies a task-vector merge to `params` only; other collections (BatchNorm statistics) get the
  experts' mean, i.e. merged with the (equal) coefficients normalised to the simplex (bn mode
  'merge'; 'recompute' then replaces them): trimming, dropping or summing running variances with the
  weights' rule breaks them."""

  def fn(ex, b):
    out = {c: static.mean_merge(ex[c]) for c in ex if c != 'params'}
    out['params'] = merge_fn(ex['params'], b['params'])
    return out

  return fn


def build(
  config: Any, fam, calibration: np.ndarray | None = None
) -> dict[str, online.OnlineMethod]:
  """{row name: OnlineMethod} for `config.methods` and the family `fam` (train_experts.Family);
  `calibration`: source images for the methods whose BatchNorm mode is 'recompute'."""
  model, k = fam.model, len(fam.experts)
  s, e = config.static, config.eam
  mesh = candidate_mesh(config) if any(n.startswith('eam') for n in config.methods) else None
  out: dict[str, online.OnlineMethod] = {}
  for row in config.methods:
    name, suffix = split_name(row)
    mode = bn_mode_for(config, row)
    cal = dict(bn_mode=mode, calibration=calibration if mode == 'recompute' else None)
    fixed = lambda fn, cal=cal: online.fixed_model(model, fn, **cal)
    if name == 'experts':
      for i, d in enumerate(fam.sources):
        out[f'expert_{d}' + (f':{suffix}' if suffix else '')] = fixed(
          lambda ex, b, i=i: jax.tree.map(lambda a: a[i], ex)
        )
    elif name == 'mean':
      out[row] = fixed(lambda ex, b: static.mean_merge(ex))
    elif name == 'task_arithmetic':
      out[row] = fixed(_params_only(lambda ex, b: static.task_arithmetic(ex, b, float(s.ta_scale))))
    elif name == 'ties':
      out[row] = fixed(
        _params_only(
          lambda ex, b: static.ties_merge(ex, b, float(s.ties_density), float(s.ties_scale))
        )
      )
    elif name == 'dare':
      out[row] = fixed(
        _params_only(
          lambda ex, b: static.dare_merge(
            ex,
            b,
            jax.random.key(config.seed),
            float(s.dare_rate),
            then='task_arithmetic',
            scale=float(s.ta_scale),
          )
        )
      )
    elif name == 'fisher':
      if fam.fishers is None:
        raise errors.invalid('methods entry', row, 'Fisher estimates (train_family with_fisher)')
      fishers = {'params': tr.stack(fam.fishers)}
      if bool(s.get('fisher_normalize', True)):  # each expert's Fisher over its global L2 norm
        fishers = {'params': static.normalize_fishers(fishers['params'])}

      def fisher_fn(ex, b, fishers=fishers):
        # BN running statistics follow the Fisher of their module's scale/bias (per channel).
        f = dict(fishers, **{c: None for c in ex if c not in ('params', 'batch_stats')})
        if 'batch_stats' in ex:
          f['batch_stats'] = static.batch_stats_fisher(fishers['params'], ex['batch_stats'])
        return static.fisher_merge(ex, f, normalize=False)

      out[row] = fixed(fisher_fn)
    elif name == 'ensemble_mean':
      out[row] = ensemble.output_ensemble(model, weighting='mean', **cal)
    elif name == 'ensemble_entropy':
      out[row] = ensemble.output_ensemble(
        model, weighting='entropy', temperature=float(e.temperature), **cal
      )
    elif name.startswith('adamerging'):
      a = config.ada
      out[row] = adamerging.adamerging(
        model,
        k,
        layerwise=name.endswith('layer'),
        learning_rate=float(a.lr),
        steps=int(a.steps),
        clip_max=float(a.get('clip_max', 1.0)),
        **cal,
      )
    elif name == 'tent':
      out[row] = tent.tent(model, learning_rate=float(config.tent.lr), **cal)
    elif name in ('eam', 'eam_bnbatch'):
      out[row] = _eam(model, k, e, mesh, **cal)
    elif name == 'eam_coupled':
      out[row] = _eam(model, k, e, mesh, decouple_head=False, score_head='same', **cal)
    elif name == 'eam_argmin':
      out[row] = _eam(model, k, e, mesh, temperature=0.0, **cal)
    elif name == 'eam_marginal':
      out[row] = _eam(model, k, e, mesh, marginal_weight=float(e.gamma_ablation), **cal)
  return out
