"""Online update rules for click-conditioned segmentation (DESIGN.md 1.1), shaped like optax.

A rule is a factory closing over its own hyper-parameters that returns a :class:`Rule`: a NamedTuple of
pure hooks with a rule state of its own (``()``, or e.g. the anchor of IA+SA and episodic resets)::

  init(train) -> rstate                                    # from the initial optim.TrainState
  start(rstate, train, env) -> (rstate, train)             # a new image arrives
  click(rstate, train, view, env) -> (rstate, train, loss) # click t placed, before f(I, C_t) is shown
  finish(rstate, train, view, env, gt) -> (rstate, train, losses (2,))   # the image is accepted

``view`` is a :class:`~yiplearn.interactive.step.View` (the newest click, its input, the displayed
prediction and its VJP, the proposal); ``env`` an :class:`~yiplearn.interactive.step.Env` (model,
optimiser, session spec); ``gt`` is None outside simulations. Every step goes through
``optim.guarded_update`` (a non-finite loss or gradient skips the step and is counted). The flags
``uses_vjp`` / ``uses_proposal`` tell the click step what to compute, ``updates_on_click`` whether a
click hook changes the weights, ``needs_gt`` that the rule cannot run in a tool.

Factories: :func:`frozen`, :func:`mi` (Mid-Interaction), :func:`pi` (Post-Interaction), :func:`ia_sa`
(Kontogianni et al. 2020), :func:`tent` (entropy minimisation), :func:`oracle` (ground truth);
combinators :func:`chain` and :func:`episodic`; :data:`METHODS` maps the method names (``pi_mi`` is
``chain(mi(), pi())``) to factories and :func:`make` builds one by name.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import optax

from yiplearn import clicks as clicks_lib
from yiplearn import errors, losses, optim
from yiplearn.interactive import step, user
from yiplearn.interactive.hooks import Rule, State, chain, copy_tree, episodic, make_rule
from yiplearn.interactive.spec import Loss

__all__ = [
  'Rule',
  'State',
  'METHODS',
  'make',
  'check_names',
  'defaults',
  'frozen',
  'mi',
  'pi',
  'pi_mi',
  'ia_sa',
  'tent',
  'oracle',
  'chain',
  'episodic',
  'make_optimizer',
  'init_state',
  'set_learning_rate',
  'objective',
  'seg_loss',
  'ccg',
]


def seg_loss(loss: Loss, logits: jax.Array, target: jax.Array, k: int) -> jax.Array:
  """DiceFocal(logits, target) with K = k classes."""
  return losses.dice_focal(logits, target, k, alpha=loss.alpha, gamma=loss.gamma)


def ccg(loss: Loss, logits: jax.Array, target: jax.Array, clicks: clicks_lib.Clicks) -> jax.Array:
  """The click-centred Gaussian loss of ``clicks`` (sigma and variant of ``loss``)."""
  return losses.ccg_loss(logits, target, clicks, sigma=loss.ccg_sigma, variant=loss.ccg_variant)


def objective(
  loss: Loss, logits: jax.Array, target: jax.Array, clicks: clicks_lib.Clicks | None, k: int
) -> jax.Array:
  """DiceFocal [+ beta CCG on ``clicks``]: the loss of MI, PI, the oracle and pre-training."""
  seg = seg_loss(loss, logits, target, k)
  return seg if clicks is None else seg + loss.beta * ccg(loss, logits, target, clicks)


def _newest(clicks: clicks_lib.Clicks, t: jax.Array) -> clicks_lib.Clicks:
  return clicks_lib.select(clicks, jnp.arange(clicks.valid.shape[0]) == t)


def frozen() -> Rule:
  """No updates (ICNN* in the paper)."""
  return make_rule('frozen')


def mi(loss: Loss = Loss()) -> Rule:
  """Mid-Interaction after click t >= 2: P_prev = f(I, C_{t-1}) (the displayed logits, their VJP),
  pseudo-label P_init = argmax f(I, C_t) (the proposal), loss DiceFocal(P_prev, P_init) + beta
  CCG(P_prev, P_init, {c_t}); one step, only when click t is valid. Put it first in a chain (its
  gradient is taken at the weights of the displayed prediction)."""
  loss = loss.validate()

  def click(rstate, train, view, env):
    if view.pullback is None:  # click 1: nothing displayed yet
      return rstate, train, jnp.float32(0.0)
    newest = _newest(view.clicks, view.t)
    k = env.spec.num_classes
    value, dlogits = jax.value_and_grad(lambda lg: objective(loss, lg, view.proposal, newest, k))(
      view.logits
    )
    (grads,) = view.pullback(dlogits)
    valid = view.clicks.valid[view.t]
    train = optim.guarded_update(env.tx, train, value, grads, enabled=valid)
    return rstate, train, jnp.where(valid, value, 0.0)

  return make_rule('mi', click=click, uses_vjp=True, uses_proposal=True, updates_on_click=True)


def _value_grad_logits(apply_fn, params, x, loss_of_logits):
  def f(p):
    lg = step.predict(apply_fn, p, x)
    return loss_of_logits(lg), lg

  (value, logits), grads = jax.value_and_grad(f, has_aux=True)(params)
  return value, grads, jax.lax.stop_gradient(logits)


def pi(
  loss: Loss = Loss(),
  pi_clicks: int | None = None,
  pi_repredict: bool = False,
  pi_stage1_ccg: bool = False,
  pi_fill: str = 'invalid',
) -> Rule:
  """Post-Interaction after the image is accepted (P_final = the displayed prediction): two steps.

  Stage 1: P_1 = f(I, {c_1}), loss DiceFocal(P_1, P_final) [+ beta CCG on c_1 with ``pi_stage1_ccg``,
  as the released code does]. Stage 2: up to ``pi_clicks`` (None: T) correction clicks between
  argmax P_1 (re-predicted after stage 1 with ``pi_repredict``) and P_final, largest error component
  first, labelled by P_final, fed alone; loss DiceFocal + beta CCG on them; skipped without clicks.
  ``pi_fill='released'`` fills the stage-2 slots as the released code does (``user.simulate_clicks``:
  the last click repeated, background clicks at (0, 0) without an error), so stage 2 always steps.
  """
  loss = loss.validate()
  if pi_clicks is not None and not (int(pi_clicks) == pi_clicks and pi_clicks >= 1):
    raise errors.invalid('pi_clicks', pi_clicks, 'None or an integer >= 1')
  if pi_fill not in user.FILLS:
    raise errors.invalid('pi.fill', pi_fill, f'one of {user.FILLS}')

  def finish(rstate, train, view, env, gt):
    del gt
    spec, k, final = env.spec, env.spec.num_classes, view.pred
    first = _newest(view.clicks, 0)
    x1 = step.build_input(spec, view.image, first)
    stage1 = first if pi_stage1_ccg else None
    l1, g1, logits1 = _value_grad_logits(
      env.apply_fn, train.params, x1, lambda lg: objective(loss, lg, final, stage1, k)
    )
    train = optim.guarded_update(env.tx, train, l1, g1)
    if pi_repredict:
      logits1 = step.predict(env.apply_fn, train.params, x1)
    p1 = jnp.argmax(logits1, -1).astype(jnp.int32)
    n = pi_clicks or spec.num_clicks
    key = step.finish_key(view.key, spec.num_clicks)
    art = user.simulate_clicks(
      key, final, p1, k, n, policy=spec.policy, tie_break=spec.tie_break, fill=pi_fill
    )
    x2 = step.build_input(spec, view.image, art, p1)
    l2, g2, _ = _value_grad_logits(
      env.apply_fn, train.params, x2, lambda lg: objective(loss, lg, final, art, k)
    )
    train = optim.guarded_update(env.tx, train, l2, g2, enabled=jnp.any(art.valid))
    return rstate, train, jnp.stack([l1, l2])

  return make_rule('pi', finish=finish)


def pi_mi(
  loss: Loss = Loss(),
  pi_clicks: int | None = None,
  pi_repredict: bool = False,
  pi_stage1_ccg: bool = False,
  pi_fill: str = 'invalid',
) -> Rule:
  """The paper's method: ``chain(mi(loss), pi(loss, ...))``."""
  return chain(mi(loss), pi(loss, pi_clicks, pi_repredict, pi_stage1_ccg, pi_fill), name='pi_mi')


