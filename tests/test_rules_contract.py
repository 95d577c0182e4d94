"""The contract every method meets, through the session and the per-click tool (optax's shared-contract
style): finite outputs, stable shapes, no retracing on a second call, donation-safe, and replaying a
session's clicks through the tool gives the session's predictions and parameters (1e-6)."""

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

H = W = 12
K = 2
T = 3
SPEC = SessionSpec(num_classes=K, num_clicks=T, prev_mask=True)
TX = rules.make_optimizer(0.05)
NAMES = sorted(rules.METHODS) + ['pi_mi_episodic']


def _data(seed):
  rng = np.random.default_rng(seed)
  gt = np.zeros((H, W), np.int32)
  gt[2:9, 3:8] = 1
  gt[4:6, 9:11] = 1
  img = (gt[..., None] * 0.6 + rng.normal(size=(H, W, 1)) * 0.6).astype(np.float32)
  return img, gt


class _Counted:
  """The toy model, counting how often JAX traces it."""

  def __init__(self):
    self.traces = 0

  def __call__(self, params, x):
    self.traces += 1
    return toy_apply(params, x)


def _leaves_close(a, b, tol=1e-6):
  for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=tol, atol=tol)


@pytest.mark.parametrize('name', NAMES)
def test_every_method_through_session_and_tool(name):
  rule = rules.make(name)
  params = toy_params(SPEC.input_channels(1))
  kept = jax.tree_util.tree_map(np.array, params)
  model = _Counted()
  session = S.make_session(model, SPEC, rule, tx=TX)
  tool = None if rule.needs_gt else tool_lib.make_tool(model, SPEC, rule, tx=TX)
  s_state = rules.init_state(rule, params, TX)
  t_state = None if tool is None else tool.init(params)
  key = jax.random.PRNGKey(0)
  shapes, traces = None, []
  for i in range(2):  # the second image retraces nothing and the adapted weights carry over
    img, gt = _data(i)
    k = jax.random.fold_in(key, i)
    s_state, out = session(s_state, jnp.asarray(img), jnp.asarray(gt), k)
    out = jax.device_get(out)
    assert all(np.all(np.isfinite(np.asarray(x))) for x in jax.tree_util.tree_leaves(out))
    assert out.dice.shape == (T, K) and out.final_pred.shape == (H, W) and int(out.skipped) == 0
    new_shapes = jax.tree_util.tree_map(lambda a: (a.shape, a.dtype), (s_state, out))
    assert shapes is None or new_shapes == shapes
    shapes = new_shapes
    if tool is not None:
      assert np.asarray(out.clicks.valid).all()  # every click replayable
      c, lab = np.asarray(out.clicks.coords), np.asarray(out.clicks.labels)
      t_state, view = tool.start(t_state, img, c[0], lab[0], key=k)
      for t in range(1, T):
        view, _ = tool.propose(t_state, view, c[t], lab[t])
        t_state, view, _ = tool.adapt(t_state, view)
      np.testing.assert_array_equal(np.asarray(view.pred), out.final_pred)
      t_state = tool.finish(t_state, view)
      _leaves_close(t_state.params, s_state.params)
      assert int(t_state.step) == int(s_state.step)
      # Donation-safe: the view outlives the donated states (a UI keeps it, e.g. to undo).
      assert np.all(np.isfinite(np.asarray(view.logits)))
    traces.append(model.traces)
  assert traces[0] == traces[1] > 0
  assert session._cache_size() == 1
  if tool is not None:
    assert all(f._cache_size() == 1 for f in tool.jitted.values())
  # The caller's params were copied, never donated; a frozen rule leaves them bit-identical.
  _leaves_close(params, kept, 0.0)
  if name == 'frozen':
    _leaves_close(s_state.params, kept, 0.0)
  else:
    assert int(s_state.step) > 0
  if rule.needs_gt:
    with pytest.raises(errors.UserError, match='ground truth'):
      tool_lib.make_tool(model, SPEC, rule)
