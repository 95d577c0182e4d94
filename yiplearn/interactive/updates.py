"""Online update rules for click-conditioned segmentation (DESIGN.md 1.1), in the optax spirit.

Everything here is a pure function of an :class:`AdaptState` pytree plus static hyper-parameters
(:class:`HParams`, closed over or static); one call = one optimiser step. A step whose loss or gradients are
not finite is a no-op on params and optimiser state and is counted in ``state.skipped``.

Rules (all per image, no batch dim; ``apply_fn(params, x (1, H, W, C)) -> logits (1, H, W, K)``):

* :func:`mi_step` -- Mid-Interaction, after click t >= 2: P_prev = f(I, C_{t-1}) with gradient, pseudo-label
  P_init = argmax f(I, C_t) (no gradient), loss DiceFocal(P_prev, P_init) + beta CCG(P_prev, P_init, {c_t}).
  :func:`mi_loss_from_logits` is the same loss on given logits (the session reuses the displayed forward pass).
* :func:`pi_step` -- Post-Interaction after the image: stage 1 DiceFocal(f(I, {c_1}), P_final); stage 2 up to
  ``pi_clicks`` artificial correction clicks from the error components between argmax P_1 and P_final,
  DiceFocal + beta CCG on f(I, those clicks). Two optimiser steps.
* :func:`ia_sa_step` -- IA+SA (Kontogianni et al., ECCV 2020): CE on the clicked pixels (all clicks so far)
  + ``ia_sa_reg_weight`` * CE to the frozen pre-trained model's soft prediction on the same input.
* :func:`tent_step` -- entropy minimisation of the current prediction, all parameters. (Tent's original
  variant adapts only BatchNorm affine parameters; our default InstanceNorm has none, so all parameters adapt.)
* :func:`oracle_step` -- DiceFocal(f(I, C_T), ground truth): the supervised upper bound.
* episodic -- any method with params and optimiser state reset to the pre-trained ones before each image
  (:func:`episodic_reset`).

The optimiser is Adam with the learning rate injected into its state (``optax.inject_hyperparams``), so
independent streams with different learning rates are a ``vmap`` over the state (:func:`set_learning_rate`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from yiplearn import losses, optim
from yiplearn.clicks import Clicks, model_input, select
from yiplearn.interactive import user

__all__ = [
  'METHODS',
  'Method',
  'HParams',
  'Anchor',
  'AdaptState',
  'get_method',
  'hparams_from_config',
  'make_optimizer',
  'init_state',
  'set_learning_rate',
  'guarded_update',
  'episodic_reset',
  'predict',
  'make_input',
  'mi_loss_from_logits',
  'mi_step',
  'pi_step',
  'ia_sa_step',
  'tent_step',
  'oracle_step',
  'check_method_names',
]

ApplyFn = Callable[[Any, jax.Array], jax.Array]


class Method(NamedTuple):
  """Which updates a method performs (static).

  Attributes:
    name: canonical name.
    mi: Mid-Interaction update after every click t >= 2.
    pi: Post-Interaction (two stages) after every image.
    per_click: 'none' | 'ia_sa' | 'tent' -- an update on the current input after every click.
    oracle: ground-truth fine-tuning after every image.
    episodic: reset params and optimiser state to the pre-trained ones before every image.
  """

  name: str
  mi: bool = False
  pi: bool = False
  per_click: str = 'none'
  oracle: bool = False
  episodic: bool = False

  @property
  def updates(self) -> bool:
    return self.mi or self.pi or self.oracle or self.per_click != 'none'


METHODS = {
  'frozen': Method('frozen'),
  'mi_only': Method('mi_only', mi=True),
  'pi_only': Method('pi_only', pi=True),
  'pi_mi': Method('pi_mi', mi=True, pi=True),
  'ia_sa': Method('ia_sa', per_click='ia_sa'),
  'tent': Method('tent', per_click='tent'),
  'oracle': Method('oracle', oracle=True),
}
_ALIASES = {'pi': 'pi_only', 'mi': 'mi_only', 'icnn': 'frozen', 'mi_pi': 'pi_mi'}


def get_method(name: str, episodic: bool = False) -> Method:
  """A :class:`Method` by name (see METHODS; aliases 'pi', 'mi'); a '_episodic' suffix sets episodic."""
  base = name[: -len('_episodic')] if name.endswith('_episodic') else name
  base = _ALIASES.get(base, base)
  if base not in METHODS:
    raise ValueError(
      f'method: got {name!r}, expected one of {sorted(METHODS) + sorted(_ALIASES)} '
      f"(optionally with suffix '_episodic')"
    )
  return METHODS[base]._replace(episodic=episodic or name.endswith('_episodic'))


class HParams(NamedTuple):
  """Static hyper-parameters of the online session (paper defaults in brackets, DESIGN.md 1.1).

  Attributes:
    num_classes: K.
    method: method name (see :func:`get_method`) [pi_mi]; episodic: reset before each image [False].
    num_clicks: T clicks per image [10].
    encoding / click_sigma / click_radius / prev_mask: click-map encoding ('gaussian' [sigma 5] | 'disk'
      [radius 5]) and whether the model takes the previous foreground mask as an extra channel [False].
    policy: simulated user's click policy ['random_in_largest'] | 'deepest'.
    alpha, gamma: DiceFocal [0.7, 2]; beta: CCG weight [200]; ccg_sigma [3]; ccg_variant ['paper'] | 'released'.
    lr: Adam learning rate [1e-4 fundus, 5e-5 brain].
    pi_clicks: stage-2 artificial clicks (None -> num_clicks). pi_repredict: build stage-2 clicks from
      argmax P_1 re-predicted after stage 1 (False: the P_1 of stage 1, as the spec reads).
    ia_sa_reg_weight: IA+SA regulariser weight [1]. tent_lr_scale: Tent's learning-rate multiplier [1].
    report: ((name, (classes...)), ...) foreground unions scored per click (empty -> each foreground class).
  """

  num_classes: int
  method: str = 'pi_mi'
  episodic: bool = False
  num_clicks: int = 10
  encoding: str = 'gaussian'
  click_sigma: float = 5.0
  click_radius: float = 5.0
  prev_mask: bool = False
  policy: str = 'random_in_largest'
  alpha: float = 0.7
  gamma: float = 2.0
  beta: float = 200.0
  ccg_sigma: float = 3.0
  ccg_variant: str = 'paper'
  lr: float = 1e-4
  pi_clicks: int | None = None
  pi_repredict: bool = False
  ia_sa_reg_weight: float = 1.0
  tent_lr_scale: float = 1.0
  report: tuple = ()

  @property
  def rule(self) -> Method:
    return get_method(self.method, self.episodic)

  @property
  def report_unions(self) -> tuple[tuple[str, tuple[int, ...]], ...]:
    if self.report:
      return tuple((str(n), tuple(int(c) for c in cs)) for n, cs in self.report)
    return tuple((f'class{k}', (k,)) for k in range(1, self.num_classes))

  def validate(self) -> HParams:
    """Raises one ValueError naming the first bad field; returns self."""
    self.rule  # noqa: B018 - validates the method name
    checks = [
      (
        'num_classes',
        self.num_classes,
        int(self.num_classes) == self.num_classes and self.num_classes >= 2,
        'an integer >= 2',
      ),
      (
        'num_clicks',
        self.num_clicks,
        int(self.num_clicks) == self.num_clicks and self.num_clicks >= 1,
        'an integer >= 1',
      ),
      ('encoding', self.encoding, self.encoding in ('gaussian', 'disk'), "'gaussian' or 'disk'"),
      ('policy', self.policy, self.policy in user.POLICIES, f'one of {user.POLICIES}'),
      (
        'ccg_variant',
        self.ccg_variant,
        self.ccg_variant in ('paper', 'released'),
        "'paper' or 'released'",
      ),
      ('alpha', self.alpha, 0.0 <= self.alpha <= 1.0, 'in [0, 1]'),
      ('lr', self.lr, self.lr > 0, '> 0'),
      ('pi_clicks', self.pi_clicks, self.pi_clicks is None or self.pi_clicks >= 1, 'None or >= 1'),
    ]
    for name, value, ok, expected in checks:
      if not ok:
        raise ValueError(f'{name}: got {value!r}, expected {expected}')
    for n, cs in self.report_unions:
      if not cs or any(not 0 < c < self.num_classes for c in cs):
        raise ValueError(
          f'report.{n}: got {list(cs)}, expected foreground classes in [1, {self.num_classes})'
        )
    return self


def hparams_from_config(config: Any, method: str) -> HParams:
  """HParams from an ``adapt_interactive`` ConfigDict (fields num_classes, clicks.*, loss.*, optim.lr, episodic,
  ia_sa.reg_weight, tent.lr_scale, report); missing optional sections keep the defaults."""
  get = lambda obj, name, default: getattr(obj, name, default) if obj is not None else default
  clicks, loss = get(config, 'clicks', None), get(config, 'loss', None)
  report = get(config, 'report', None)
  return HParams(
    num_classes=int(config.num_classes),
    method=method,
    episodic=bool(get(config, 'episodic', False)),
    num_clicks=int(get(clicks, 'max_clicks', 10)),
    encoding=str(get(clicks, 'encoding', 'gaussian')),
    click_sigma=float(get(clicks, 'sigma', 5.0)),
    click_radius=float(get(clicks, 'radius', 5.0)),
    prev_mask=bool(get(clicks, 'prev_mask', False)),
    policy=str(get(clicks, 'policy', 'random_in_largest')),
    alpha=float(get(loss, 'alpha', 0.7)),
    gamma=float(get(loss, 'gamma', 2.0)),
    beta=float(get(loss, 'beta', 200.0)),
    ccg_sigma=float(get(loss, 'ccg_sigma', 3.0)),
    ccg_variant=str(get(loss, 'ccg_variant', 'paper')),
    lr=float(config.optim.lr),
    ia_sa_reg_weight=float(get(get(config, 'ia_sa', None), 'reg_weight', 1.0)),
    tent_lr_scale=float(get(get(config, 'tent', None), 'lr_scale', 1.0)),
    report=tuple((str(k), tuple(int(c) for c in v)) for k, v in dict(report or {}).items()),
  ).validate()


class Anchor(NamedTuple):
  """The pre-trained params and initial optimiser state (for episodic resets and IA+SA's regulariser)."""

  params: Any
  opt_state: Any


class AdaptState(NamedTuple):
  """Online adaptation state (a pytree; vmap it for independent streams).

  Attributes:
    params: the pytree handed to ``apply_fn`` (e.g. flax variables); every leaf is adapted.
    opt_state: optimiser state (Adam with injected learning rate).
    step: int32 number of update attempts so far.
    skipped: int32 number of attempts skipped because the loss or a gradient was not finite.
    anchor: :class:`Anchor` or None (kept only by methods that need it: episodic, ia_sa).
  """

  params: Any
  opt_state: Any
  step: jax.Array
  skipped: jax.Array
  anchor: Anchor | None = None


def make_optimizer(hp: HParams) -> optax.GradientTransformation:
  """Adam [lr hp.lr] with the learning rate stored in the state (``opt_state.hyperparams['learning_rate']``)."""
  return optax.inject_hyperparams(optax.adam)(learning_rate=hp.lr)


def init_state(
  params: Any, hp: HParams, tx: optax.GradientTransformation | None = None
) -> AdaptState:
  """Fresh state from pre-trained ``params``; keeps an :class:`Anchor` when the method needs one.

  The state owns copies of ``params`` (sessions donate the state, so the caller's arrays stay usable,
  e.g. for the next method's stream).
  """
  hp.validate()
  tx = tx or make_optimizer(hp)
  copy = lambda tree: jax.tree_util.tree_map(lambda a: jnp.array(a, copy=True), tree)
  rule = hp.rule
  anchor = None
  if rule.episodic or rule.per_click == 'ia_sa':
    anchor = Anchor(copy(params), tx.init(params))
  return AdaptState(
    copy(params), tx.init(params), jnp.zeros((), jnp.int32), jnp.zeros((), jnp.int32), anchor
  )


def set_learning_rate(state: AdaptState, lr: Any) -> AdaptState:
  """State with the injected Adam learning rate replaced (also in the anchor), e.g. per vmapped stream."""

  def put(opt_state):
    hyper = dict(opt_state.hyperparams)
    hyper['learning_rate'] = jnp.asarray(lr, jnp.asarray(hyper['learning_rate']).dtype)
    return opt_state._replace(hyperparams=hyper)

  anchor = state.anchor
  if anchor is not None:
    anchor = anchor._replace(opt_state=put(anchor.opt_state))
  return state._replace(opt_state=put(state.opt_state), anchor=anchor)


_all_finite = optim.all_finite
guarded_update = optim.guarded_update


def episodic_reset(state: AdaptState) -> AdaptState:
  """Params and optimiser state back to the anchor (counters kept)."""
  if state.anchor is None:
    raise ValueError(
      'state.anchor: got None, expected an Anchor (build the state with init_state for an '
      'episodic method)'
    )
  return state._replace(params=state.anchor.params, opt_state=state.anchor.opt_state)


def predict(apply_fn: ApplyFn, params: Any, x: jax.Array) -> jax.Array:
  """Logits (H, W, K) float32 of one input x (H, W, Cin)."""
  return apply_fn(params, x[None])[0].astype(jnp.float32)


def make_input(
  hp: HParams, image: jax.Array, clicks: Clicks, prev_pred: jax.Array | None = None
) -> jax.Array:
  """Model input (H, W, C + K [+ 1]): image ++ guidance maps [++ foreground of prev_pred (H, W) int]."""
  prev = None
  if hp.prev_mask:
    prev = (
      jnp.zeros(image.shape[:2], jnp.float32)
      if prev_pred is None
      else (prev_pred > 0).astype(jnp.float32)
    )
  return model_input(
    image,
    clicks,
    hp.num_classes,
    encoding=hp.encoding,
    sigma=hp.click_sigma,
    radius=hp.click_radius,
    prev_mask=prev,
  )


def _seg_loss(hp: HParams, logits: jax.Array, target: jax.Array) -> jax.Array:
  return losses.dice_focal(logits, target, hp.num_classes, alpha=hp.alpha, gamma=hp.gamma)


def _ccg(hp: HParams, logits: jax.Array, target: jax.Array, clicks: Clicks) -> jax.Array:
  return losses.ccg_loss(logits, target, clicks, sigma=hp.ccg_sigma, variant=hp.ccg_variant)


def mi_loss_from_logits(
  hp: HParams, prev_logits: jax.Array, pseudo: jax.Array, newest: Clicks
) -> jax.Array:
  """DiceFocal(prev_logits, pseudo) + beta * CCG(prev_logits, pseudo, newest): the MI loss, scalar."""
  return _seg_loss(hp, prev_logits, pseudo) + hp.beta * _ccg(hp, prev_logits, pseudo, newest)


def _newest(clicks: Clicks, t: jax.Array) -> Clicks:
  return select(clicks, jnp.arange(clicks.valid.shape[0]) == t)


def mi_step(
  apply_fn: ApplyFn,
  tx: optax.GradientTransformation,
  hp: HParams,
  state: AdaptState,
  x_prev: jax.Array,
  x_cur: jax.Array,
  clicks: Clicks,
  t: jax.Array,
) -> tuple[AdaptState, jax.Array]:
  """Mid-Interaction update after click ``t`` (0-based slot of the newest click, t >= 1).

  Args:
    x_prev: (H, W, Cin) input for C_{t-1}; x_cur: input for C_t; clicks: C_t (slot t the newest click).
  Returns: (new state, loss). No update (and nothing counted) when click t is not valid.
  """
  pseudo = jnp.argmax(predict(apply_fn, jax.lax.stop_gradient(state.params), x_cur), -1).astype(
    jnp.int32
  )
  newest = _newest(clicks, t)
  loss, grads = jax.value_and_grad(
    lambda p: mi_loss_from_logits(hp, predict(apply_fn, p, x_prev), pseudo, newest)
  )(state.params)
  return guarded_update(tx, state, loss, grads, enabled=clicks.valid[t]), loss


def pi_step(
  apply_fn: ApplyFn,
  tx: optax.GradientTransformation,
  hp: HParams,
  state: AdaptState,
  image: jax.Array,
  clicks: Clicks,
  final_pred: jax.Array,
  key: jax.Array,
) -> tuple[AdaptState, jax.Array, Clicks]:
  """Post-Interaction: two optimiser steps after the image is accepted.

  Stage 1: P_1 = f(I, {c_1}), loss DiceFocal(P_1, P_final). Stage 2: up to ``pi_clicks`` correction clicks
  (largest error component first, labelled by P_final) between argmax P_1 and P_final, fed alone; loss
  DiceFocal + beta CCG on them. Stage 2 is skipped (not counted) when P_1 already equals P_final.

  Args:
    image: (H, W, C) float32; clicks: the image's clicks (slot 0 = c_1); final_pred: (H, W) int P_final.
  Returns: (state, losses (2,) [stage 1, stage 2], stage-2 clicks).
  """
  first = _newest(clicks, 0)
  x1 = make_input(hp, image, first)
  loss1, (grads1, logits1) = _value_grad_logits(
    apply_fn, state.params, x1, lambda lg: _seg_loss(hp, lg, final_pred)
  )
  state = guarded_update(tx, state, loss1, grads1)
  if hp.pi_repredict:
    logits1 = predict(apply_fn, state.params, x1)
  p1 = jnp.argmax(logits1, -1).astype(jnp.int32)
  n = hp.pi_clicks or hp.num_clicks
  art = user.simulate_clicks(key, final_pred, p1, hp.num_classes, n, policy=hp.policy)
  x2 = make_input(hp, image, art, p1)
  loss2, grads2 = jax.value_and_grad(
    lambda p: (lambda lg: _seg_loss(hp, lg, final_pred) + hp.beta * _ccg(hp, lg, final_pred, art))(
      predict(apply_fn, p, x2)
    )
  )(state.params)
  state = guarded_update(tx, state, loss2, grads2, enabled=jnp.any(art.valid))
  return state, jnp.stack([loss1, loss2]), art


def _value_grad_logits(apply_fn: ApplyFn, params: Any, x: jax.Array, loss_of_logits: Callable):
  """(loss, (grads, logits)) with one forward pass."""

  def f(p):
    lg = predict(apply_fn, p, x)
    return loss_of_logits(lg), lg

  (loss, logits), grads = jax.value_and_grad(f, has_aux=True)(params)
  return loss, (grads, jax.lax.stop_gradient(logits))


def ia_sa_step(
  apply_fn: ApplyFn,
  tx: optax.GradientTransformation,
  hp: HParams,
  state: AdaptState,
  x: jax.Array,
  clicks: Clicks,
) -> tuple[AdaptState, jax.Array]:
  """IA+SA update on the current input x (H, W, Cin) with clicks C_t: CE on the clicked pixels + reg * CE to
  the pre-trained model's soft prediction f(x; theta_0) (needs ``state.anchor``). Skipped without clicks."""
  if state.anchor is None:
    raise ValueError(
      'state.anchor: got None, expected an Anchor (build the state with init_state(..., hp) '
      "for method 'ia_sa')"
    )
  ref = predict(apply_fn, jax.lax.stop_gradient(state.anchor.params), x)

  def loss_fn(p):
    lg = predict(apply_fn, p, x)
    return losses.clicked_pixel_ce(lg, clicks) + hp.ia_sa_reg_weight * losses.soft_cross_entropy(
      lg, ref
    )

  loss, grads = jax.value_and_grad(loss_fn)(state.params)
  return guarded_update(tx, state, loss, grads, enabled=jnp.any(clicks.valid)), loss


def tent_step(
  apply_fn: ApplyFn, tx: optax.GradientTransformation, hp: HParams, state: AdaptState, x: jax.Array
) -> tuple[AdaptState, jax.Array]:
  """Tent-style update: minimise the mean per-pixel entropy of f(x) over all parameters (lr * tent_lr_scale).

  Tent's original variant updates only BatchNorm affine parameters; non-affine InstanceNorm has none."""
  loss, grads = jax.value_and_grad(lambda p: losses.entropy_loss(predict(apply_fn, p, x)))(
    state.params
  )
  return guarded_update(tx, state, loss, grads, scale=hp.tent_lr_scale), loss


def oracle_step(
  apply_fn: ApplyFn,
  tx: optax.GradientTransformation,
  hp: HParams,
  state: AdaptState,
  x: jax.Array,
  gt: jax.Array,
) -> tuple[AdaptState, jax.Array]:
  """Oracle: one step on DiceFocal(f(x), ground truth) with x the final input (all clicks)."""
  loss, grads = jax.value_and_grad(lambda p: _seg_loss(hp, predict(apply_fn, p, x), gt))(
    state.params
  )
  return guarded_update(tx, state, loss, grads), loss


def check_method_names(names: Sequence[str]) -> None:
  """Raises ValueError for the first unknown method name."""
  for n in names:
    get_method(n)
