"""Scoring a fixed (not adapting) click model with the simulated user, batched over images.

Used by pre-training's validation (Dice@k, best-checkpoint selection). The online protocol with
updates lives in `session.py`; this is the same interaction with the parameters held fixed, so
a whole validation set is one `vmap` over images of one `lax.scan` over clicks.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import jax
import jax.numpy as jnp

from yiplearn import clicks as clicks_lib
from yiplearn import metrics
from yiplearn.interactive import user


def interact(
  apply_fn: Callable,
  params,
  image: jax.Array,
  gt: jax.Array,
  key: jax.Array,
  *,
  num_classes: int,
  num_clicks: int,
  click_cfg,
  report: Mapping[str, Sequence[int]],
) -> dict[str, jax.Array]:
  """One image, fixed params: click 1 in the GT, then a correction click after each prediction.

  Returns per-click curves {name: (num_clicks,)} of the Dice of each `report` class union.
  """

  def predict(cl):
    x = clicks_lib.model_input(
      image,
      cl,
      num_classes,
      encoding=click_cfg.encoding,
      sigma=click_cfg.sigma,
      radius=click_cfg.radius,
    )
    pred = jnp.argmax(apply_fn(params, x[None])[0], axis=-1).astype(jnp.int32)
    return pred, jnp.stack([metrics.foreground_dice(pred, gt, tuple(c)) for c in report.values()])

  coord, label, valid = user.first_click(jax.random.fold_in(key, 0), gt, policy=click_cfg.policy)
  first = clicks_lib.add_click(clicks_lib.empty_clicks(num_clicks), 0, coord, label, valid)
  pred0, scores0 = predict(first)

  def body(carry, t):
    cl, pred = carry
    coord, label, valid = user.correction_click(
      jax.random.fold_in(key, t), gt, pred, num_classes, policy=click_cfg.policy
    )
    cl = clicks_lib.add_click(cl, t, coord, label, valid)
    pred, scores = predict(cl)
    return (cl, pred), scores

  _, rest = jax.lax.scan(body, (first, pred0), jnp.arange(1, num_clicks))
  curves = jnp.concatenate([scores0[None], rest])
  return {name: curves[:, i] for i, name in enumerate(report)}


def make_evaluator(
  apply_fn: Callable,
  *,
  num_classes: int,
  num_clicks: int,
  click_cfg,
  report: Mapping[str, Sequence[int]],
  batch_size: int = 16,
):
  """Returns `evaluate(params, images, masks, key) -> {metric: float}` with `<name>@<k>` and `<name>_auc`.

  `<name>@k` is the mean Dice of report class union `<name>` after k clicks (k = 1, 5 and
  `num_clicks` where they exist), `dice@k` the mean over report names; images are scored in
  jitted chunks of `batch_size`.
  """
  report = {k: tuple(int(c) for c in v) for k, v in report.items()}

  @jax.jit
  def chunk(params, images, masks, keys):
    fn = lambda im, gt, k: interact(
      apply_fn,
      params,
      im,
      gt,
      k,
      num_classes=num_classes,
      num_clicks=num_clicks,
      click_cfg=click_cfg,
      report=report,
    )
    return jax.vmap(fn)(images, masks, keys)

  ks = sorted({k for k in (1, 5, num_clicks) if k <= num_clicks})

  def evaluate(params, images, masks, key) -> dict[str, float]:
    n = images.shape[0]
    keys = jax.random.split(key, n)
    parts = []
    for s in range(0, n, batch_size):
      parts.append(
        jax.device_get(
          chunk(
            params,
            jnp.asarray(images[s : s + batch_size]),
            jnp.asarray(masks[s : s + batch_size]),
            keys[s : s + batch_size],
          )
        )
      )
    curves = {name: jnp.concatenate([p[name] for p in parts]) for name in report}
    out: dict[str, float] = {}
    for name, c in curves.items():
      for k in ks:
        out[f'{name}@{k}'] = float(jnp.mean(c[:, k - 1]))
      out[f'{name}_auc'] = float(jnp.mean(metrics.dice_auc(c)))
    for k in ks:
      out[f'dice@{k}'] = float(sum(out[f'{name}@{k}'] for name in report) / len(report))
    return out

  return evaluate