def ia_sa(reg_weight: float = 1.0) -> Rule:
  """IA+SA (Kontogianni et al., ECCV 2020) before each prediction is shown: CE on the clicked pixels
  (all clicks so far) + ``reg_weight`` * CE to the pre-trained model's soft prediction on the same
  input (the anchor, kept in the rule state). Skipped while no click is valid."""
  if not reg_weight >= 0:
    raise errors.invalid('ia_sa.reg_weight', reg_weight, '>= 0')

  def click(anchor, train, view, env):
    ref = step.predict(env.apply_fn, jax.lax.stop_gradient(anchor), view.x)

    def loss_fn(p):
      lg = step.predict(env.apply_fn, p, view.x)
      return losses.clicked_pixel_ce(lg, view.clicks) + reg_weight * losses.soft_cross_entropy(
        lg, ref
      )

    value, grads = jax.value_and_grad(loss_fn)(train.params)
    enabled = jnp.any(view.clicks.valid)
    return anchor, optim.guarded_update(env.tx, train, value, grads, enabled=enabled), value

  return make_rule(
    'ia_sa', init=lambda train: copy_tree(train.params), click=click, updates_on_click=True
  )


def tent(lr_scale: float = 1.0) -> Rule:
  """Tent-style: minimise the mean per-pixel entropy of f(I, C_t) over all parameters before each
  prediction is shown (learning rate x ``lr_scale``). Tent's original variant adapts BatchNorm affine
  parameters only; the default non-affine InstanceNorm has none."""
  if not lr_scale > 0:
    raise errors.invalid('tent.lr_scale', lr_scale, '> 0')

  def click(rstate, train, view, env):
    value, grads = jax.value_and_grad(
      lambda p: losses.entropy_loss(step.predict(env.apply_fn, p, view.x))
    )(train.params)
    return rstate, optim.guarded_update(env.tx, train, value, grads, scale=lr_scale), value

  return make_rule('tent', click=click, updates_on_click=True)


