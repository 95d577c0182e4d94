"""The app's model side: the first response is the pseudo-label argmax f(I, C_t; theta) of the current
weights, the adapted one the prediction after the method's update, and the background warm-up compiles
every function a session calls (nothing compiles during the clicks)."""

import jax
import numpy as np

from tests import app_toys, toys
from yiplearn.interactive import step


def _forward(engine, params, view):
  return np.asarray(np.argmax(toys.toy_apply(params, view.x[None])[0], -1))


def test_pseudo_label_then_adapted_prediction():
  eng, imgs = app_toys.toy_engine(), app_toys.toy_images()
  states = eng.init_states()
  image, gt = imgs.images[0], imgs.gts[0]
  s, view, pred1 = eng.start('pi_mi', states['pi_mi'], image, app_toys.gt_pixel(gt), 1, 0)
  np.testing.assert_array_equal(pred1, _forward(eng, eng.params0, view))
  before = [p.copy() for p in eng.params_of(s)]
  view2, pseudo = eng.propose('pi_mi', s, view, (1, 2), 0)
  x = step.build_input(eng.spec, view.image, view2.clicks, view.pred)
  np.testing.assert_allclose(np.asarray(view2.x), np.asarray(x), atol=1e-6)
  np.testing.assert_array_equal(pseudo, _forward(eng, s.params, view2))  # current weights
  assert all(np.array_equal(a, b) for a, b in zip(before, eng.params_of(s)))  # nothing updated
  s, view3, adapted = eng.adapt('pi_mi', s, view2)
  assert int(s.step) == 1 and not all(
    np.array_equal(a, b) for a, b in zip(before, eng.params_of(s))
  )
  np.testing.assert_array_equal(adapted, _forward(eng, s.params, view3))  # the new weights
  frozen = eng.frozen_prediction(view3)
  np.testing.assert_array_equal(frozen, _forward(eng, eng.params0, view3))
  d = eng.dice(adapted, gt)
  inter = np.sum((adapted == 1) & (gt == 1))
  np.testing.assert_allclose(
    d[1], 2 * inter / max(np.sum(adapted == 1) + np.sum(gt == 1), 1), atol=1e-6
  )
  s2, v, _ = eng.start('frozen', states['frozen'], image, (3, 3), 1, 0)
  v, _ = eng.propose('frozen', s2, v, (4, 4), 0)
  s2, v, _ = eng.adapt('frozen', s2, v)
  assert int(s2.step) == 0


def test_warmup_compiles_every_function_of_a_session():
  eng, imgs = app_toys.toy_engine(), app_toys.toy_images()
  for job in eng.warmup_jobs(imgs.images[0].shape, 'pi_mi', with_gt=True):
    job()
  states = eng.init_states()  # as a server does before it starts the warm-up
  eng.image_key(0)
  compiled = []
  listener = lambda event, *args, **kw: (
    compiled.append(event) if 'backend_compile' in event else None
  )
  jax.monitoring.register_event_duration_secs_listener(listener)
  try:
    for m in eng.methods:
      snapshot = eng.copy(states[m]) if eng.updates(m) else None
      s, view, _ = eng.start(m, states[m], imgs.images[1], (5, 5), 1, 1)
      view, _ = eng.propose(m, s, view, (6, 6), 0)
      s, view, pred = eng.adapt(m, s, view)
      eng.frozen_prediction(view)
      eng.dice(pred, imgs.gts[1])
      jax.block_until_ready((eng.finish(m, s, view), snapshot))
  finally:
    jax.monitoring.unregister_event_duration_listener(listener)
  assert compiled == []
