"""Scoring a fixed (not adapting) click model with the simulated user, batched over images.

Used by pre-training's validation (Dice@k, best-checkpoint selection). It is the session of
``session.py`` with the frozen rule -- the same click step, inputs (previous-mask channel included)
and click keys -- vmapped over images, so a whole validation chunk is one jitted call.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from yiplearn import metrics, optim
from yiplearn.interactive import rules, session
from yiplearn.interactive.spec import SessionSpec

__all__ = ['frozen_state', 'make_interact', 'make_evaluator', 'clicks_reported']


def frozen_state(params: Any) -> rules.State:
  """The state of a model that does not adapt (no optimiser state)."""
  zero = jnp.zeros((), jnp.int32)
  return rules.State(optim.TrainState(params, (), zero, zero), ())


def make_interact(apply_fn: Callable, spec: SessionSpec) -> Callable:
  """``interact(params, image, gt, key) -> {union name: (T,) Dice after every click}`` (not jitted)."""
  run = session.make_session(apply_fn, spec, rules.frozen(), jit=False)
  names = [n for n, _ in spec.validate().report_unions]

  def interact(params, image, gt, key):
    _, out = run(frozen_state(params), image, gt, key)
    return {name: out.union_dice[:, i] for i, name in enumerate(names)}

  return interact


def clicks_reported(num_clicks: int) -> list[int]:
  """The k of the ``<name>@k`` metrics: 1, 5 and T where they exist."""
  return sorted({k for k in (1, 5, int(num_clicks)) if k <= int(num_clicks)})


def make_evaluator(apply_fn: Callable, spec: SessionSpec, *, batch_size: int = 16) -> Callable:
  """Returns ``evaluate(params, images, masks, key) -> {metric: float}``.

  Metrics: ``<name>@k`` the mean Dice of report union ``<name>`` after k clicks (k in
  :func:`clicks_reported`), ``<name>_auc`` the mean area under its Dice-per-click curve and ``dice@k``
  the mean over report names. Image i uses key ``split(key, n)[i]``; images are scored in jitted
  chunks of ``batch_size``.
  """
  interact = make_interact(apply_fn, spec)
  names = [n for n, _ in spec.report_unions]
  chunk = jax.jit(jax.vmap(interact, in_axes=(None, 0, 0, 0)))
  ks = clicks_reported(spec.num_clicks)

  def evaluate(params, images, masks, key) -> dict[str, float]:
    n = images.shape[0]
    keys = jax.random.split(key, n)
    parts = []
    for s in range(0, n, batch_size):
      im, gt = jnp.asarray(images[s : s + batch_size]), jnp.asarray(masks[s : s + batch_size])
      parts.append(jax.device_get(chunk(params, im, gt, keys[s : s + batch_size])))
    curves = {name: np.concatenate([p[name] for p in parts]) for name in names}
    out: dict[str, float] = {}
    for name, c in curves.items():
      for k in ks:
        out[f'{name}@{k}'] = float(np.mean(c[:, k - 1]))
      out[f'{name}_auc'] = float(np.mean(np.asarray(metrics.dice_auc(c))))
    for k in ks:
      out[f'dice@{k}'] = float(sum(out[f'{name}@{k}'] for name in names) / len(names))
    return out

  return evaluate
