"""Per-click tool functions: replaying a session's clicks gives the session's predictions and weights."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from toys import toy_apply, toy_params

from yiplearn.interactive import session as S
from yiplearn.interactive import tool as tool_lib
from yiplearn.interactive import updates as U

H = W = 16
K = 2
T = 4


def _data(seed):
  rng = np.random.default_rng(seed)
  gt = np.zeros((H, W), np.int32)
  gt[3:12, 4:10] = 1
  gt[5:7, 12:15] = 1
  img = (gt[..., None] * 0.6 + rng.normal(size=(H, W, 1)) * 0.6).astype(np.float32)
  return img, gt


@pytest.mark.parametrize('method,prev_mask', [('pi_mi', True), ('ia_sa', False)])
def test_replaying_session_clicks_through_the_tool_reproduces_the_session(method, prev_mask):
  hp = U.HParams(num_classes=K, method=method, num_clicks=T, lr=0.05, prev_mask=prev_mask)
  cin = 1 + K + int(prev_mask)
  params = toy_params(cin)
  session = S.make_session(toy_apply, hp)
  tool = tool_lib.make_tool(toy_apply, hp)
  s_state, t_state = U.init_state(params, hp), tool.init(params)
  key = jax.random.PRNGKey(0)
  for i in range(2):  # two images: the adapted weights carry over
    img, gt = _data(i)
    k = jax.random.fold_in(key, i)
    s_state, out = session(s_state, jnp.asarray(img), jnp.asarray(gt), k)
    coords, labels, valid = (
      np.asarray(out.clicks.coords),
      np.asarray(out.clicks.labels),
      np.asarray(out.clicks.valid),
    )
    assert valid[0]
    t_state, view = tool.start(t_state, img, coords[0], labels[0])
    for t in range(1, T):
      if not valid[t]:  # the simulated user found no error: the session stops changing
        break
      t_state, view = tool.click(t_state, view, coords[t], labels[t])
    np.testing.assert_array_equal(view.pred, out.final_pred)
    t_state = tool.finish(t_state, view, jax.random.fold_in(k, T + 1))
    for a, b in zip(
      jax.tree_util.tree_leaves(s_state.params), jax.tree_util.tree_leaves(t_state.params)
    ):
      np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-6)
    assert int(t_state.step) == int(s_state.step)
  assert int(s_state.step) > 2  # updates were made, so the comparison is not vacuous


def test_bad_clicks_are_refused():
  hp = U.HParams(num_classes=K, method='pi_mi', num_clicks=2, lr=0.05)
  tool = tool_lib.make_tool(toy_apply, hp)
  state = tool.init(toy_params(1 + K))
  img, _ = _data(0)
  with pytest.raises(ValueError, match=r'coord=\(16, 3\): outside the image'):
    tool.start(state, img, (16, 3), 1)
  with pytest.raises(ValueError, match=r'label=2: expected a class index in \[0, 2\)'):
    tool.start(state, img, (1, 3), 2)
  with pytest.raises(ValueError, match='NaN or Inf'):
    tool.start(state, np.full((H, W, 1), np.nan, np.float32), (1, 3), 1)
  with pytest.raises(ValueError, match='image: got shape'):
    tool.start(state, img[..., 0], (1, 3), 1)
  state, view = tool.start(state, img, (5, 5), 1)
  state, view = tool.click(state, view, (0, 0), 0)
  with pytest.raises(ValueError, match='at most hp.num_clicks=2 clicks'):
    tool.click(state, view, (1, 1), 0)
  with pytest.raises(ValueError, match='oracle'):
    tool_lib.make_tool(toy_apply, U.HParams(num_classes=K, method='oracle', num_clicks=2))
