"""Update rules: guard, optimiser, MI / PI / IA+SA / Tent / oracle steps on a tiny per-pixel model."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
from toys import toy_apply, toy_params

from yiplearn import clicks as clicks_lib
from yiplearn import losses
from yiplearn.interactive import updates as U

H = W = 16
K = 2


def _image(seed=0):
  rng = np.random.default_rng(seed)
  gt = np.zeros((H, W), np.int32)
  gt[3:11, 4:12] = 1
  img = (gt[..., None] * 0.8 + rng.normal(size=(H, W, 1)) * 0.5).astype(np.float32)
  return jnp.asarray(img), jnp.asarray(gt)


def _hp(**kw):
  kw.setdefault('num_classes', K)
  kw.setdefault('num_clicks', 3)
  kw.setdefault('lr', 1e-2)
  return U.HParams(**kw)


def _clicks(coords, labels, capacity=3):
  return clicks_lib.from_lists(coords, labels, capacity)


def _equal_trees(a, b):
  return all(
    np.array_equal(np.asarray(x), np.asarray(y))
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b))
  )


def test_methods_and_aliases():
  assert (
    U.get_method('pi').name == 'pi_only' and U.get_method('pi').pi and not U.get_method('pi').mi
  )
  m = U.get_method('pi_mi_episodic')
  assert m.mi and m.pi and m.episodic and m.name == 'pi_mi'
  assert U.get_method('tent', episodic=True).episodic
  assert not U.get_method('frozen').updates
  with pytest.raises(ValueError, match="method: got 'sgd'"):
    U.get_method('sgd')


def test_hparams_validation_and_from_config():
  with pytest.raises(ValueError, match='policy'):
    _hp(policy='nearest').validate()
  with pytest.raises(ValueError, match='report.disc'):
    _hp(report=(('disc', (1, 2)),)).validate()
  assert _hp().report_unions == (('class1', (1,)),)
  c = ml_collections.ConfigDict(
    {
      'num_classes': 3,
      'report': {'disc': [1, 2], 'cup': [2]},
      'episodic': True,
      'clicks': {
        'max_clicks': 7,
        'encoding': 'disk',
        'sigma': 4.0,
        'radius': 3.0,
        'policy': 'deepest',
        'prev_mask': False,
      },
      'loss': {
        'alpha': 0.5,
        'gamma': 1.0,
        'beta': 100.0,
        'ccg_sigma': 2.0,
        'ccg_variant': 'released',
      },
      'optim': {'lr': 5e-5},
      'ia_sa': {'reg_weight': 0.3},
      'tent': {'lr_scale': 0.1},
    }
  )
  hp = U.hparams_from_config(c, 'pi_mi')
  assert (
    hp.rule.episodic and hp.num_clicks == 7 and hp.encoding == 'disk' and hp.policy == 'deepest'
  )
  assert (hp.beta, hp.ccg_variant, hp.lr, hp.ia_sa_reg_weight, hp.tent_lr_scale) == (
    100.0,
    'released',
    5e-5,
    0.3,
    0.1,
  )
  assert dict(hp.report_unions) == {'disc': (1, 2), 'cup': (2,)}


def test_guarded_update_matches_adam_and_skips_non_finite():
  params = toy_params(3)
  hp = _hp(lr=1e-3)
  tx = U.make_optimizer(hp)
  state = U.init_state(params, hp)
  grads = jax.tree_util.tree_map(lambda p: jnp.ones_like(p) * 0.5, params)
  new = U.guarded_update(tx, state, jnp.float32(1.0), grads)
  ref_tx = optax.adam(1e-3)
  upd, _ = ref_tx.update(grads, ref_tx.init(params), params)
  ref = optax.apply_updates(params, upd)
  for a, b in zip(jax.tree_util.tree_leaves(new.params), jax.tree_util.tree_leaves(ref)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-8)
  assert int(new.step) == 1 and int(new.skipped) == 0

  bad = jax.tree_util.tree_map(lambda g: g.at[(0,) * g.ndim].set(jnp.nan), grads)
  skipped = U.guarded_update(tx, new, jnp.float32(1.0), bad)
  assert _equal_trees(skipped.params, new.params) and _equal_trees(skipped.opt_state, new.opt_state)
  assert int(skipped.step) == 2 and int(skipped.skipped) == 1
  skipped = U.guarded_update(tx, skipped, jnp.float32(jnp.inf), grads)
  assert (
    int(skipped.step) == 3
    and int(skipped.skipped) == 2
    and _equal_trees(skipped.params, new.params)
  )
  off = U.guarded_update(tx, skipped, jnp.float32(1.0), grads, enabled=False)
  assert _equal_trees(off.params, new.params) and int(off.step) == 3 and int(off.skipped) == 2


def test_learning_rate_lives_in_state():
  params = toy_params(3)
  hp = _hp(lr=1e-3)
  tx = U.make_optimizer(hp)
  grads = jax.tree_util.tree_map(jnp.ones_like, params)
  zero = U.set_learning_rate(U.init_state(params, hp), 0.0)
  assert _equal_trees(U.guarded_update(tx, zero, jnp.float32(1.0), grads).params, params)
  big = U.set_learning_rate(U.init_state(params, hp), 1e-1)
  moved = U.guarded_update(tx, big, jnp.float32(1.0), grads).params
  np.testing.assert_allclose(np.asarray(moved['b2']), np.asarray(params['b2']) - 0.1, rtol=1e-5)


def test_mi_step_loss_and_it_decreases():
  img, gt = _image()
  hp = _hp()
  tx = U.make_optimizer(hp)
  params = toy_params(1 + K)
  c = _clicks([[6, 6], [12, 12]], [1, 0])
  x_prev = U.make_input(hp, img, clicks_lib.select(c, jnp.arange(3) == 0))
  x_cur = U.make_input(hp, img, c)
  state = U.init_state(params, hp)
  step = jax.jit(lambda s: U.mi_step(toy_apply, tx, hp, s, x_prev, x_cur, c, 1))
  # Loss by hand: pseudo-label of the current input, DiceFocal + beta * CCG of the newest click only.
  pseudo = jnp.argmax(toy_apply(params, x_cur[None])[0], -1)
  prev = toy_apply(params, x_prev[None])[0]
  newest = _clicks([[12, 12]], [0], 1)
  want = losses.dice_focal(prev, pseudo, K) + 200.0 * losses.ccg_loss(prev, pseudo, newest)
  new, loss = step(state)
  np.testing.assert_allclose(float(loss), float(want), rtol=1e-5)
  assert int(new.step) == 1 and int(new.skipped) == 0
  # MI steps on this toy problem lower the MI loss against the first pseudo-label.
  for _ in range(4):
    new, _ = step(new)
  prev_new = toy_apply(new.params, x_prev[None])[0]
  after = losses.dice_focal(prev_new, pseudo, K) + 200.0 * losses.ccg_loss(prev_new, pseudo, newest)
  assert float(after) < 0.9 * float(want)
  # An invalid newest click: no update, nothing counted.
  c_inv = c._replace(valid=c.valid.at[1].set(False))
  s2, _ = U.mi_step(toy_apply, tx, hp, state, x_prev, x_cur, c_inv, 1)
  assert _equal_trees(s2.params, params) and int(s2.step) == 0


def test_pi_step_stage2_clicks_in_error_regions():
  img, gt = _image(1)
  hp = _hp(num_clicks=4, lr=1e-3)
  tx = U.make_optimizer(hp)
  params = toy_params(1 + K, seed=3)
  c = _clicks([[6, 6]], [1], 4)
  x1 = U.make_input(hp, img, c)
  p1 = np.asarray(jnp.argmax(toy_apply(params, x1[None])[0], -1))
  final = np.asarray(gt)
  state = U.init_state(params, hp)
  new, pl, art = jax.jit(
    lambda s: U.pi_step(toy_apply, tx, hp, s, img, c, jnp.asarray(final), jax.random.PRNGKey(0))
  )(state)
  assert int(new.step) == 2 and int(new.skipped) == 0 and np.all(np.isfinite(np.asarray(pl)))
  np.testing.assert_allclose(
    float(pl[0]),
    float(losses.dice_focal(toy_apply(params, x1[None])[0], jnp.asarray(final), K)),
    rtol=1e-5,
  )
  art = jax.device_get(art)
  assert art.valid.any()
  for (r, col), lab, v in zip(art.coords, art.labels, art.valid):
    if v:
      assert p1[r, col] != final[r, col] and lab == final[r, col]
  # P_1 already equal to P_final: stage 2 has no clicks and is skipped (one update only).
  new, pl, art = U.pi_step(toy_apply, tx, hp, state, img, c, jnp.asarray(p1), jax.random.PRNGKey(0))
  assert int(new.step) == 1 and not bool(jnp.any(art.valid))


def test_ia_sa_tent_oracle_lower_their_losses():
  img, gt = _image(2)
  hp = _hp(method='ia_sa', lr=5e-3)
  tx = U.make_optimizer(hp)
  params = toy_params(1 + K, seed=5)
  c = _clicks([[6, 6], [14, 1], [8, 9]], [1, 0, 1])
  x = U.make_input(hp, img, c)
  state = U.init_state(params, hp)
  assert state.anchor is not None
  f = jax.jit(lambda s: U.ia_sa_step(toy_apply, tx, hp, s, x, c))
  s, l0 = f(state)
  for _ in range(10):
    s, l = f(s)
  assert float(l) < float(l0)
  # At the anchor the regulariser is the reference's own entropy; the clicked CE is the rest.
  ref = toy_apply(params, x[None])[0]
  want = losses.clicked_pixel_ce(ref, c) + losses.entropy_loss(ref)
  np.testing.assert_allclose(float(l0), float(want), rtol=1e-5)
  with pytest.raises(ValueError, match='state.anchor'):
    U.ia_sa_step(toy_apply, tx, hp, U.init_state(params, _hp(method='tent')), x, c)

  hp_t = _hp(method='tent', lr=5e-3)
  g = jax.jit(lambda s: U.tent_step(toy_apply, tx, hp_t, s, x))
  s, e0 = g(U.init_state(params, hp_t))
  for _ in range(10):
    s, e = g(s)
  assert float(e) < float(e0)

  hp_o = _hp(method='oracle', lr=5e-3)
  o = jax.jit(lambda s: U.oracle_step(toy_apply, tx, hp_o, s, x, gt))
  s, o0 = o(U.init_state(params, hp_o))
  for _ in range(10):
    s, ol = o(s)
  assert float(ol) < float(o0)


def test_episodic_reset_and_anchor():
  params = toy_params(3)
  hp = _hp(method='pi_mi', episodic=True)
  state = U.init_state(params, hp)
  moved = state._replace(
    params=jax.tree_util.tree_map(lambda p: p + 1, params), step=state.step + 3
  )
  back = U.episodic_reset(moved)
  assert _equal_trees(back.params, params) and int(back.step) == 3
  assert U.init_state(params, _hp(method='pi_mi')).anchor is None
  with pytest.raises(ValueError, match='state.anchor'):
    U.episodic_reset(U.init_state(params, _hp(method='pi_mi')))
