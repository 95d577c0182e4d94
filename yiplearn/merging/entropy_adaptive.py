"""Entropy-adaptive online model merging (DESIGN 1.2), an `OnlineMethod` (see `merging.protocol`).

Per batch x:
  1. candidates lambda_j (J, K) on the simplex (fixed set + optional refinement around the last
     choice), times a scale s;
  2. encoder: for each candidate (vmapped in chunks of `chunk_size` via `lax.map`) merge the encoder
     theta_0e + s sum_k lambda_jk tau_ke, forward x through it and a head (by default the head
     chosen for the previous batch; `score_head='same'` merges the head with lambda_j too), score
     H_j = mean_i H(p_i) - gamma H(mean_i p_i); w = softmax(-H / T) (T = 0: argmin);
     lambda_enc = sum_j w_j lambda_j, optionally EMA-smoothed across batches;
  3. head: on the merged encoder's features, score head candidates the same way -> lambda_head;
  4. predict x with the single merged model. Forward passes only.
What a score is (`Scorer`): by default the batch's mean prediction entropy minus gamma times its
marginal entropy (`entropy_scorer`); `merging.segmentation.pixel_scorer` scores pixel maps, over
pixels chosen from all J candidates at once (the scorer's `reduce` sees them all).
BatchNorm statistics (`yiplearn.merging.bn`): the experts' statistics merged with the candidate's
coefficients normalised to the simplex (`bn_mode='merge'`), re-estimated for every merged candidate on
fixed source `calibration` images ('recompute', one calibration forward pass per candidate), or the
batch's own ('batch').
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from yiplearn import parallel
from yiplearn.merging import bn
from yiplearn.merging import candidates as cand_lib
from yiplearn.merging import tree as tr
from yiplearn.merging.protocol import (
  BN_MODES,
  OnlineMethod,
  candidate_weights,
  check,
  check_num_experts,
  copy_tree,
  entropy,
  entropy_score,
)

PyTree = Any


class EntropyAdaptiveState(NamedTuple):
  """base: theta_0 variables; tau: stacked task vectors (K, ...); lam_enc/lam_head: (K,) float32
  simplex coefficients chosen for the previous batch (before the scale); step: int32 scalar."""

  base: PyTree
  tau: PyTree
  lam_enc: jax.Array
  lam_head: jax.Array
  step: jax.Array


class Scorer(NamedTuple):
  """How candidates are scored (lower is better): `stats(logits)` of one candidate (a pytree), then
  `reduce(stats)` of the J candidates' stacked stats (leading axis J) -> scores (J,)."""

  stats: Callable[[jax.Array], PyTree]
  reduce: Callable[[PyTree], jax.Array]


def entropy_scorer(marginal_weight: float = 0.0) -> Scorer:
  """mean_i H(p_i) - gamma H(mean_i p_i) of each candidate's logits on its own (`entropy_score`)."""
  return Scorer(lambda logits: entropy_score(logits, marginal_weight), lambda scores: scores)


def _map(fn, xs: jax.Array, chunk_size: int):
  return jax.lax.map(fn, xs, batch_size=min(chunk_size, xs.shape[0]))


