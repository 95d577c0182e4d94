"""The authors' released code (github WenTXuL/OAIMS, commit 2c45f32) reproduced option by option.

DESIGN.md 1.1 lists every difference from the paper's text; each is pinned here against values
worked out by hand from the released code:

1. CCG: the swapped CrossEntropyLoss value log(e + K - 1) - p[P], per H W, 21 x 21 window.
2. Post-Interaction stage 1 with beta CCG on click 1 (tests/test_rules.py::
   test_pi_stage2_clicks_in_error_regions_and_stage1_ccg).
3. Post-Interaction stage 2 always feeds T clicks (filler), so it always steps.
4. Ties between equal-size error components go to the later error type / component.
5. Pre-training: click sampler, one click count per batch, learning-rate steps, selection at 6 clicks.
6. Guidance channels ordered [cup, rim, bg] / [fg, bg]. (Conv biases before InstanceNorm with eps
   1e-5: tests/test_unet.py::test_released_conv_bias_and_instance_norm_eps.)
And the one switch, the `released` config argument, sets every option and each reaches the core.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
from toys import toy_apply, toy_params

from configs import interactive_fundus, interactive_lgg
from yiplearn import clicks as clicks_lib
from yiplearn import losses, optim
from yiplearn.experiments import interactive_setup, pretrain, seg_common
from yiplearn.interactive import pretraining, rules, sampler, step, user
from yiplearn.interactive.spec import SessionSpec

KEY = jax.random.PRNGKey(0)


def _clicks(coords, labels):
  return clicks_lib.from_lists(coords, labels, len(coords))


# 1. CCG ---------------------------------------------------------------------------------------


def test_ccg_value_is_the_swapped_cross_entropy_per_hw_in_a_21x21_window():
  h = w = 31
  k = 3
  target = jnp.ones((h, w), jnp.int32)
  logits = jnp.zeros((h, w, k))  # p = 1/3 everywhere
  c = _clicks([[15, 15]], [1])
  g = np.exp(-(np.arange(-10, 11) ** 2) / (2 * (10 // 3) ** 2)).sum()  # the +-10 px window
  # -sum_k p_k log_softmax(one_hot(P))_k = -(1/3)(1 - log(e + 2)) - (2/3)(-log(e + 2)).
  per_pixel = -(1 / 3) * (1 - np.log(np.e + 2)) - (2 / 3) * (-np.log(np.e + 2))
  np.testing.assert_allclose(per_pixel, np.log(np.e + 2) - 1 / 3, rtol=1e-12)
  got = float(losses.ccg_loss(logits, target, c, sigma=3.0, variant='released'))
  np.testing.assert_allclose(got, g * g * per_pixel / (h * w), rtol=1e-5)
  wts = np.asarray(losses.ccg_weights(c, target, k, sigma=3.0, window=10))
  assert (wts > 0).sum() == 21 * 21


def test_ccg_sums_over_clicks_without_dividing_by_their_number():
  h = w = 51
  target = jnp.ones((h, w), jnp.int32)
  logits = jnp.zeros((h, w, 2))
  one = float(losses.ccg_loss(logits, target, _clicks([[10, 10]], [1]), variant='released'))
  two = _clicks([[10, 10], [40, 40]], [1, 1])
  g = np.exp(-(np.arange(-10, 11) ** 2) / 18.0).sum()
  want = 2 * g * g * (np.log(np.e + 1) - 0.5) / (h * w)
  got = float(losses.ccg_loss(logits, target, two, variant='released'))
  np.testing.assert_allclose(got, want, rtol=1e-5)
  np.testing.assert_allclose(2 * one, want, rtol=1e-6)
  paper = float(losses.ccg_loss(logits, target, two, variant='paper'))
  paper_one = float(losses.ccg_loss(logits, target, _clicks([[10, 10]], [1]), variant='paper'))
  np.testing.assert_allclose(paper, paper_one, rtol=1e-6)  # the paper's mean over clicks


def test_ccg_gradient_is_that_of_one_minus_p():
  rng = np.random.default_rng(0)
  logits = jnp.asarray(rng.normal(size=(20, 20, 3)), jnp.float32)
  target = jnp.asarray(rng.integers(0, 3, size=(20, 20)), jnp.int32)
  c = _clicks([[4, 5], [15, 12]], [1, 2])
  got = jax.grad(lambda lg: losses.ccg_loss(lg, target, c, variant='released'))(logits)
  wts = losses.ccg_weights(c, target, 3, sigma=3.0, window=10)

  def linear(lg):
    p = jnp.take_along_axis(jax.nn.softmax(lg), target[..., None], -1)[..., 0]
    return jnp.sum(wts * (1 - p)) / 400

  np.testing.assert_allclose(np.asarray(got), np.asarray(jax.grad(linear)(logits)), atol=1e-7)


# 3. Post-Interaction stage-2 filler -----------------------------------------------------------


def _two_components():
  target = np.zeros((12, 12), np.int32)
  target[0:3, 0:2] = 1  # 6 px missed rim: the largest
  target[8, 8:10] = 2  # 2 px missed cup
  return jnp.asarray(target), jnp.zeros((12, 12), jnp.int32)


def test_stage2_filler_repeats_the_largest_click():
  target, pred = _two_components()
  sim = jax.jit(lambda k, t, p: user.simulate_clicks(k, t, p, 3, 4, fill='released'))
  c = jax.device_get(sim(KEY, target, pred))
  coords, labels = np.asarray(c.coords), np.asarray(c.labels)
  assert np.asarray(c.valid).all() and labels.tolist() == [1, 2, 1, 1]
  assert coords[0, 0] < 3 and coords[0, 1] < 2 and tuple(coords[1]) in {(8, 8), (8, 9)}
  assert (coords[2:] == coords[0]).all()
  # The largest component's click weighs T + 1 - n = 4 + 1 - 2 = 3 times in CCG.
  wts = np.asarray(losses.ccg_weights(c, target, 3, sigma=3.0, window=10))
  assert wts[tuple(coords[0])] == 3.0
  default = user.simulate_clicks(KEY, target, pred, 3, 4)
  assert np.asarray(default.valid).tolist() == [True, True, False, False]


def test_stage2_filler_without_errors_is_t_background_clicks_at_the_origin():
  target, _ = _two_components()
  c = user.simulate_clicks(KEY, target, target, 3, 5, fill='released')
  assert np.asarray(c.valid).all() and not np.asarray(c.coords).any()
  assert not np.asarray(c.labels).any()


def test_pi_stage2_steps_on_t_origin_clicks_when_stage1_is_already_right():
  spec = SessionSpec(num_classes=2, num_clicks=3)
  env = step.Env(toy_apply, rules.make_optimizer(1e-3), spec)
  params = toy_params(3, seed=3)
  img = jnp.asarray(np.random.default_rng(0).normal(size=(12, 12, 1)), jnp.float32)
  c = clicks_lib.from_lists([[6, 6]], [1], 3)
  p1 = jnp.argmax(toy_apply(params, step.build_input(spec, img, c)[None])[0], -1).astype(jnp.int32)
  state = rules.init_state(rules.pi(), params, env.tx)
  view = step.start(rules.frozen(), env, state, img, c.coords[0], 1, True, KEY)[1]
  view = view._replace(pred=p1)  # P_final = P_1: no error component
  run = lambda rule: jax.jit(lambda s, v: rule.finish(s.rule, s.train, v, env, None))(state, view)  # noqa: E731
  stage1 = run(rules.pi())[1]
  assert int(stage1.step) == 1  # the paper: stage 2 has no click and is skipped
  _, train, pl = run(rules.pi(pi_fill='released'))
  assert int(train.step) == 2  # the released code: T background clicks at (0, 0)
  origin = clicks_lib.Clicks(
    jnp.zeros((3, 2), jnp.int32), jnp.zeros(3, jnp.int32), jnp.ones(3, bool)
  )
  # Stage 2's loss: DiceFocal + beta CCG on the three origin clicks, from the stage-1 weights.
  lg = toy_apply(stage1.params, step.build_input(spec, img, origin, p1)[None])[0]
  want = losses.dice_focal(lg, p1, 2) + 200.0 * losses.ccg_loss(lg, p1, origin)
  np.testing.assert_allclose(float(pl[1]), float(want), rtol=1e-5)


# 4. Tie-break ---------------------------------------------------------------------------------


def _squares(size, placed, k):
  """target, pred with 2 x 2 error squares: placed = [((row, col), true, predicted), ...]."""
  target = np.zeros((size, size), np.int32)
  pred = np.zeros((size, size), np.int32)
  for (r, c), a, b in placed:
    target[r : r + 2, c : c + 2] = a
    pred[r : r + 2, c : c + 2] = b
  return jnp.asarray(target), jnp.asarray(pred)


@functools.partial(jax.jit, static_argnums=(2, 3))
def _correction(target, pred, k, tie_break):
  return user.correction_click(KEY, target, pred, k, tie_break=tie_break)


def _corr(target, pred, k, tie_break):
  coord, label, valid = _correction(target, pred, k, tie_break)
  assert bool(valid)
  return (int(coord[0]) // 2 * 2, int(coord[1]) // 2 * 2), int(label)


def test_ties_go_to_the_later_error_type_then_the_later_component():
  # Released order (K = 3): (1,2) (2,1) (1,0) (0,1) (2,0) (0,2); all squares 4 px.
  t, p = _squares(12, [((0, 0), 2, 1), ((0, 6), 1, 0), ((8, 8), 0, 2)], 3)
  assert _corr(t, p, 3, 'first') == ((0, 0), 2)  # raster order
  assert _corr(t, p, 3, 'released') == ((8, 8), 0)  # (0, 2) is the last type
  t, p = _squares(12, [((0, 0), 2, 1), ((0, 6), 1, 0)], 3)
  assert _corr(t, p, 3, 'released') == ((0, 6), 1)  # (1, 0) comes after (2, 1)
  t, p = _squares(12, [((0, 0), 1, 0), ((6, 6), 1, 0)], 3)
  assert _corr(t, p, 3, 'first') == ((0, 0), 1)
  assert _corr(t, p, 3, 'released') == ((6, 6), 1)  # same type: the later component
  t, p = _squares(12, [((0, 0), 0, 1), ((6, 6), 1, 0)], 2)  # K = 2: (1, 0) then (0, 1)
  assert _corr(t, p, 2, 'first') == ((0, 0), 0)
  assert _corr(t, p, 2, 'released') == ((0, 0), 0)
  t, p = _squares(12, [((0, 0), 1, 0), ((6, 6), 0, 1)], 2)
  assert _corr(t, p, 2, 'first') == ((0, 0), 1)
  assert _corr(t, p, 2, 'released') == ((6, 6), 0)
  # A size difference still wins over the order.
  t, p = _squares(12, [((0, 0), 1, 0), ((8, 8), 0, 2)], 3)
  t = t.at[2, 0].set(1)
  assert _corr(t, p, 3, 'released')[1] == 1


def test_simulate_clicks_ranks_ties_like_the_released_sort():
  t, p = _squares(12, [((0, 0), 2, 1), ((0, 6), 1, 0), ((8, 8), 0, 2)], 3)
  for tie_break, want in (('first', [2, 1]), ('released', [0, 1])):
    c = user.simulate_clicks(KEY, t, p, 3, 2, tie_break=tie_break)
    assert np.asarray(c.labels).tolist() == want, tie_break


def test_first_click_ties_go_to_the_higher_class_then_the_later_component():
  t, _ = _squares(12, [((0, 0), 1, 0), ((8, 8), 2, 0)], 3)  # equal rim and cup components
  assert int(user.first_click(KEY, t)[1]) == 1
  assert int(user.first_click(KEY, t, tie_break='released')[1]) == 2
  t, _ = _squares(12, [((0, 0), 1, 0), ((8, 8), 1, 0)], 2)
  coord = user.first_click(KEY, t, policy='deepest', tie_break='released')[0]
  assert int(coord[0]) >= 8


# 5. Pre-training sampler ----------------------------------------------------------------------


def _lesions():
  target = np.zeros((48, 48), np.int32)
  target[2:22, 2:22] = 1  # A: 400 px -> entries 400, 200, 100 (min_area 150)
  target[30:43, 30:43] = 1  # B: 169 px -> entries 169, 84
  return target


def test_released_sampler_halves_large_components_in_area_order():
  target = _lesions()
  a = np.zeros_like(target, bool)
  a[2:22, 2:22] = True
  draw = jax.jit(
    jax.vmap(
      lambda k: sampler.training_clicks(
        k, jnp.asarray(target), jnp.zeros((48, 48), jnp.int32), 2, 12, sampler='released'
      )
    )
  )
  n = 1000
  c = jax.device_get(draw(jax.random.split(KEY, n)))
  coords, labels = np.asarray(c.coords), np.asarray(c.labels)
  assert np.asarray(c.valid).all()  # exactly n clicks, every slot valid
  # Uniform over all classes, also class 0 which has no error component (binomial, 5 sd).
  assert abs((labels[:, 0] == 0).sum() - n / 2) <= 5 * np.sqrt(n / 4)
  for i in range(100):
    ones = [tuple(x) for x, lab in zip(coords[i], labels[i]) if lab == 1]
    regions = ['A' if a[r, col] else 'B' for r, col in ones]
    assert regions[:5] == ['A', 'A', 'B', 'A', 'B'][: len(regions)], regions  # 400 200 169 100 84
    assert all(target[r, col] == 1 for r, col in ones)  # then pixels of the class (fallback)
    zeros = [tuple(x) for x, lab in zip(coords[i], labels[i]) if lab == 0]
    assert all(target[r, col] == 0 for r, col in zeros)


def test_released_sampler_min_area_per_class_and_absent_classes():
  target = np.zeros((32, 32), np.int32)
  target[0:10, 0:20] = 1  # rim: 200 px ...
  target[20:30, 0:20] = 2  # cup: 200 px ...
  pred = target.copy()
  pred[:, 10:] = 0  # ... each half missed: 100-px error components, the other half correct
  missed = np.zeros_like(target, bool)
  missed[:, 10:] = True
  draw = jax.jit(
    jax.vmap(
      lambda k: sampler.training_clicks(
        k,
        jnp.asarray(target),
        jnp.asarray(pred),
        3,
        10,
        sampler='released',
        min_area=(150, 150, 80),
      )
    )
  )
  c = jax.device_get(draw(jax.random.split(KEY, 200)))
  coords, labels = np.asarray(c.coords), np.asarray(c.labels)
  assert (target[coords[..., 0], coords[..., 1]] == labels).all()
  second_rim, third_cup = [], []
  for i in range(200):
    for cls, entries, later in ((1, 1, second_rim), (2, 2, third_cup)):  # 100 > 80: 100, 50
      hits = [missed[r, col] for (r, col), lab in zip(coords[i], labels[i]) if lab == cls]
      assert all(hits[:entries]), (i, cls, hits)  # the error component's entries first
      later += hits[entries : entries + 1]
  # Then pixels anywhere in the class: half of them in the correctly predicted half.
  assert 0 < sum(second_rim) < len(second_rim) and 0 < sum(third_cup) < len(third_cup)
  absent = jnp.asarray((target == 1).astype(np.int32))  # K = 3 without class 2 and no error
  c = jax.device_get(
    jax.vmap(lambda k: sampler.training_clicks(k, absent, absent, 3, 6, sampler='released'))(
      jax.random.split(KEY, 50)
    )
  )
  a = np.asarray(absent)
  assert np.asarray(c.valid).all()
  assert (a[c.coords[..., 0], c.coords[..., 1]] == c.labels).all()  # labelled by the target


def test_released_pretraining_clicks_leave_the_first_click_out():
  target = jnp.asarray(_lesions())
  pred = jnp.zeros_like(target)
  got, want = jax.jit(
    lambda: (
      sampler.pretraining_clicks(KEY, target, lambda c: pred, 2, 6, 3, sampler='released'),
      sampler.training_clicks(jax.random.split(KEY)[1], target, pred, 2, 6, sampler='released'),
    )
  )()
  np.testing.assert_array_equal(np.asarray(got.coords), np.asarray(want.coords))
  assert np.asarray(got.valid).tolist() == [True] * 3 + [False] * 3


# 6. Guidance channel order --------------------------------------------------------------------


def test_guidance_channels_are_cup_rim_background():
  c = clicks_lib.from_lists([[2, 2], [8, 8], [13, 13]], [2, 1, 0], 3)  # cup, rim, background
  x = np.asarray(
    clicks_lib.model_input(jnp.zeros((16, 16, 3)), c, 3, sigma=2.0, reverse_classes=True)
  )
  assert x.shape == (16, 16, 6)
  assert x[2, 2, 3] == 1.0 and x[8, 8, 4] == 1.0 and x[13, 13, 5] == 1.0
  b = clicks_lib.from_lists([[2, 2], [8, 8]], [1, 0], 2)  # brain: [fg, bg]
  y = np.asarray(clicks_lib.guidance_maps(b, (16, 16), 2, sigma=2.0, reverse_classes=True))
  assert y[2, 2, 0] == 1.0 and y[8, 8, 1] == 1.0


# 5. Pre-training: learning rate, one click count per batch, model selection ------------------


def test_released_learning_rate_steps():
  tx = pretraining.make_optimizer(5e-4, 1, 1.0, 'released')
  p = {'w': jnp.zeros(())}
  st = tx.init(p)

  def update_at(count):  # Adam's step for a constant gradient, at update number `count`
    s = optax.tree_utils.tree_set(st, count=jnp.asarray(count, jnp.int32))
    return float(tx.update({'w': jnp.ones(())}, s, p)[0]['w'])

  steps = [20_000, 44_999, 45_000, 54_999, 55_000, 64_999, 65_000, 74_999, 75_000, 90_000]
  ratios = [update_at(s) / update_at(20_000) for s in steps]
  np.testing.assert_allclose(ratios, [1, 1, 0.5, 0.5, 0.25, 0.25, 0.1, 0.1, 0.01, 0.01], rtol=1e-5)


def test_released_pretraining_draws_one_click_count_per_batch():
  spec = SessionSpec(num_classes=2, num_clicks=4)
  params = toy_params(3, seed=1)
  tx = pretraining.make_optimizer(1e-3, 100, 0.5)
  state = optim.init_train_state(params, tx)
  gt = np.zeros((6, 12, 12), np.int32)
  for i in range(6):
    gt[i, 2 + i : 7 + i, 3:9] = 1
  images = jnp.asarray(gt[..., None] * 0.7, jnp.float32)
  train = pretraining.make_train_step(toy_apply, tx, spec, sampler='released', min_area=4)
  counts = []
  for _ in range(4):
    state, m = train(state, images, jnp.asarray(gt), KEY)
    counts.append(float(m['clicks']))
  assert all(c == int(c) and 1 <= c <= 4 for c in counts), counts  # every sample has n clicks


def test_released_switch_sets_every_option_and_reaches_the_core():
  c = interactive_fundus.get_config('quick,released')
  pre, adapt = c.pretrain, c.adapt
  for part in (pre, adapt):
    spec = interactive_setup.spec_from_config(part)
    assert (spec.tie_break, spec.reverse_classes) == ('released', True)
    loss = interactive_setup.loss_from_config(part)
    assert (loss.ccg_variant, loss.ccg_sigma) == ('released', 3.0)
    unet = seg_common.make_unet(part.model, 3)
    assert unet.conv_bias and unet.norm_eps == 1e-5
  assert (adapt.pi.stage1_ccg, adapt.pi.fill, adapt.pi.clicks) == (True, 'released', 0)
  assert interactive_setup.sampler_from_config(pre) == {
    'sampler': 'released',
    'min_area': (1, 1, 1),
  }
  assert pre.optim.schedule == 'released'
  assert (pre.eval_clicks, pre.select_metric, dict(pre.report)) == (
    6,
    'dice@6',
    {'rim': [1], 'cup': [2]},
  )  # mean(rim, cup) Dice after 6 clicks
  pretrain.validate(pre)
  full = interactive_fundus.get_config('released,size=128')
  assert tuple(full.pretrain.sampler.min_area) == (9, 9, 5)  # 150, 150, 80 at 512 -> 128 px
  brain = interactive_lgg.get_config('released,size=256,stage=pretrain')
  assert tuple(brain.sampler.min_area) == (150, 150) and brain.select_metric == 'dice@6'
  # The default is the paper's text.
  paper = interactive_fundus.get_config('quick')
  assert paper.pretrain.sampler.name == 'paper' and paper.adapt.clicks.tie_break == 'first'
  assert not paper.adapt.model.conv_bias and paper.pretrain.optim.schedule == 'step'
