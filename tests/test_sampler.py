"""Tests for yiplearn.interactive.sampler (pre-training click choice); the released sampler is
pinned in tests/test_released.py."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.ndimage as ndi

from yiplearn.interactive import sampler, user

EIGHT = np.ones((3, 3), dtype=int)


def three_class_maps():
  """Errors: class 0 one false positive (9 px); class 1 two misses (20, 6 px); class 2 one (12)."""
  target = np.zeros((24, 24), np.int32)
  pred = np.zeros((24, 24), np.int32)
  target[1:5, 1:6] = 1  # 20 px of class 1, predicted 0
  target[10:12, 1:4] = 1  # 6 px of class 1, predicted 0
  target[15:19, 15:18] = 2  # 12 px of class 2, predicted 0
  pred[18:21, 2:5] = 1  # 9 px false positive: class 0 predicted 1
  return target, pred


def components_by_class(target, pred):
  """{class: [masks, largest first]} of the (target, pred) error components (scipy)."""
  out = {}
  for a in range(3):
    comps = []
    for b in range(3):
      if a != b:
        lab, n = ndi.label((target == a) & (pred == b), structure=EIGHT)
        comps += [lab == i for i in range(1, n + 1)]
    out[a] = sorted(comps, key=lambda m: -m.sum())
  return out


def binomial_ok(count, n, p, sds=5.0):
  return abs(count - n * p) <= sds * np.sqrt(n * p * (1 - p))


def test_paper_class_draw_is_uniform_over_classes_with_errors():
  target, pred = three_class_maps()
  draw = jax.jit(
    jax.vmap(lambda k: sampler.training_clicks(k, jnp.asarray(target), jnp.asarray(pred), 3, 6))
  )
  n = 3000
  c = jax.device_get(draw(jax.random.split(jax.random.PRNGKey(0), n)))
  labels, valid, coords = np.asarray(c.labels), np.asarray(c.valid), np.asarray(c.coords)
  assert valid[:, :4].all() and not valid[:, 4:].any()  # 4 components, then nothing left
  for k in range(3):  # first click: every class has an error component
    assert binomial_ok(int((labels[:, 0] == k).sum()), n, 1 / 3), k
  # Second click is class 1 with P = 1/3 * 1/3 (first class 1: all three classes still have a
  # component) + 2/3 * 1/2 (first class 0 or 2: that class is exhausted, two classes remain).
  p1 = 1 / 3 * 1 / 3 + 2 / 3 * 1 / 2
  assert binomial_ok(int((labels[:, 1] == 1).sum()), n, p1)
  comps = components_by_class(target, pred)
  for i in range(200):  # each click lies in its class's largest unclicked component
    left = {k: list(v) for k, v in comps.items()}
    for j in range(4):
      r, col = coords[i, j]
      assert left[labels[i, j]][0][r, col], (i, j)
      left[labels[i, j]].pop(0)


def test_pretraining_clicks_paper_first_click_and_count():
  target, pred = three_class_maps()
  t = jnp.asarray(target)

  @jax.jit
  def run(key, n, p):
    return sampler.pretraining_clicks(key, t, lambda c: p, 3, 6, n)

  key = jax.random.PRNGKey(3)
  coord, label, valid = jax.jit(user.first_click)(jax.random.split(key)[0], t)
  for n in (1, 3, 6):
    c = run(key, n, jnp.asarray(pred))
    np.testing.assert_array_equal(np.asarray(c.coords[0]), np.asarray(coord))
    assert int(c.labels[0]) == int(label) == 1 and bool(valid)
    assert np.asarray(c.valid).tolist() == [i < min(n, 5) for i in range(6)]
  perfect = run(key, 6, t)  # no error: the first click only
  assert np.asarray(perfect.valid).tolist() == [True] + [False] * 5


def test_validation():
  t = jnp.zeros((8, 8), jnp.int32)
  key = jax.random.PRNGKey(0)
  with pytest.raises(ValueError, match="sampler='nope': expected"):
    sampler.training_clicks(key, t, t, 2, 3, sampler='nope')
  with pytest.raises(ValueError, match='min_area'):
    sampler.training_clicks(key, t, t, 3, 3, sampler='released', min_area=(150, 80))
  with pytest.raises(ValueError, match='n=0: expected'):
    sampler.training_clicks(key, t, t, 2, 0)