def score_candidates(
  model,
  base: PyTree,
  tau: PyTree,
  x: jax.Array,
  cands: jax.Array,
  *,
  scale: float = 1.0,
  head_lam: jax.Array | None = None,
  head_predicate: tr.PathPredicate = tr.has_key('head'),
  bn_mode: str = 'merge',
  marginal_weight: float = 0.0,
  chunk_size: int = 8,
  mesh: Mesh | None = None,
  calibration: jax.Array | None = None,
  scorer: Scorer | None = None,
) -> jax.Array:
  """Entropy score (J,) of every candidate `cands` (J, K) for the encoder (vmapped, chunked).

  The head is merged with `head_lam` (K,) if given, else with each candidate itself (the full
  model at lambda_j, as used for the entropy landscape). Forward passes only. With a `mesh` of
  several devices the candidates are split over its first axis (padded to a multiple of its size,
  `parallel.shard_vmapped`); each device scores its block in chunks of `chunk_size`.
  `calibration`: source images for `bn_mode='recompute'`; `scorer`: default
  `entropy_scorer(marginal_weight)`.
  """
  scorer = scorer or entropy_scorer(marginal_weight)
  head_b, enc_b = tr.partition(base, head_predicate)
  head_t, enc_t = tr.partition(tau, head_predicate)
  bn_batch = bn_mode == 'batch'
  prepare = bn.prepare_fn(model, bn_mode, calibration)
  fixed_head = None
  if head_lam is not None:
    fixed_head = tr.merge(head_b, head_t, bn.merge_coefficients(head_b, scale * head_lam))

  def stats_block(enc_b, enc_t, head_b, head_t, fixed_head, x, cands):
    def one(lam):
      enc = tr.merge(enc_b, enc_t, bn.merge_coefficients(enc_b, scale * lam))
      head = tr.merge(head_b, head_t, bn.merge_coefficients(head_b, scale * lam))
      v = prepare(tr.combine(enc, head if fixed_head is None else fixed_head))
      return scorer.stats(model.head(v, model.encode(v, x, train=bn_batch), train=bn_batch))

    return _map(one, cands, chunk_size)

  if mesh is not None:
    stats_block = parallel.shard_vmapped(stats_block, mesh, (None,) * 6 + (0,))
  return scorer.reduce(stats_block(enc_b, enc_t, head_b, head_t, fixed_head, x, cands))


