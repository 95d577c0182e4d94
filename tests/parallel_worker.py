"""Subprocess worker of tests/test_parallel.py (not collected by pytest: its name has no test_ prefix).

    python tests/parallel_worker.py devices8 OUT          # on 8 host CPU devices: sharded == one device
    python tests/parallel_worker.py run OUT [PID NPROC PORT]  # tiny pre-training + online merge (one process
                                                          # of a multi-process run when PID is given)

XLA_FLAGS must be set by the caller (the device count is fixed when jax initialises). Writes OUT/*.json.
"""

from __future__ import annotations

import json
import os
import sys

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.join(REPO, 'tests'))


def _close(a, b, rtol=1e-4, atol=1e-5):
  import jax  # pylint: disable=g-import-not-at-top

  la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
  assert len(la) == len(lb)
  return max(
    float(
      np.max(
        np.abs(np.asarray(x, np.float64) - np.asarray(y, np.float64))
        / (atol + rtol * np.abs(np.asarray(y, np.float64)))
      )
    )
    if np.size(x)
    else 0.0
    for x, y in zip(la, lb)
  )


def pretrain_config(batch_size: int):
  from configs import interactive_fundus  # pylint: disable=g-import-not-at-top

  c = interactive_fundus.get_config('quick,stage=pretrain')
  c.data.kwargs['image_size'] = 16
  c.model.widths, c.model.bottleneck = (4,), 8
  c.steps, c.eval_every, c.checkpoint_every, c.log_every = 2, 2, 2, 1
  c.val_images, c.eval_clicks, c.select_metric = 2, 2, 'dice@2'
  c.clicks.max_clicks = 2
  c.optim.batch_size = batch_size
  c.augment.enabled = False
  return c


def merge_config():
  from test_merge_online import tiny_config  # pylint: disable=g-import-not-at-top

  c = tiny_config()
  c.train.batch_size = 8
  c.streams = ('iid',)
  c.methods = ('eam',)
  c.landscape = False
  return c


def devices8(out: str) -> None:
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top

  jax.config.update('jax_threefry_partitionable', False)  # as in conftest.py
  from yiplearn import parallel  # pylint: disable=g-import-not-at-top

  assert len(jax.devices()) == 8, jax.devices()
  mesh8, mesh1 = parallel.make_mesh(), parallel.make_mesh(1)
  report = {}

  # 1. A data-parallel pre-training step (batch 8 over 8 devices) against one device.
  from yiplearn.experiments import interactive_setup, pretrain, seg_common  # pylint: disable=g-import-not-at-top
  from yiplearn.interactive import pretraining  # pylint: disable=g-import-not-at-top

  cfg = pretrain_config(8)
  model = seg_common.make_unet(cfg.model, 3)
  tx = pretrain.make_optimizer(cfg.optim)
  rng = np.random.default_rng(0)
  images = rng.normal(size=(8, 16, 16, 3)).astype(np.float32)
  masks = np.zeros((8, 16, 16), np.int32)
  masks[:, 4:12, 3:11], masks[:, 6:10, 5:9] = 1, 2
  key = jax.random.PRNGKey(0)
  results = {}
  for name, mesh in (('one', mesh1), ('eight', mesh8)):
    spec = interactive_setup.spec_from_config(cfg)
    state = pretraining.init_state(model, spec, 3, 16, tx, jax.random.PRNGKey(1))
    state, k = parallel.to_global((state, key), parallel.replicated(mesh))
    step = pretrain.make_train_step(model.apply, tx, cfg, mesh=mesh)
    for _ in range(2):
      batch = parallel.from_process_local((images, masks), parallel.batch_sharding(mesh))
      state, metrics = step(state, *batch, k)
    assert all(len(a.sharding.device_set) == mesh.size for a in jax.tree.leaves(state.params))
    results[name] = parallel.to_host((state.params, metrics))
  report['pretrain_step'] = _close(results['eight'], results['one'])
  report['pretrain_loss'] = float(results['one'][1]['loss'])

  # 2. Train_experts' step (BatchNorm over the global batch) against one device.
  from yiplearn.experiments import train_experts  # pylint: disable=g-import-not-at-top
  from yiplearn.models.resnet import resnet_classifier  # pylint: disable=g-import-not-at-top

  clf = resnet_classifier(4, (1,), (4,))
  x = rng.normal(size=(40, 8, 8, 1)).astype(np.float32)
  y = rng.integers(0, 4, size=40)
  init = clf.init(jax.random.PRNGKey(2), jnp.asarray(x[:2]))
  ref = train_experts.train(clf, init, x, y, steps=3, batch_size=16, lr=1e-2, seed=0)
  got = train_experts.train(clf, init, x, y, steps=3, batch_size=16, lr=1e-2, seed=0, mesh=mesh8)
  report['train_experts'] = _close(got, ref)

  # 3. A stream sweep: 5 streams (learning rates x seeds) padded to 8 devices, against the vmapped session.
  from test_session import _data, _hp, toy_apply, toy_params  # pylint: disable=g-import-not-at-top

  from yiplearn.interactive import rules  # pylint: disable=g-import-not-at-top
  from yiplearn.interactive import session as S  # pylint: disable=g-import-not-at-top

  spec, rule = _hp('pi_mi')
  params = toy_params(3)
  lrs = [1e-3, 3e-3, 1e-2, 3e-2, 1e-1]

  def states():
    return jax.tree.map(
      lambda *a: jnp.stack(a),
      *[rules.set_learning_rate(rules.init_state(rule, params), lr) for lr in lrs],
    )

  keys = jnp.stack([jax.random.PRNGKey(i % 2) for i in range(len(lrs))])
  img, gt = _data(0)
  ref = S.make_session(toy_apply, spec, rule, stream_axes=(0, None, None, 0))(
    states(), img, gt, keys
  )
  sharded = S.sharded_session(toy_apply, spec, rule, mesh8)
  got = sharded(states(), img, gt, keys)
  assert got[1].dice.shape[0] == len(lrs)
  report['session_sweep'] = _close(got, ref)
  report['session_dice_spread'] = float(np.ptp(np.asarray(ref[1].union_dice)[:, -1]))

  # 4. Merge candidates: 7 candidates padded to 8 devices; the scores and a full entropy-adaptive update.
  from yiplearn.merging import online  # pylint: disable=g-import-not-at-top
  from yiplearn.merging import tree as tr  # pylint: disable=g-import-not-at-top

  experts = [clf.init(jax.random.PRNGKey(10 + i), jnp.asarray(x[:2])) for i in range(3)]
  stacked = tr.stack(experts)
  cands = jnp.asarray(np.random.default_rng(1).dirichlet(np.ones(3), size=7), jnp.float32)
  tau = tr.task_vectors(stacked, init)
  ref = online.score_candidates(clf, init, tau, jnp.asarray(x[:6]), cands, chunk_size=1)
  got = online.score_candidates(clf, init, tau, jnp.asarray(x[:6]), cands, chunk_size=1, mesh=mesh8)
  report['candidate_scores'] = _close(got, ref)
  report['candidate_spread'] = float(np.ptp(np.asarray(ref)))
  outs = {}
  for name, mesh in (('one', None), ('eight', mesh8)):
    m = online.entropy_adaptive(
      clf, 3, grid_resolution=2, refine_radius=0.2, chunk_size=1, mesh=mesh
    )
    update = jax.jit(m.update, donate_argnums=0)
    state = m.init(stacked, init)
    for b in range(2):
      state, logits, info = update(state, jnp.asarray(x[b * 8 : (b + 1) * 8]))
    outs[name] = parallel.to_host((logits, info))
  report['eam_update'] = _close(outs['eight'], outs['one'])

  # 5. A global batch that does not split over the devices: one clear error before any work.
  try:
    pretrain.run(pretrain_config(6), os.path.join(out, 'bad'))
    report['bad_batch_error'] = None
  except ValueError as e:
    report['bad_batch_error'] = str(e)
  with open(os.path.join(out, 'devices8.json'), 'w', encoding='utf-8') as f:
    json.dump(report, f)


