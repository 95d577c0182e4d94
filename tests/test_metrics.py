"""Tests for yiplearn.metrics against hand-computed values and numpy references."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from yiplearn import metrics as M


def test_dice_per_class_hand_computed():
  gt = np.array([[0, 1, 1], [0, 2, 2], [0, 0, 0]])
  pred = np.array([[0, 1, 0], [1, 2, 2], [0, 0, 2]])
  d = np.asarray(M.dice_per_class(jnp.asarray(pred), jnp.asarray(gt), 4))
  # class 0: gt 5 px, pred 4 px, overlap (0,0),(2,0),(2,1) = 3 -> 6/9
  # class 1: gt 2, pred 2, overlap 1 -> 2/4; class 2: gt 2, pred 3, overlap 2 -> 4/5
  # class 3: absent from both -> 1.
  np.testing.assert_allclose(d, [6 / 9, 2 / 4, 4 / 5, 1.0], rtol=1e-6)


def test_dice_per_class_matches_numpy_batched():
  rng = np.random.default_rng(0)
  pred = rng.integers(0, 3, (4, 10, 12))
  gt = rng.integers(0, 3, (4, 10, 12))
  gt[1] = 0  # classes 1, 2 absent from gt in image 1
  got = np.asarray(jax.jit(lambda p, g: M.dice_per_class(p, g, 3))(pred, gt))
  assert got.shape == (4, 3)
  for b in range(4):
    for k in range(3):
      p, g = pred[b] == k, gt[b] == k
      tot = p.sum() + g.sum()
      exp = 1.0 if tot == 0 else 2 * (p & g).sum() / tot
      assert got[b, k] == pytest.approx(exp, rel=1e-6)


def test_empty_both_is_one_and_empty_one_is_zero():
  z = jnp.zeros((5, 5), jnp.int32)
  o = jnp.ones((5, 5), jnp.int32)
  np.testing.assert_allclose(np.asarray(M.dice_per_class(z, z, 2)), [1.0, 1.0])
  np.testing.assert_allclose(np.asarray(M.dice_per_class(z, o, 2)), [0.0, 0.0])


def test_foreground_dice_union():
  gt = np.array([[0, 1, 2, 2], [0, 1, 2, 0]])
  pred = np.array([[0, 2, 2, 1], [0, 0, 2, 0]])
  # disc = rim | cup: gt {1,2}: 5 px; pred: 4 px; overlap (0,1),(0,2),(0,3),(1,2) -> 4
  assert float(M.foreground_dice(jnp.asarray(pred), jnp.asarray(gt), (1, 2))) == pytest.approx(
    8 / 9
  )
  # cup only: gt 3 px, pred 3 px, overlap 2
  assert float(M.foreground_dice(jnp.asarray(pred), jnp.asarray(gt), 2)) == pytest.approx(4 / 6)
  assert (
    float(M.foreground_dice(jnp.zeros((3, 3), jnp.int32), jnp.zeros((3, 3), jnp.int32), (1, 2)))
    == 1.0
  )


def test_noc_and_reached():
  curve = jnp.asarray(
    [
      [0.50, 0.80, 0.86, 0.91, 0.95],
      [0.90, 0.92, 0.93, 0.94, 0.95],
      [0.10, 0.20, 0.30, 0.40, 0.84],
      [0.85, 0.70, 0.90, 0.80, 0.80],
    ]
  )
  np.testing.assert_array_equal(np.asarray(M.noc(curve, 0.85)), [3, 1, 5, 1])
  np.testing.assert_array_equal(np.asarray(M.noc(curve, 0.90)), [4, 1, 5, 3])
  np.testing.assert_array_equal(np.asarray(M.noc(curve, 0.80)), [2, 1, 5, 1])
  np.testing.assert_array_equal(np.asarray(M.reached(curve, 0.85)), [True, True, False, True])
  assert M.noc(curve, 0.85).dtype == jnp.int32
  # Never reached counts as T, same as reaching only at the last click.
  assert int(M.noc(jnp.asarray([0.1, 0.2]), 0.9)) == 2


def test_dice_auc_trapezoid():
  curve = np.array([0.2, 0.6, 0.8, 1.0])
  exp = ((0.2 + 0.6) / 2 + (0.6 + 0.8) / 2 + (0.8 + 1.0) / 2) / 3
  assert float(M.dice_auc(jnp.asarray(curve))) == pytest.approx(exp)
  assert exp == pytest.approx(np.trapezoid(curve) / 3)
  assert float(M.dice_auc(jnp.asarray([0.7]))) == pytest.approx(0.7)
  np.testing.assert_allclose(np.asarray(M.dice_auc(jnp.full((3, 10), 0.4))), 0.4, rtol=1e-6)
  rng = np.random.default_rng(1)
  c = rng.random((5, 7))
  np.testing.assert_allclose(
    np.asarray(M.dice_auc(jnp.asarray(c))), np.trapezoid(c, axis=-1) / 6, rtol=1e-5
  )


def test_dice_at_clicks():
  curve = jnp.arange(10, dtype=jnp.float32)[None].repeat(2, 0) / 10
  np.testing.assert_allclose(np.asarray(M.dice_at_clicks(curve, (1, 5, 10))), [[0.0, 0.4, 0.9]] * 2)
  with pytest.raises(ValueError, match='clicks'):
    M.dice_at_clicks(curve, (0,))


def test_validation():
  with pytest.raises(ValueError, match='shape'):
    M.dice_per_class(jnp.zeros((3, 3), jnp.int32), jnp.zeros((3, 4), jnp.int32), 2)
  with pytest.raises(ValueError, match='num_classes'):
    M.dice_per_class(jnp.zeros((3, 3), jnp.int32), jnp.zeros((3, 3), jnp.int32), 0)
  with pytest.raises(ValueError, match='curve'):
    M.noc(jnp.zeros((2, 0)), 0.5)
