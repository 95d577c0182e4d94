"""Per-click tool: replaying a session's clicks gives the session's predictions and weights; the
proposal is the pseudo-label; bad clicks are refused. (Every method: tests/test_rules_contract.py.)"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from toys import toy_apply, toy_params

from yiplearn import errors
from yiplearn.interactive import rules
from yiplearn.interactive import session as S
from yiplearn.interactive import tool as tool_lib
from yiplearn.interactive.spec import SessionSpec

H = W = 16
K = 2
T = 4
TX = rules.make_optimizer(0.05)


def _data(seed):
  rng = np.random.default_rng(seed)
  gt = np.zeros((H, W), np.int32)
  gt[3:12, 4:10] = 1
  gt[5:7, 12:15] = 1
  img = (gt[..., None] * 0.6 + rng.normal(size=(H, W, 1)) * 0.6).astype(np.float32)
  return img, gt


def test_pi_mi_replay_with_prev_mask_and_the_proposal_is_the_pseudo_label():
  spec, rule = SessionSpec(num_classes=K, num_clicks=T, prev_mask=True), rules.make('pi_mi')
  params = toy_params(spec.input_channels(1))
  session = S.make_session(toy_apply, spec, rule, tx=TX)
  tool = tool_lib.make_tool(toy_apply, spec, rule, tx=TX)
  s_state, t_state = rules.init_state(rule, params, TX), tool.init(params)
  key = jax.random.PRNGKey(0)
  for i in range(2):  # two images: the adapted weights carry over
    img, gt = _data(i)
    k = jax.random.fold_in(key, i)
    s_state, out = session(s_state, jnp.asarray(img), jnp.asarray(gt), k)
    coords, labels = np.asarray(out.clicks.coords), np.asarray(out.clicks.labels)
    assert np.asarray(out.clicks.valid).all()
    t_state, view = tool.start(t_state, img, coords[0], labels[0], key=k)
    for t in range(1, T):
      before = jax.tree_util.tree_map(np.array, t_state.params)
      view, pseudo = tool.propose(t_state, view, coords[t], labels[t])
      # The proposal: argmax f(I, C_{t+1}) with the weights before the update, one forward pass.
      want = jnp.argmax(toy_apply(before, view.x[None])[0], -1)
      np.testing.assert_array_equal(pseudo, want)
      t_state, view, pred = tool.adapt(t_state, view)
      np.testing.assert_array_equal(pred, view.pred)
    np.testing.assert_array_equal(view.pred, out.final_pred)
    t_state = tool.finish(t_state, view)
    for a, b in zip(
      jax.tree_util.tree_leaves(s_state.params), jax.tree_util.tree_leaves(t_state.params)
    ):
      np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)
    assert int(t_state.step) == int(s_state.step)
  assert int(s_state.step) > 2  # updates were made, so the comparison is not vacuous
  assert all(f._cache_size() == 1 for f in tool.jitted.values())


def test_bad_clicks_are_refused():
  spec = SessionSpec(num_classes=K, num_clicks=2)
  tool = tool_lib.make_tool(toy_apply, spec, rules.make('pi_mi'), tx=TX)
  state = tool.init(toy_params(1 + K))
  img, _ = _data(0)
  with pytest.raises(errors.UserError, match=r'coord=\(16, 3\): expected inside the image'):
    tool.start(state, img, (16, 3), 1)
  with pytest.raises(errors.UserError, match=r'label=2: expected a class index in \[0, 2\)'):
    tool.start(state, img, (1, 3), 2)
  with pytest.raises(ValueError, match='NaN or Inf'):
    tool.start(state, np.full((H, W, 1), np.nan, np.float32), (1, 3), 1)
  with pytest.raises(errors.UserError, match='image='):
    tool.start(state, img[..., 0], (1, 3), 1)
  state, view = tool.start(state, img, (5, 5), 1)
  state, view = tool.click(state, view, (0, 0), 0)
  with pytest.raises(errors.UserError, match='at most spec.num_clicks=2 clicks'):
    tool.propose(state, view, (1, 1), 0)
  with pytest.raises(errors.UserError, match='oracle'):
    tool_lib.make_tool(toy_apply, spec, rules.make('oracle'))
