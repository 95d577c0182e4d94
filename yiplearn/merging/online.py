"""All online merging methods in one namespace (the `OnlineMethod` protocol and its implementations).

The protocol and its shared helpers live in `yiplearn.merging.protocol`, entropy-adaptive merging in
`yiplearn.merging.entropy_adaptive`; `from yiplearn.merging import online` keeps working for both:

    method = online.entropy_adaptive(model, num_experts=K)
    state = method.init(stacked_experts, base)
    state, logits, info = jax.jit(method.update, donate_argnums=0)(state, x)
"""

from yiplearn.merging.entropy_adaptive import (
  EntropyAdaptiveState,
  entropy_adaptive,
  score_candidates,
)
from yiplearn.merging.protocol import (
  BN_MODES,
  FixedState,
  InitFn,
  OnlineMethod,
  UpdateFn,
  candidate_weights,
  check,
  copy_tree,
  entropy,
  entropy_score,
  fixed_model,
)

__all__ = [
  'BN_MODES',
  'EntropyAdaptiveState',
  'FixedState',
  'InitFn',
  'OnlineMethod',
  'UpdateFn',
  'candidate_weights',
  'check',
  'copy_tree',
  'entropy',
  'entropy_adaptive',
  'entropy_score',
  'fixed_model',
  'score_candidates',
]