def run_experiments(out: str, pid: int | None, nproc: int, port: int) -> None:
  import jax  # pylint: disable=g-import-not-at-top

  if pid is not None:
    jax.distributed.initialize(
      coordinator_address=f'localhost:{port}', num_processes=nproc, process_id=pid
    )
  jax.config.update('jax_threefry_partitionable', False)
  from yiplearn.io import files  # pylint: disable=g-import-not-at-top

  writes = []
  original = files.atomic_write_bytes

  def spy(path, data):  # every result file (tables, JSON, plots) goes through here
    writes.append(os.path.relpath(os.fspath(path), out))
    return original(path, data)

  files.atomic_write_bytes = spy
  from yiplearn.experiments import merge_online, pretrain  # pylint: disable=g-import-not-at-top

  workdir = os.path.join(out, 'work')
  pre = pretrain.run(pretrain_config(4), os.path.join(workdir, 'pretrain'))
  # Every process restores the best checkpoint into replicated global arrays over all devices.
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top

  from yiplearn import parallel  # pylint: disable=g-import-not-at-top
  from yiplearn.experiments import seg_common  # pylint: disable=g-import-not-at-top
  from yiplearn.io import checkpoints  # pylint: disable=g-import-not-at-top

  rep = parallel.replicated(parallel.make_mesh())
  model = seg_common.make_unet(pretrain_config(4).model, 3)
  shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, 16, 16, 6))))
  target = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=rep), shapes)
  best, _ = checkpoints.Checkpointer(pre['best_dir'], max_to_keep=1).restore(None, target)
  assert all(a.sharding == rep for a in jax.tree.leaves(best))
  best_sums = [
    float(np.abs(np.asarray(a, np.float64)).sum()) for a in jax.tree.leaves(parallel.to_host(best))
  ]
  merged = merge_online.run(merge_config(), os.path.join(workdir, 'merge'))
  tag = 'single' if pid is None else f'proc{pid}'
  record = {
    'devices': len(jax.devices()),
    'processes': jax.process_count(),
    'best': pre['best'],
    'best_sums': best_sums,
    'merge_rows': merged['rows'],
    'writes': writes,
  }
  with open(os.path.join(out, f'{tag}.json'), 'w', encoding='utf-8') as f:
    json.dump(record, f)


if __name__ == '__main__':
  mode, out_dir = sys.argv[1], sys.argv[2]
  if mode == 'devices8':
    devices8(out_dir)
  elif mode == 'run':
    if len(sys.argv) > 3:
      run_experiments(out_dir, int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]))
    else:
      run_experiments(out_dir, None, 1, 0)
  else:
    raise SystemExit(f'unknown mode {mode!r}')
