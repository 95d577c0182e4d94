"""Every call of the click-and-learn app into the model (DESIGN.md 1.4), in one place.

The app keeps one adaptation state per method (frozen, PI, PI + MI) and, for the image being segmented, the
tool's view. :class:`Engine` holds the jitted per-click tools of ``yiplearn.interactive.tool`` and turns
their device values into host numpy arrays; the rest of the app never touches JAX. A click has two phases,
as the page shows them:

1. :meth:`Engine.propose` -- one forward pass with the current weights: the Mid-Interaction pseudo-label
   argmax f(I, C_t; theta), shown at once;
2. :meth:`Engine.adapt` -- the method's per-click update (MI for PI + MI; none for frozen and PI) and the
   prediction with the new weights.

States are opaque to the caller; :meth:`Engine.copy` snapshots one for Undo (the tools donate their state).
:meth:`Engine.warmup_jobs` lists the compilations a server runs in the background (ahead of time, with
``jit(...).lower(...).compile()``), the first click's first.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from yiplearn import metrics
from yiplearn.interactive import rules as rules_lib
from yiplearn.interactive import tool as tool_lib
from yiplearn.interactive import user
from yiplearn.interactive.spec import SessionSpec

__all__ = ['APP_METHODS', 'Engine']

# The methods a person can switch between (names of yiplearn.interactive.rules.METHODS).
APP_METHODS = ('frozen', 'pi', 'pi_mi')


class Engine:
  """The model side of the app for ``rules`` ({method name: Rule}) sharing pre-trained ``params``.

  Args:
    model: a flax module (the click U-Net) or an ``apply_fn(params, x) -> logits``.
    params: the pre-trained parameters (host or device arrays).
    spec: the interaction (classes, click capacity, click maps); tx: the adaptation optimiser.
    seed: the images' keys (PI's artificial clicks) and the simulated user's.
  """

  def __init__(
    self,
    model: Any,
    params: Any,
    spec: SessionSpec,
    rules: dict[str, rules_lib.Rule],
    *,
    tx: Any = None,
    seed: int = 0,
  ):
    self.methods = tuple(rules)
    self.spec = spec
    self.num_classes = int(spec.num_classes)
    self.capacity = int(spec.num_clicks)
    self.rules = dict(rules)
    self.tools = {m: tool_lib.make_tool(model, spec, r, tx=tx) for m, r in rules.items()}
    # Uncommitted device arrays (restored checkpoints are committed to a device): every array of a
    # session then matches the ahead-of-time compilations of warmup_jobs, whose inputs name no device.
    self.params0 = jax.tree_util.tree_map(lambda a: jnp.asarray(np.asarray(a)), params)
    self._key = jax.random.PRNGKey(int(seed))
    apply_fn = model.apply if hasattr(model, 'apply') else model
    K, policy = self.num_classes, spec.policy

    def predict(params, x):
      return jnp.argmax(apply_fn(params, x[None])[0], -1).astype(jnp.int32)

    def auto(key, gt, pred, first):
      c1, l1, v1 = user.first_click(key, gt, policy=policy)
      c2, l2, v2 = user.correction_click(key, gt, pred, K, policy=policy)
      return jnp.where(first, c1, c2), jnp.where(first, l1, l2), jnp.where(first, v1, v2)

    self._predict = jax.jit(predict)
    self._auto = jax.jit(auto)
    self._dice = jax.jit(lambda pred, gt: metrics.dice_per_class(pred, gt, K))
    self._copy = jax.jit(
      lambda tree: jax.tree_util.tree_map(lambda a: jnp.array(a, copy=True), tree)
    )

  # ---- states --------------------------------------------------------------------------------------------

  def init_states(self) -> dict[str, Any]:
    """A fresh adaptation state per method, from the pre-trained parameters."""
    return {m: self.tools[m].init(self.params0) for m in self.methods}

  def updates(self, method: str) -> bool:
    """Whether ``method`` changes the weights during an image (so Undo needs a snapshot)."""
    return bool(self.rules[method].updates_on_click)

  def copy(self, state: Any) -> Any:
    """A snapshot of ``state`` in new buffers (one compiled copy of the whole tree)."""
    return self._copy(state)

  @staticmethod
  def to_tree(states: dict[str, Any]) -> dict[str, Any]:
    """The states as a checkpointable pytree (a rule state without arrays is left out)."""
    out = {}
    for m, s in states.items():
      out[m] = {'train': s.train}
      if jax.tree_util.tree_leaves(s.rule):
        out[m]['rule'] = s.rule
    return out

  @staticmethod
  def from_tree(states: dict[str, Any], tree: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for m, s in states.items():
      t = jax.tree_util.tree_map(jnp.asarray, tree[m])
      out[m] = s._replace(train=t['train'], rule=t.get('rule', s.rule))
    return out

  @staticmethod
  def counters(state: Any) -> dict[str, int]:
    return {'updates': int(state.step), 'skipped': int(state.skipped)}

  @staticmethod
  def checksum(state: Any) -> float:
    """Sum of every parameter (float64): a cheap fingerprint of the weights."""
    leaves = jax.tree_util.tree_leaves(jax.device_get(state.params))
    return float(sum(np.sum(np.asarray(x, np.float64)) for x in leaves))

  @staticmethod
  def params_of(state: Any) -> list[np.ndarray]:
    return [np.asarray(x) for x in jax.tree_util.tree_leaves(jax.device_get(state.params))]

  # ---- one image -----------------------------------------------------------------------------------------

  def image_key(self, image_index: int) -> jax.Array:
    return jax.random.fold_in(self._key, int(image_index))

  def start(self, method: str, state: Any, image: np.ndarray, coord, label: int, image_index: int):
    """Click 1: ``(state, view, prediction (H, W) int32)`` (the state is donated)."""
    state, view = self.tools[method].start(
      state, image, np.asarray(coord, np.int32), int(label), self.image_key(image_index)
    )
    return state, view, np.asarray(view.pred)

  def propose(self, method: str, state: Any, view: Any, coord, label: int):
    """Click t > 1, phase 1: ``(view, pseudo-label)``, argmax f(I, C_t; theta) with the current
    weights (one forward pass; nothing donated)."""
    view, pseudo = self.tools[method].propose(state, view, np.asarray(coord, np.int32), int(label))
    return view, np.asarray(pseudo)

  def adapt(self, method: str, state: Any, view: Any):
    """Click t > 1, phase 2: the method's update, then ``(state, view, prediction with the new
    weights)`` (the state is donated)."""
    state, view, pred = self.tools[method].adapt(state, view)
    return state, view, np.asarray(pred)

  def stored(self, view: Any) -> Any:
    """A view to keep for Undo: without its VJP residuals (large); :meth:`reshow` rebuilds them."""
    return None if view is None else view._replace(pullback=None)

  def reshow(self, method: str, state: Any, view: Any):
    """A stored view shown again with ``state`` (the weights it was shown with): ``(state, view)``."""
    if view is None or not self.rules[method].uses_vjp:
      return state, view
    return self.tools[method].jitted['show'](state, view)

  def finish(self, method: str, state: Any, view: Any) -> Any:
    """The image is accepted: the end-of-image update (PI; nothing for frozen). State donated."""
    return self.tools[method].finish(state, view)

  def frozen_prediction(self, view: Any) -> np.ndarray:
    """The pre-trained model's prediction of the view's input (the learning panel's comparison)."""
    return np.asarray(self._predict(self.params0, view.x))

  def dice(self, pred: np.ndarray, gt: np.ndarray) -> list[float]:
    """Dice of every class (background first) of ``pred`` against ``gt``."""
    return [
      float(d) for d in np.asarray(self._dice(np.asarray(pred, np.int32), np.asarray(gt, np.int32)))
    ]

  def auto_click(self, gt: np.ndarray, pred: np.ndarray | None, image_index: int, t: int):
    """The simulated user's next click on ``gt``: ``((row, col), label)`` or None when nothing is wrong."""
    key = jax.random.fold_in(jax.random.fold_in(self._key, 10**6 + int(image_index)), int(t))
    first = pred is None
    pred = np.zeros(gt.shape, np.int32) if first else pred
    coord, label, valid = self._auto(key, jnp.asarray(gt, jnp.int32), jnp.asarray(pred), first)
    if not bool(valid):
      return None
    return (int(coord[0]), int(coord[1])), int(label)

  # ---- compilation ---------------------------------------------------------------------------------------

  def warmup_jobs(
    self, shape: tuple[int, ...], first: str, with_gt: bool
  ) -> list[Callable[[], Any]]:
    """Ahead-of-time compilations for images of ``shape`` (H, W, C), one function a job: ``first``'s
    click 1 (start, show) first, then its next click (propose, adapt), the frozen comparison, its
    Accept, then the other methods."""
    image = jax.ShapeDtypeStruct(tuple(shape), jnp.float32)
    coord, label = jax.ShapeDtypeStruct((2,), jnp.int32), jax.ShapeDtypeStruct((), jnp.int32)
    key = jax.eval_shape(lambda: self.image_key(0))
    order = [first] + [m for m in self.methods if m != first]
    jobs: list[Callable[[], Any]] = []
    for i, m in enumerate(order):
      j = self.tools[m].jitted
      state = jax.eval_shape(j['init'], self.params0)
      _, placed = jax.eval_shape(j['start'], state, image, coord, label, key)
      _, shown = jax.eval_shape(j['show'], state, placed)
      proposed, _ = jax.eval_shape(j['propose'], state, shown, coord, label)
      if self.updates(m):  # Undo's snapshot before each click
        jobs.append(lambda s=state: self._copy.lower(s).compile())
      calls = [('start', (state, image, coord, label, key)), ('show', (state, placed))]
      calls += [('propose', (state, shown, coord, label)), ('adapt', (state, proposed))]
      for name, args in calls:
        jobs.append(lambda f=j[name], a=args: f.lower(*a).compile())
      if i == 0 and with_gt:
        gt = jax.ShapeDtypeStruct(tuple(shape[:2]), jnp.int32)
        jobs.append(lambda v=shown: self._predict.lower(self.params0, v.x).compile())
        jobs.append(lambda: self._dice.lower(gt, gt).compile())
      jobs.append(lambda f=j['finish'], s=state, v=shown: f.lower(s, v).compile())
    return jobs
