"""Update rules: names, optimiser, and the MI / PI / IA+SA / Tent / oracle hooks against hand-computed
losses on a tiny model (the whole protocol: test_session.py; every method: test_rules_contract.py)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from toys import toy_apply, toy_params

from yiplearn import clicks as clicks_lib
from yiplearn import errors, losses
from yiplearn.interactive import rules, step, user
from yiplearn.interactive.spec import Loss, SessionSpec

H = W = 16
K = 2
SPEC = SessionSpec(num_classes=K, num_clicks=3)


def _image(seed=0):
  rng = np.random.default_rng(seed)
  gt = np.zeros((H, W), np.int32)
  gt[3:11, 4:12] = 1
  img = (gt[..., None] * 0.8 + rng.normal(size=(H, W, 1)) * 0.5).astype(np.float32)
  return jnp.asarray(img), jnp.asarray(gt)


def _env(lr=1e-2, spec=SPEC):
  return step.Env(toy_apply, rules.make_optimizer(lr), spec)


def _equal_trees(a, b):
  return all(
    np.array_equal(np.asarray(x), np.asarray(y))
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b))
  )


def _shown(rule, env, state, img, coords, labels):
  """The view after the clicks (coords, labels): click 1 started, every later click placed, proposed
  and passed to the rule's click hook, each prediction shown. Returns (state, view)."""
  state, view, _ = step.start(
    rule, env, state, img, coords[0], labels[0], True, jax.random.PRNGKey(0)
  )
  view = step.show(rule, env, state.params, view)
  for c, lab in zip(coords[1:], labels[1:]):
    view = step.propose(
      rule, env, state.params, step.place(env.spec, view, jnp.asarray(c), lab, True)
    )
    state, _ = step.click_hooks(rule, env, state, view)
    view = step.show(rule, env, state.params, view)
  return state, view


def test_methods_by_name():
  assert set(rules.METHODS) == {'frozen', 'mi', 'pi', 'pi_mi', 'ia_sa', 'tent', 'oracle'}
  pi_mi = rules.make('pi_mi_episodic')
  assert pi_mi.uses_vjp and pi_mi.uses_proposal and pi_mi.name == 'pi_mi_episodic'
  assert not rules.make('pi').updates_on_click and rules.make('oracle').needs_gt
  assert rules.make('tent', episodic_reset=True).name == 'tent_episodic'
  frozen = rules.make('frozen')
  assert not (frozen.uses_vjp or frozen.uses_proposal or frozen.updates_on_click or frozen.needs_gt)
  with pytest.raises(errors.UserError, match="method='sgd': expected one of"):
    rules.make('sgd')
  with pytest.raises(errors.UserError, match='ia_sa.reg_weight=-1'):
    rules.make('ia_sa', reg_weight=-1)
  # Each factory takes the hyper-parameters it names; the defaults live in its signature.
  assert rules.defaults(rules.tent) == {'lr_scale': 1.0}
  assert rules.make('tent', reg_weight=5.0, lr_scale=0.5).name == 'tent'


def test_spec_validation():
  with pytest.raises(errors.UserError, match="policy='nearest'"):
    SPEC._replace(policy='nearest').validate()
  with pytest.raises(errors.UserError, match=r'report.disc=\[1, 2\]: expected foreground classes'):
    SPEC._replace(report=(('disc', (1, 2)),)).validate()
  with pytest.raises(errors.UserError, match='loss.alpha=2'):
    Loss(alpha=2).validate()
  assert SPEC.report_unions == (('class1', (1,)),) and SPEC.input_channels(3) == 3 + K


def test_optimizer_is_adam_and_the_learning_rate_lives_in_the_state():
  params = toy_params(3)
  tx = rules.make_optimizer(1e-3)
  grads = jax.tree_util.tree_map(lambda p: jnp.ones_like(p) * 0.5, params)
  state = rules.init_state(rules.frozen(), params, tx)
  from yiplearn import optim  # pylint: disable=g-import-not-at-top

  new = optim.guarded_update(tx, state.train, jnp.float32(1.0), grads)
  ref_tx = optax.adam(1e-3)
  upd, _ = ref_tx.update(grads, ref_tx.init(params), params)
  for a, b in zip(
    jax.tree_util.tree_leaves(new.params),
    jax.tree_util.tree_leaves(optax.apply_updates(params, upd)),
  ):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-8)
  zero = rules.set_learning_rate(state, 0.0)
  assert _equal_trees(optim.guarded_update(tx, zero.train, jnp.float32(1.0), grads).params, params)
  big = rules.set_learning_rate(rules.init_state(rules.make('pi_episodic'), params, tx), 1e-1)
  moved = optim.guarded_update(tx, big.train, jnp.float32(1.0), grads).params
  np.testing.assert_allclose(np.asarray(moved['b2']), np.asarray(params['b2']) - 0.1, rtol=1e-5)
  # The episodic anchor's optimiser state carries the new learning rate too.
  assert float(big.rule.opt_state.hyperparams['learning_rate']) == pytest.approx(0.1)


