"""Meshes and shardings (yiplearn/parallel.py); sharded == one device on 8 host CPU devices; two
processes on loopback agree with one process and only process 0 writes results.

The multi-device checks run in subprocesses (tests/parallel_worker.py): the host device count is
fixed when jax initialises. All of them start together (module fixture) and each has a timeout, so a
hang fails the tests instead of blocking CI.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from yiplearn import parallel
from yiplearn.data import pipeline

WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'parallel_worker.py')
TIMEOUT = 600


# ---------------------------------------------------------------- one device, in process


def test_make_mesh_shapes_and_errors():
  n = len(jax.devices())
  mesh = parallel.make_mesh()
  assert mesh.axis_names == ('data',) and mesh.size == n
  assert parallel.make_mesh((-1, 1), ('data', 'model')).shape == {'data': n, 'model': 1}
  assert parallel.mesh_from_config({'shape': 1, 'axis_names': 'streams'}).axis_names == ('streams',)
  assert parallel.mesh_from_config(None).size == n
  with pytest.raises(ValueError, match=r'mesh.shape=\(3, 5\): expected \d+ devices in all'):
    parallel.make_mesh((3, 5), ('a', 'b'))
  with pytest.raises(ValueError, match='mesh.shape=99: expected at most'):
    parallel.make_mesh(99)
  with pytest.raises(ValueError, match='mesh.shape=.*one entry per axis'):
    parallel.make_mesh((1, 1), ('data',))
  with pytest.raises(ValueError, match='mesh.axis_names'):
    parallel.make_mesh(-1, ('a', 'a'))


def test_pad_unpad_and_divisibility():
  tree = {'a': np.arange(5.0), 'b': jnp.arange(10).reshape(5, 2)}
  padded, n = parallel.pad_leading(tree, 4)
  assert n == 5 and padded['a'].shape == (8,) and padded['b'].shape == (8, 2)
  np.testing.assert_array_equal(padded['a'][5:], [4.0, 4.0, 4.0])  # copies of the last row
  back = parallel.unpad_leading(padded, n)
  np.testing.assert_array_equal(back['b'], tree['b'])
  assert parallel.pad_leading(tree, 5)[0] is tree
  with pytest.raises(ValueError, match='equal lengths'):
    parallel.pad_leading({'a': np.zeros(2), 'b': np.zeros(3)}, 2)
  mesh = parallel.make_mesh()
  parallel.check_divisible('optim.batch_size', 8 * mesh.size, mesh)
  assert parallel.local_rows(8) == slice(0, 8)


def test_one_device_is_unchanged():
  mesh = parallel.make_mesh(1)
  fn = lambda x, y: x * y
  assert parallel.shard_vmapped(fn, mesh, (0, None)) is fn
  x = np.arange(6.0).reshape(3, 2)
  g = parallel.from_process_local(x, parallel.batch_sharding(mesh))
  np.testing.assert_array_equal(parallel.to_host(g), x)
  r = parallel.to_global({'w': x}, parallel.replicated(mesh))
  np.testing.assert_array_equal(parallel.to_host(parallel.local_copy(r))['w'], x)
  with pytest.raises(ValueError, match='in_axes'):
    parallel.shard_vmapped(fn, parallel.make_mesh(), (1, None))


def test_process_rows_loader_splits_the_global_batch(monkeypatch):
  """Every process loads its block of the same global batch: their concatenation is the one-process batch."""
  src = pipeline.ArraySource({'x': np.arange(23), 'y': np.arange(23) * 10})
  aug = lambda r, rng: dict(
    r, z=rng.integers(1000)
  )  # per-record rng: independent of the process count
  kw = dict(
    batch_size=6, seed=3, num_epochs=None, transform=aug, drop_remainder=True, process_rows=True
  )
  single = [pipeline.make_loader(src, **kw)[k] for k in range(6)]
  monkeypatch.setattr(jax, 'process_count', lambda: 2)
  parts = []
  for pid in range(2):
    monkeypatch.setattr(jax, 'process_index', lambda pid=pid: pid)
    loader = pipeline.make_loader(src, **kw)
    parts.append([loader[k] for k in range(6)])
  for k in range(6):
    assert len(parts[0][k]['x']) == 3
    for key in ('x', 'y', 'z'):
      np.testing.assert_array_equal(
        np.concatenate([parts[0][k][key], parts[1][k][key]]), single[k][key]
      )
  with pytest.raises(ValueError, match='batch_size=5: expected a multiple of the 2 processes'):
    pipeline.make_loader(src, **dict(kw, batch_size=5))


# ---------------------------------------------------------------- subprocesses (8 devices; 2 processes)


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('localhost', 0))
    return s.getsockname()[1]


def _env(devices: int, data_dir: str) -> dict:
  env = dict(
    os.environ,
    XLA_FLAGS=f'--xla_force_host_platform_device_count={devices}',
    YIPLEARN_DATA_DIR=data_dir,
    PYTHONUNBUFFERED='1',
  )
  env.pop('JAX_PLATFORMS', None)
  return env


@pytest.fixture(scope='module')
def runs(tmp_path_factory):
  """Starts every subprocess at once (8 devices; a 2 x 2-device run; the one-process reference)."""
  root = tmp_path_factory.mktemp('parallel')
  data_dir = str(root / 'data')
  port = _free_port()
  jobs = {
    'devices8': ([sys.executable, WORKER, 'devices8', str(root / 'd8')], _env(8, data_dir + '8')),
    # Each process builds its own (identical) copy of the datasets: no race on one data directory.
    'proc0': (
      [sys.executable, WORKER, 'run', str(root / 'mp'), '0', '2', str(port)],
      _env(2, data_dir + 'p0'),
    ),
    'proc1': (
      [sys.executable, WORKER, 'run', str(root / 'mp'), '1', '2', str(port)],
      _env(2, data_dir + 'p1'),
    ),
    'single': ([sys.executable, WORKER, 'run', str(root / 'single')], _env(1, data_dir + '1')),
  }
  procs = {}
  for name, (cmd, env) in jobs.items():
    os.makedirs(cmd[3], exist_ok=True)
    log = open(root / f'{name}.log', 'w')
    procs[name] = (subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT), log)
  deadline = time.monotonic() + TIMEOUT
  status = {}
  for name, (p, log) in procs.items():
    try:
      status[name] = p.wait(timeout=max(deadline - time.monotonic(), 1))
    except subprocess.TimeoutExpired:
      p.kill()
      p.wait()
      status[name] = 'timeout'
    log.close()
  return root, status


def _result(runs, name: str, path: str) -> dict:
  root, status = runs
  if status[name] != 0:
    tail = (root / f'{name}.log').read_text()[-3000:]
    pytest.fail(f'worker {name} exited with {status[name]}:\n{tail}')
  return json.loads((root / path).read_text())


def test_sharded_equals_one_device_on_8_devices(runs):
  r = _result(runs, 'devices8', 'd8/devices8.json')
  # max |a - b| / (1e-5 + 1e-4 |b|) over every leaf: < 1 means equal to float tolerance.
  for check in (
    'pretrain_step',
    'train_experts',
    'session_sweep',
    'candidate_scores',
    'eam_update',
  ):
    assert r[check] < 1.0, (check, r)
  # The compared numbers vary (a constant output would pass trivially).
  assert r['session_dice_spread'] > 0.01 and r['candidate_spread'] > 1e-4 and r['pretrain_loss'] > 0
  assert (
    r['bad_batch_error']
    and 'optim.batch_size=6' in r['bad_batch_error']
    and '8 devices' in r['bad_batch_error']
  )


def _metrics(path):
  return [json.loads(l) for l in open(path, encoding='utf-8')]


def test_two_processes_agree_with_one_and_only_process_0_writes(runs):
  root, _ = runs
  single = _result(runs, 'single', 'single/single.json')
  procs = [_result(runs, f'proc{i}', f'mp/proc{i}.json') for i in range(2)]
  assert single['processes'] == 1 and all(p['processes'] == 2 and p['devices'] == 4 for p in procs)
  # Pre-training: data parallel over 4 devices in 2 processes = one device, step by step.
  one, two = (
    _metrics(root / 'single/work/pretrain/metrics.jsonl'),
    _metrics(root / 'mp/work/pretrain/metrics.jsonl'),
  )
  assert [m['step'] for m in one] == [m['step'] for m in two]  # one writer: no duplicated records
  for a, b in zip(one, two):
    for k, v in a.items():
      if k.startswith(('train/loss', 'train/dice_focal', 'train/ccg', 'val/')):
        np.testing.assert_allclose(b[k], v, rtol=2e-4, atol=1e-6, err_msg=k)
  assert procs[0]['best'] == procs[1]['best'] and procs[0]['best']['step'] == single['best']['step']
  np.testing.assert_allclose(procs[0]['best']['metric'], single['best']['metric'], rtol=1e-4)
  # The best checkpoint, restored by every process into replicated arrays, holds the one-process weights.
  for p in procs:
    np.testing.assert_allclose(p['best_sums'], single['best_sums'], rtol=1e-4)
  # Online merging (experts trained data parallel): same accuracies and coefficients per batch.
  key = lambda r: (r['stream'], r['method'], r['accuracy'], r['n'])
  assert [key(r) for r in procs[0]['merge_rows']] == [key(r) for r in single['merge_rows']]
  assert [key(r) for r in procs[1]['merge_rows']] == [key(r) for r in single['merge_rows']]
  t1 = _metrics(root / 'single/work/merge/results/lambda_trace.jsonl')
  t2 = _metrics(root / 'mp/work/merge/results/lambda_trace.jsonl')
  assert len(t1) == len(t2) > 0
  for a, b in zip(t1, t2):
    np.testing.assert_allclose(b['lam_enc'], a['lam_enc'], atol=2e-4)
    np.testing.assert_allclose(b['lam_head'], a['lam_head'], atol=2e-4)
  # Only process 0 wrote result files; process 1 wrote none (its checkpoint shards go through orbax).
  assert procs[1]['writes'] == []
  assert {
    'work/pretrain/results/pretrain_val.json',
    'work/merge/results/merge_accuracy.json',
  } <= set(procs[0]['writes'])
