"""The jitted whole-image session: protocol, reuse of forward passes, guards, vmap over streams."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from toys import toy_apply, toy_params

from yiplearn import clicks as clicks_lib
from yiplearn import errors, optim
from yiplearn.interactive import rules, step, user
from yiplearn.interactive import session as S
from yiplearn.interactive.spec import SessionSpec
from yiplearn.models.unet import UNet

H = W = 16
K = 2
T = 3


def _data(seed=0):
  rng = np.random.default_rng(seed)
  gt = np.zeros((H, W), np.int32)
  r, c = rng.integers(2, 6, size=2)
  gt[r : r + 8, c : c + 7] = 1
  img = (gt[..., None] * 0.8 + rng.normal(size=(H, W, 1)) * 0.5).astype(np.float32)
  return img, gt


TX = rules.make_optimizer(1e-2)


def _hp(method, **kw):
  """(spec, rule) of a method; spec fields in kw."""
  kw.setdefault('num_clicks', T)
  return SessionSpec(num_classes=K, **kw), rules.make(method)


def _init(method, params):
  return rules.init_state(rules.make(method), params, TX)


@functools.cache
def _session(method, **kw):
  """Sessions shared between tests (each distinct one costs a compilation)."""
  return S.make_session(toy_apply, *_hp(method, **kw), tx=TX)


def _copy(tree):
  return jax.tree_util.tree_map(lambda a: np.array(a), tree)


def _equal(a, b):
  return all(
    np.array_equal(np.asarray(x), np.asarray(y))
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b))
  )


def _np_dice(pred, gt, k):
  p, g = pred == k, gt == k
  s = p.sum() + g.sum()
  return 1.0 if s == 0 else 2 * (p & g).sum() / s


def test_pi_mi_session_runs_scores_and_does_not_recompile():
  session = _session('pi_mi')
  state = _init('pi_mi', toy_params(1 + K))
  img, gt = _data(0)
  state, out = session(state, img, gt, jax.random.PRNGKey(0))
  img2, gt2 = _data(1)
  state, out2 = session(state, img2, gt2, jax.random.PRNGKey(1))
  assert session._cache_size() == 1
  out2 = jax.device_get(out2)
  assert (
    out2.dice.shape == (T, K)
    and out2.union_dice.shape == (T, 1)
    and out2.final_pred.shape == (H, W)
  )
  # Scores are Dice of the shown prediction; the last one is the accepted P_final.
  np.testing.assert_allclose(
    out2.dice[-1], [_np_dice(out2.final_pred, gt2, k) for k in range(K)], rtol=1e-6
  )
  np.testing.assert_allclose(out2.union_dice[:, 0], out2.dice[:, 1])
  # Click 1 is a foreground pixel; later valid clicks are labelled with the GT there.
  c = out2.clicks
  assert c.valid[0] and gt2[tuple(c.coords[0])] == 1 and c.labels[0] == 1
  for (r, col), lab, v in zip(c.coords, c.labels, c.valid):
    if v:
      assert lab == gt2[r, col]
  # MI after each valid click t >= 2 plus the two PI stages (stage 2 only if P_1 != P_final).
  n_mi = int(c.valid[1:].sum())
  assert n_mi + 1 <= int(out2.updates) <= n_mi + 2 and int(out2.skipped) == 0
  assert int(state.step) == int(out.updates) + int(out2.updates)
  assert out2.click_loss[0] == 0 and np.all((out2.click_loss[1:] > 0) == c.valid[1:])


def test_session_mi_equals_mi_by_hand():
  """The vjp reuse of the shown prediction gives exactly the MI update with recomputed forwards."""
  spec, rule = _hp('mi', num_clicks=2)
  params = toy_params(1 + K, seed=1)
  img, gt = _data(2)
  key = jax.random.PRNGKey(3)
  state, out = S.make_session(toy_apply, spec, rule, tx=TX)(_init('mi', params), img, gt, key)

  @jax.jit
  def by_hand(params):
    return _mi_by_hand(spec, params, img, gt, key)

  ref, ref_loss, cl, v2, p2 = by_hand(params)
  assert bool(v2)
  for a, b in zip(jax.tree_util.tree_leaves(state.params), jax.tree_util.tree_leaves(ref.params)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(float(out.click_loss[1]), float(ref_loss), rtol=1e-5)
  np.testing.assert_array_equal(np.asarray(out.clicks.coords), np.asarray(cl.coords))
  np.testing.assert_array_equal(np.asarray(out.final_pred), np.asarray(p2))


def _mi_by_hand(spec, params, img, gt, key):
  # By hand: click 1 from GT, P_1, click 2 in P_1's largest error, one MI step, show P_2.
  coord, label, valid = user.first_click(
    step.click_key(key, 1), jnp.asarray(gt), policy=spec.policy
  )
  cl = clicks_lib.add_click(clicks_lib.empty_clicks(2), 0, coord, label, valid)
  x1 = step.build_input(spec, jnp.asarray(img), cl)
  p1 = jnp.argmax(toy_apply(params, x1[None])[0], -1).astype(jnp.int32)
  c2, l2, v2 = user.correction_click(
    step.click_key(key, 2), jnp.asarray(gt), p1, K, policy=spec.policy
  )
  cl = clicks_lib.add_click(cl, 1, c2, l2, v2)
  x2 = step.build_input(spec, jnp.asarray(img), cl, p1)
  pseudo = jnp.argmax(toy_apply(params, x2[None])[0], -1)
  newest = clicks_lib.select(cl, jnp.arange(2) == 1)
  loss_fn = lambda p: rules.objective(rules.Loss(), toy_apply(p, x1[None])[0], pseudo, newest, K)
  ref_loss, grads = jax.value_and_grad(loss_fn)(params)
  ref = optim.guarded_update(
    TX, rules.init_state(rules.frozen(), params, TX).train, ref_loss, grads
  )
  p2 = jnp.argmax(toy_apply(ref.params, x2[None])[0], -1)
  return ref, ref_loss, cl, v2, p2


def _perfect_params(cin):
  """Predicts class 1 where image channel 0 > 0.5, ignoring the clicks."""
  p = {k: jnp.zeros_like(v) for k, v in toy_params(cin).items()}
  p['w0'] = p['w0'].at[0].set(jnp.array([-20.0, 20.0]))
  p['b2'] = jnp.array([10.0, -10.0])
  return p


def test_perfect_prediction_gives_dice_one_and_no_error_clicks():
  _, gt = _data(4)
  img = gt[..., None].astype(np.float32)
  state, out = _session('pi_mi')(
    _init('pi_mi', _perfect_params(1 + K)), img, gt, jax.random.PRNGKey(0)
  )
  np.testing.assert_array_equal(np.asarray(out.dice), np.ones((T, K)))
  np.testing.assert_array_equal(np.asarray(out.clicks.valid), [True, False, False])
  # No MI update without a new click; PI stage 1 only (P_1 == P_final -> no stage-2 clicks).
  assert int(out.updates) == 1 and float(out.image_loss[1]) == 0.0


def test_frozen_leaves_params_bit_identical():
  params = toy_params(1 + K, seed=5)
  ref = _copy(params)
  session = _session('frozen')
  state = _init('frozen', params)
  opt_ref = _copy(state.opt_state)
  for i in range(2):
    img, gt = _data(i)
    state, out = session(state, img, gt, jax.random.PRNGKey(i))
    assert int(out.updates) == 0 and np.all(np.asarray(out.click_loss) == 0)
  assert _equal(state.params, ref) and _equal(state.opt_state, opt_ref) and int(state.step) == 0


def test_non_finite_update_is_skipped_and_counted():
  params = toy_params(1 + K, seed=6)
  ref = _copy(params)
  img, gt = _data(6)
  img[5, 5, 0] = np.nan  # NaN logits at one pixel -> every loss of this image is NaN
  state, out = _session('pi_mi')(_init('pi_mi', params), img, gt, jax.random.PRNGKey(0))
  assert int(out.updates) >= 1 and int(out.skipped) == int(out.updates) == int(state.skipped)
  assert _equal(state.params, ref)


@pytest.mark.parametrize('method', ['ia_sa', 'tent'])
def test_per_click_baselines_update_after_every_click(method):
  params = toy_params(1 + K, seed=7)
  img, gt = _data(7)
  state, out = _session(method)(_init(method, params), img, gt, jax.random.PRNGKey(0))
  out = jax.device_get(out)
  # Tent: every click; IA+SA: every click once a valid click exists (its loss is on the clicked pixels).
  expected = T if method == 'tent' else int(np.sum(np.cumsum(out.clicks.valid) > 0))
  assert int(out.updates) == expected and int(out.skipped) == 0
  assert np.all(out.click_loss > 0) and np.all(out.image_loss == 0)
  assert not _equal(state.params, params)


def test_episodic_oracle_resets_before_each_image():
  params = toy_params(1 + K, seed=8)
  session = _session('oracle_episodic')
  (a_img, a_gt), (b_img, b_gt) = _data(8), _data(9)
  s, out_a = session(_init('oracle_episodic', params), a_img, a_gt, jax.random.PRNGKey(0))
  assert (
    int(out_a.updates) == 1
    and float(out_a.image_loss[0]) > 0
    and np.all(np.asarray(out_a.click_loss) == 0)
  )
  assert not _equal(s.params, params)
  s, out_seq = session(s, b_img, b_gt, jax.random.PRNGKey(1))
  fresh, out_alone = session(_init('oracle_episodic', params), b_img, b_gt, jax.random.PRNGKey(1))
  np.testing.assert_array_equal(np.asarray(out_seq.dice), np.asarray(out_alone.dice))
  assert _equal(s.params, fresh.params) and int(s.step) == 2


def test_vmap_over_streams_equals_separate_runs_and_run_stream():
  params = toy_params(1 + K, seed=9)
  lrs, keys = [1e-2, 3e-3], [jax.random.PRNGKey(10), jax.random.PRNGKey(11)]
  data = [_data(10), _data(11)]
  images = np.stack([d[0] for d in data])
  gts = np.stack([d[1] for d in data])
  single = _session('pi_mi')
  separate = []
  for lr, key in zip(lrs, keys):
    st, res = S.run_stream(
      single, rules.set_learning_rate(_init('pi_mi', params), lr), images, gts, key
    )
    separate.append((st, res))
  # Streams stacked on a leading axis, same images.
  stacked = jax.tree_util.tree_map(
    lambda *xs: jnp.stack(xs), *[rules.set_learning_rate(_init('pi_mi', params), lr) for lr in lrs]
  )
  multi = S.make_session(toy_apply, *_hp('pi_mi'), tx=TX, stream_axes=(0, None, None, 0))
  key_stack = jnp.stack(keys)
  for i in range(2):
    stacked, out = multi(
      stacked, images[i], gts[i], jax.vmap(lambda k: jax.random.fold_in(k, i))(key_stack)
    )
    for s in range(2):
      np.testing.assert_allclose(np.asarray(out.dice[s]), separate[s][1][i]['dice'], atol=1e-6)
      np.testing.assert_array_equal(
        np.asarray(out.clicks.coords[s]), separate[s][1][i]['click_coords']
      )
  for s in range(2):
    for a, b in zip(
      jax.tree_util.tree_leaves(jax.tree_util.tree_map(lambda x: x[s], stacked.params)),
      jax.tree_util.tree_leaves(separate[s][0].params),
    ):
      np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)
  # Different learning rates really gave different streams.
  assert not _equal(separate[0][0].params, separate[1][0].params)
  assert [r['index'] for r in separate[0][1]] == [0, 1]


def test_unet_session_with_prev_mask_and_disk_encoding():
  spec, rule = _hp('tent', prev_mask=True, encoding='disk', num_clicks=2)
  model = UNet(num_classes=K, widths=(4,), bottleneck=4)
  shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.zeros((1, H, W, 1 + K + 1)))
  rng = np.random.default_rng(0)
  params = jax.tree_util.tree_map(
    lambda s: jnp.asarray(rng.normal(size=s.shape) * 0.3, s.dtype), shapes
  )
  img, gt = _data(12)
  session = S.make_session(model, spec, rule, tx=TX)
  state, out = session(rules.init_state(rule, params, TX), img, gt, jax.random.PRNGKey(0))
  assert (
    np.all(np.isfinite(np.asarray(out.dice))) and int(out.skipped) == 0 and int(out.updates) >= 1
  )


def test_validation_errors():
  with pytest.raises(errors.UserError, match='spec.num_classes=2: expected'):
    S.make_session(UNet(num_classes=3, widths=(4,), bottleneck=4), *_hp('frozen'))
  with pytest.raises(errors.UserError, match='image/gt'):
    S.make_session(toy_apply, *_hp('frozen'), jit=False)(
      _init('frozen', toy_params(3)),
      np.zeros((H, W)),
      np.zeros((H, W), np.int32),
      jax.random.PRNGKey(0),
    )
  with pytest.raises(errors.UserError, match='images/gts'):
    S.run_stream(
      _session('frozen'),
      None,
      np.zeros((2, H, W, 1)),
      np.zeros((1, H, W)),
      jax.random.PRNGKey(0),
    )