def test_mi_loss_by_hand_and_it_decreases():
  img, _ = _image()
  env, rule = _env(), rules.mi()
  params = toy_params(1 + K)
  coords, labels = [[6, 6], [12, 12]], [1, 0]
  state, view = _shown(
    rules.frozen()._replace(uses_vjp=True),
    env,
    rules.init_state(rule, params, env.tx),
    img,
    coords[:1],
    labels[:1],
  )
  view = step.propose(rule, env, params, step.place(SPEC, view, jnp.asarray(coords[1]), 0, True))
  # Loss by hand: pseudo-label of the current input, DiceFocal + beta * CCG of the newest click only.
  c = clicks_lib.from_lists(coords, labels, 3)
  x_prev = step.build_input(SPEC, img, clicks_lib.select(c, jnp.arange(3) == 0))
  pseudo = jnp.argmax(toy_apply(params, view.x[None])[0], -1)
  prev = toy_apply(params, x_prev[None])[0]
  newest = clicks_lib.from_lists([[12, 12]], [0], 1)
  want = losses.dice_focal(prev, pseudo, K) + 200.0 * losses.ccg_loss(prev, pseudo, newest)
  hook = jax.jit(lambda s, v: rule.click(s.rule, s.train, v, env))
  _, train, loss = hook(state, view)
  np.testing.assert_allclose(float(loss), float(want), rtol=1e-5)
  assert int(train.step) == 1 and int(train.skipped) == 0

  # MI steps against the same pseudo-label (P_prev re-shown with the new weights) lower the MI loss.
  @jax.jit
  def again(train, view):
    shown = step.show(rule, env, train.params, view._replace(x=x_prev))._replace(x=view.x)
    return rule.click((), train, shown, env)[1]

  for _ in range(5):
    train = again(train, view._replace(pullback=None))
  prev_new = toy_apply(train.params, x_prev[None])[0]
  after = losses.dice_focal(prev_new, pseudo, K) + 200.0 * losses.ccg_loss(prev_new, pseudo, newest)
  assert float(after) < 0.9 * float(want)
  # An invalid newest click: no update, nothing counted.
  inv = view._replace(clicks=view.clicks._replace(valid=view.clicks.valid.at[1].set(False)))
  _, train, loss = hook(state, inv)
  assert _equal_trees(train.params, params) and int(train.step) == 0 and float(loss) == 0


def test_pi_stage2_clicks_in_error_regions_and_stage1_ccg():
  img, gt = _image(1)
  spec = SPEC._replace(num_clicks=4)
  env = _env(1e-3, spec)
  params = toy_params(1 + K, seed=3)
  c = clicks_lib.from_lists([[6, 6]], [1], 4)
  x1 = step.build_input(spec, img, c)
  logits1 = toy_apply(params, x1[None])[0]
  p1 = np.asarray(jnp.argmax(logits1, -1))
  state = rules.init_state(rules.pi(), params, env.tx)
  view = step.start(rules.frozen(), env, state, img, c.coords[0], 1, True, jax.random.PRNGKey(0))[1]

  def finish(rule, final):
    return jax.jit(lambda s, v: rule.finish(s.rule, s.train, v._replace(pred=final), env, None))(
      state, view
    )

  _, train, pl = finish(rules.pi(), jnp.asarray(gt))
  assert int(train.step) == 2 and int(train.skipped) == 0 and np.all(np.isfinite(np.asarray(pl)))
  np.testing.assert_allclose(float(pl[0]), float(losses.dice_focal(logits1, gt, K)), rtol=1e-5)
  # The stage-2 clicks lie in the error components between P_1 and P_final, labelled by P_final.
  art = jax.device_get(
    user.simulate_clicks(step.finish_key(view.key, 4), gt, jnp.asarray(p1), K, 4)
  )
  assert art.valid.any()
  for (r, col), lab, v in zip(art.coords, art.labels, art.valid):
    if v:
      assert p1[r, col] != gt[r, col] and lab == gt[r, col]
  # With the released code's stage 1 the loss adds beta CCG on click 1.
  _, _, pl_ccg = finish(rules.pi(pi_stage1_ccg=True), jnp.asarray(gt))
  want = losses.dice_focal(logits1, gt, K) + 200.0 * losses.ccg_loss(logits1, gt, c)
  np.testing.assert_allclose(float(pl_ccg[0]), float(want), rtol=1e-5)
  # P_1 already equal to P_final: stage 2 has no clicks and is skipped (one update only).
  _, train, _ = finish(rules.pi(), jnp.asarray(p1))
  assert int(train.step) == 1


def test_ia_sa_tent_oracle_lower_their_losses():
  img, gt = _image(2)
  env = _env(5e-3)
  params = toy_params(1 + K, seed=5)
  coords, labels = [[6, 6], [14, 1], [8, 9]], [1, 0, 1]
  view = _shown(rules.frozen(), env, rules.init_state(rules.frozen(), params), img, coords, labels)[
    1
  ]
  c = clicks_lib.from_lists(coords, labels, 3)

  def run(rule, hook_name, steps=10):
    state = rules.init_state(rule, params, env.tx)
    if hook_name == 'click':
      f = jax.jit(lambda s: rule.click(s.rule, s.train, view, env))
    else:
      f = jax.jit(lambda s: rule.finish(s.rule, s.train, view, env, gt))
    values = []
    for _ in range(steps):
      rs, tr, value = f(state)
      state = rules.State(tr, rs)
      values.append(float(np.ravel(value)[0]))
    return values

  ia = run(rules.ia_sa(), 'click')
  assert ia[-1] < ia[0]
  # At the anchor the regulariser is the reference's own entropy; the clicked CE is the rest.
  ref = toy_apply(params, view.x[None])[0]
  want = losses.clicked_pixel_ce(ref, c) + losses.entropy_loss(ref)
  np.testing.assert_allclose(ia[0], float(want), rtol=1e-5)
  te = run(rules.tent(), 'click')
  assert te[-1] < te[0]
  np.testing.assert_allclose(te[0], float(losses.entropy_loss(ref)), rtol=1e-5)
  orc = run(rules.oracle(), 'finish')
  assert orc[-1] < orc[0]
  np.testing.assert_allclose(orc[0], float(losses.dice_focal(ref, gt, K)), rtol=1e-5)
  with pytest.raises(errors.UserError, match='gt=None'):
    rules.oracle().finish((), rules.init_state(rules.frozen(), params).train, view, env, None)
