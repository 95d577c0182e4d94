"""Click choice for click pre-training (DESIGN 1.1, "Click pre-training"), pure and jittable.

Per sample: a first click (:func:`user.first_click`), a prediction from it (the caller's model),
then clicks in that prediction's error components. Two samplers (static ``sampler``):

* ``'paper'`` [default]: the first click is a training click; each further click's class is
  drawn uniformly among the classes that still have an unclicked error component (class = the
  true class there), and that class's largest unclicked component gets the click (ties: raster
  order). A slot is invalid once no component is left.
* ``'released'`` (the authors' code): the first click only conditions the prediction and is not a
  training click; each click's class is drawn uniformly among all K classes; a class's clicks come
  from its components sorted by area, where a component of area a also contributes entries of area
  a // 2, a // 4, ... while the last entry exceeds ``min_area`` (each entry a fresh pixel of the
  component; ties keep the released insertion order: predicted class, then raster order); a class
  with no entry left gets a pixel of ``target == class`` (a pixel of the whole image labelled with
  ``target`` there if the class is absent). Every slot is valid; the caller draws one click count
  per batch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp

from yiplearn import clicks as clicks_lib
from yiplearn import errors
from yiplearn.clicks import Clicks
from yiplearn.interactive import user

__all__ = ['SAMPLERS', 'training_clicks', 'pretraining_clicks']

SAMPLERS = ('paper', 'released')


def _min_areas(min_area: int | Sequence[int], num_classes: int) -> jax.Array:
  areas = (min_area,) * num_classes if isinstance(min_area, int) else tuple(min_area)
  if len(areas) != num_classes or min(areas) < 0:
    raise errors.invalid('min_area', min_area, f'an int >= 0 or {num_classes} of them (per class)')
  return jnp.asarray(areas, jnp.int32)


def _paper_step(key, labels, sizes, cls, num_classes, policy):
  def step(remaining, i):
    k_cls, k_px = jax.random.split(jax.random.fold_in(key, i))
    has = jnp.zeros(num_classes, jnp.int32).at[cls].max(remaining.astype(jnp.int32)) > 0
    c = jax.random.categorical(k_cls, jnp.where(has | ~has.any(), 0.0, -jnp.inf))
    cand = remaining & (cls == c)
    best = jnp.argmax(jnp.where(cand, sizes, -1))  # ties: lower id (raster order)
    ok = cand[best]
    coord = user.pick_pixel(k_px, (labels == best) & ok, policy)
    remaining = remaining.at[best].set(False)
    return remaining, (coord, jnp.where(ok, c, 0).astype(jnp.int32), ok)

  return step, sizes > 0


def _released_step(key, target, labels, sizes, cls, pcls, num_classes, policy, min_areas):
  ids = jnp.arange(sizes.shape[0], dtype=jnp.int32)
  order = pcls * sizes.shape[0] + ids  # the released insertion order: lower first among ties

  def step(carry, i):
    level, alive = carry
    k_cls, k_px = jax.random.split(jax.random.fold_in(key, i))
    c = jax.random.randint(k_cls, (), 0, num_classes)
    area = jnp.right_shift(sizes, level)
    cand = alive & (cls == c)
    top = cand & (area == jnp.max(jnp.where(cand, area, -1)))
    best = jnp.argmax(jnp.where(top, -order, jnp.iinfo(jnp.int32).min))
    has = cand.any()
    present = (target == c).any()
    fallback = jnp.where(present, target == c, True)
    coord = user.pick_pixel(k_px, jnp.where(has, labels == best, fallback), policy)
    label = jnp.where(has | present, c, target[coord[0], coord[1]]).astype(jnp.int32)
    level = level.at[best].add(has.astype(jnp.int32))
    alive = alive.at[best].set(jnp.where(has, area[best] > min_areas[c], alive[best]))
    return (level, alive), (coord, label, jnp.asarray(True))

  return step, (jnp.zeros_like(sizes), sizes > 0)


def training_clicks(
  key: jax.Array,
  target: jax.Array,
  pred: jax.Array,
  num_classes: int,
  n: int,
  *,
  policy: str = 'random_in_largest',
  sampler: str = 'paper',
  min_area: int | Sequence[int] = 150,
) -> Clicks:
  """``n`` (static) clicks in the error components of ``pred`` against ``target``.

  Args:
    key: PRNG key; click i uses ``fold_in(key, i)``.
    target: (H, W) int ground truth; pred: (H, W) int prediction from the first click.
    num_classes: K (static).
    n: capacity, >= 1 (static).
    policy: how a pixel of the chosen component is picked (see :mod:`user`).
    sampler: 'paper' or 'released' (module docstring).
    min_area: the released area-halving threshold in pixels, one int or one per class (the
      released code: 150, and 80 for the fundus cup, at 512 x 512 fundus / 256 x 256 brain).

  Returns:
    Clicks of capacity n (the order they were drawn in).
  """
  user.check_choice('sampler', sampler, SAMPLERS)
  user.check_errors_args(target, pred, num_classes, policy, 'first', n)
  k = int(num_classes)
  labels, sizes = user.error_regions(target, pred, k)
  cls = user.region_values(target, labels)
  if sampler == 'paper':
    step, init = _paper_step(key, labels, sizes, cls, k, policy)
  else:
    pcls = user.region_values(pred, labels)
    step, init = _released_step(
      key, target, labels, sizes, cls, pcls, k, policy, _min_areas(min_area, k)
    )
  _, (coords, labs, valid) = jax.lax.scan(step, init, jnp.arange(int(n)))
  return Clicks(coords=coords.astype(jnp.int32), labels=labs, valid=valid)


def pretraining_clicks(
  key: jax.Array,
  gt: jax.Array,
  predict: Callable[[Clicks], jax.Array],
  num_classes: int,
  capacity: int,
  n: jax.Array | int,
  *,
  policy: str = 'random_in_largest',
  sampler: str = 'paper',
  tie_break: str = 'first',
  min_area: int | Sequence[int] = 150,
) -> Clicks:
  """The training clicks of one sample: first click, ``predict``, then :func:`training_clicks`.

  Args:
    key: PRNG key.
    gt: (H, W) int ground truth.
    predict: ``Clicks -> (H, W) int`` class map of the model conditioned on the first click
      (without gradient).
    num_classes: K (static).
    capacity: static number of slots (the maximum click count).
    n: number of valid clicks in [1, capacity] (may be traced): drawn per sample by the paper's
      protocol, once per batch by the released code.
    policy, sampler, min_area: see :func:`training_clicks`; tie_break: of the first click.

  Returns:
    Clicks of capacity ``capacity``, slots ``>= n`` invalid ('paper': slot 0 is the first click).
  """
  user.check_choice('sampler', sampler, SAMPLERS)
  k_first, k_more = jax.random.split(key)
  coord, label, valid = user.first_click(k_first, gt, policy=policy, tie_break=tie_break)
  first = clicks_lib.add_click(clicks_lib.empty_clicks(1), 0, coord, label, valid)
  if sampler == 'paper' and capacity == 1:
    return clicks_lib.select(first, jnp.arange(1) < n)
  pred = jax.lax.stop_gradient(predict(first)).astype(jnp.int32)
  extra = capacity - 1 if sampler == 'paper' else capacity
  more = training_clicks(
    k_more, gt, pred, num_classes, extra, policy=policy, sampler=sampler, min_area=min_area
  )
  if sampler == 'paper':
    more = jax.tree_util.tree_map(lambda a, b: jnp.concatenate([a, b]), first, more)
  return clicks_lib.select(more, jnp.arange(capacity) < n)