def oracle(loss: Loss = Loss()) -> Rule:
  """After the image: one step on DiceFocal(f(I, C_T), ground truth) (the supervised upper bound)."""
  loss = loss.validate()

  def finish(rstate, train, view, env, gt):
    if gt is None:
      raise errors.invalid('gt', None, 'the ground truth (the oracle fine-tunes on it)')
    value, grads, _ = _value_grad_logits(
      env.apply_fn,
      train.params,
      view.x,
      lambda lg: objective(loss, lg, gt, None, env.spec.num_classes),
    )
    train = optim.guarded_update(env.tx, train, value, grads)
    return rstate, train, jnp.stack([value, jnp.float32(0.0)])

  return make_rule('oracle', finish=finish, needs_gt=True)


METHODS: dict[str, Callable[..., Rule]] = {
  'frozen': frozen,
  'mi': mi,
  'pi': pi,
  'pi_mi': pi_mi,
  'ia_sa': ia_sa,
  'tent': tent,
  'oracle': oracle,
}
EPISODIC_SUFFIX = '_episodic'


def _base(name: str) -> str:
  return name[: -len(EPISODIC_SUFFIX)] if name.endswith(EPISODIC_SUFFIX) else name


def check_names(names: Sequence[str], field: str = 'methods') -> None:
  """Raises a UserError for the first name that is not a method (optionally with '_episodic')."""
  for n in names:
    if _base(str(n)) not in METHODS:
      raise errors.invalid(
        field, n, f"one of {sorted(METHODS)} (optionally with suffix '{EPISODIC_SUFFIX}')"
      )


def defaults(factory: Callable[..., Rule]) -> dict[str, Any]:
  """The keyword defaults of a factory (the one home of each rule hyper-parameter's default)."""
  return {
    n: p.default
    for n, p in inspect.signature(factory).parameters.items()
    if p.default is not inspect.Parameter.empty
  }


def make(name: str, *, episodic_reset: bool = False, **hyper: Any) -> Rule:
  """The rule of method ``name``: its factory gets the hyper-parameters (of ``hyper``) it names.

  A '_episodic' suffix (or ``episodic_reset``) wraps it in :func:`episodic`.
  """
  check_names([name], 'method')
  factory = METHODS[_base(name)]
  wanted = inspect.signature(factory).parameters
  rule = factory(**{k: v for k, v in hyper.items() if k in wanted})
  if episodic_reset or name.endswith(EPISODIC_SUFFIX):
    rule = episodic(rule)
  return rule


def make_optimizer(lr: float = 1e-4) -> optax.GradientTransformation:
  """Adam with the learning rate in its state (``set_learning_rate``; streams may differ by a vmap)."""
  if not lr > 0:
    raise errors.invalid('lr', lr, '> 0')
  return optax.inject_hyperparams(optax.adam)(learning_rate=lr)


def init_state(rule: Rule, params: Any, tx: optax.GradientTransformation | None = None) -> State:
  """A fresh state owning copies of ``params`` (sessions donate it; the caller's arrays stay usable)."""
  train = optim.init_train_state(params, tx or make_optimizer())
  return State(train, rule.init(train))


_INJECTED = (optax.InjectHyperparamsState, optax.InjectStatefulHyperparamsState)


def set_learning_rate(state: State, lr: Any) -> State:
  """Every injected learning rate of the state (the optimiser's, and an episodic anchor's) set to lr."""

  def put(node):
    if not isinstance(node, _INJECTED):
      return node
    hyper = dict(node.hyperparams)
    hyper['learning_rate'] = jnp.asarray(lr, jnp.asarray(hyper['learning_rate']).dtype)
    return node._replace(hyperparams=hyper)

  return jax.tree_util.tree_map(put, state, is_leaf=lambda n: isinstance(n, _INJECTED))