def entropy_adaptive(
  model,
  num_experts: int,
  *,
  candidates: np.ndarray | None = None,
  grid_resolution: int | None = None,
  num_random: int = 0,
  temperature: float = 0.05,
  marginal_weight: float = 0.0,
  scale: float = 1.0,
  refine_radius: float = 0.0,
  ema: float = 0.0,
  bn_mode: str = 'merge',
  score_head: str = 'previous',
  decouple_head: bool = True,
  chunk_size: int = 8,
  head_predicate: tr.PathPredicate = tr.has_key('head'),
  seed: int = 0,
  mesh: Mesh | None = None,
  calibration: jax.Array | None = None,
  scorer: Scorer | None = None,
) -> OnlineMethod:
  """Entropy-adaptive online merging as an (init, update) pair; see the module docstring.

  Args:
    candidates: fixed candidate set (J, K); default `candidates.make_candidates(K, ...)`.
    temperature: T of w = softmax(-H / T); 0 = argmin.
    marginal_weight: gamma of the marginal-entropy term (0 = off).
    scale: s multiplying every candidate (coefficients on task vectors).
    refine_radius: r > 0 adds K + 1 candidates around the previous choice (0 = off).
    ema: beta in lambda_t = beta lambda_{t-1} + (1 - beta) lambda_batch (0 = no smoothing).
    score_head: head used while scoring encoder candidates: 'previous' (previous batch's
      lambda_head, uniform at the start) or 'same' (the candidate itself).
    decouple_head: False = one coefficient vector for the whole model: full-model candidates
      (`score_head` is then 'same') and lambda_head = lambda_enc.
    head_predicate: the head's leaves (for a U-Net, `merging.segmentation.decoder_predicate`).
    mesh: split the encoder candidates over this mesh's first axis (None or one device: not split).
    bn_mode, calibration: BatchNorm statistics, see the module docstring and `merging.bn`.
    scorer: how candidates are scored (default `entropy_scorer(marginal_weight)`).
  """
  check('num_experts', num_experts, num_experts >= 2, '>= 2 (one expert leaves nothing to merge)')
  check('temperature', temperature, temperature >= 0, '>= 0')
  check('ema', ema, 0 <= ema < 1, 'a value in [0, 1)')
  check('refine_radius', refine_radius, 0 <= refine_radius <= 1, 'a value in [0, 1]')
  bn.check_mode(bn_mode, calibration, BN_MODES)
  check('score_head', score_head, score_head in ('previous', 'same'), "'previous' or 'same'")
  check('chunk_size', chunk_size, chunk_size >= 1, '>= 1')
  if candidates is None:
    candidates = cand_lib.make_candidates(
      num_experts, grid_resolution=grid_resolution, num_random=num_random, seed=seed
    )
  candidates = np.asarray(candidates, np.float32)
  check(
    'candidates.shape',
    candidates.shape,
    candidates.ndim == 2 and candidates.shape[1] == num_experts,
    f'(J, {num_experts})',
  )
  fixed = jnp.asarray(candidates)
  bn_batch = bn_mode == 'batch'
  prepare = bn.prepare_fn(model, bn_mode, calibration)
  scorer = scorer or entropy_scorer(marginal_weight)
  same_head = score_head == 'same' or not decouple_head

  def all_cands(center):
    if refine_radius > 0:
      return jnp.concatenate([fixed, cand_lib.refine(center, refine_radius)], 0)
    return fixed

  def choose(scores, cands, prev, step):
    lam = candidate_weights(scores, temperature) @ cands
    if ema > 0:
      lam = jnp.where(step > 0, ema * prev + (1 - ema) * lam, lam)
    return lam

  def init(experts: PyTree, base: PyTree) -> EntropyAdaptiveState:
    check_num_experts(experts, num_experts)
    uniform = lambda: jnp.full((num_experts,), 1.0 / num_experts, jnp.float32)
    # Distinct buffers everywhere, so that the state can be donated.
    return EntropyAdaptiveState(
      copy_tree(base),
      tr.task_vectors(experts, base),
      uniform(),
      uniform(),
      jnp.zeros((), jnp.int32),
    )

  def update(state: EntropyAdaptiveState, x: jax.Array):
    head_b, enc_b = tr.partition(state.base, head_predicate)
    head_t, enc_t = tr.partition(state.tau, head_predicate)
    # 2. encoder coefficients.
    cands_e = all_cands(state.lam_enc)
    h_enc = score_candidates(
      model,
      state.base,
      state.tau,
      x,
      cands_e,
      scale=scale,
      head_lam=None if same_head else state.lam_head,
      head_predicate=head_predicate,
      bn_mode=bn_mode,
      chunk_size=chunk_size,
      mesh=mesh,
      calibration=calibration,
      scorer=scorer,
    )
    lam_enc = choose(h_enc, cands_e, state.lam_enc, state.step)
    enc = tr.merge(enc_b, enc_t, bn.merge_coefficients(enc_b, scale * lam_enc))
    feats = model.encode(prepare(tr.combine(enc, head_b)), x, train=bn_batch)
    # A head with statistics of its own (a U-Net's decoder path) gets them re-estimated too.
    head_has_stats = any(bn.is_stat(p) for p, _ in jax.tree_util.tree_leaves_with_path(head_b))
    prepare_head = prepare if head_has_stats else (lambda v: v)

    def head_at(lam):
      head = tr.merge(head_b, head_t, bn.merge_coefficients(head_b, scale * lam))
      return prepare_head(tr.combine(enc, head))

    # 3. head coefficients on the merged encoder's features.
    if decouple_head:
      cands_h = all_cands(state.lam_head)

      def head_stats(lam):
        return scorer.stats(model.head(head_at(lam), feats, train=bn_batch))

      h_head = scorer.reduce(_map(head_stats, cands_h, chunk_size))
      lam_head = choose(h_head, cands_h, state.lam_head, state.step)
    else:
      h_head, lam_head = h_enc, lam_enc
    # 4. predict with the single merged model.
    logits = model.head(head_at(lam_head), feats, train=bn_batch)
    new_state = EntropyAdaptiveState(state.base, state.tau, lam_enc, lam_head, state.step + 1)
    info = {
      'lam_enc': lam_enc,
      'lam_head': lam_head,
      'enc_scores': h_enc,
      'head_scores': h_head,
      'entropy': jnp.mean(entropy(logits)),
    }
    return new_state, logits, info

  return OnlineMethod(init, update)
