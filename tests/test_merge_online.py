import json

import numpy as np
import pytest

from configs import merge_digits, merge_fundus, merge_lgg
from yiplearn.experiments import merge_online


def tiny_config():
  c = merge_digits.get_config('quick')
  c.data.domains = ('rot0', 'rot30', 'rot60', 'rot75')  # K = 3 experts per target
  c.data.image_size = 8
  c.data.max_train, c.data.max_test = 48, 12
  c.model.stage_sizes, c.model.widths = (1,), (4,)
  c.train.update(dict(base_steps=5, expert_steps=2, batch_size=16))
  c.targets = ('rot30',)
  c.streams = ('iid', 'dirichlet', 'continual')
  c.stream.batch_size = 5
  c.methods = ('experts', 'mean', 'eam', 'ensemble_entropy')
  return c


def test_end_to_end_and_resume(tmp_path, data_dir, monkeypatch):
  monkeypatch.setenv('YIPLEARN_DATA_DIR', data_dir)
  c = tiny_config()
  out = merge_online.run(c, str(tmp_path))
  res = tmp_path / 'results'
  table = json.load(open(res / 'merge_accuracy.json'))
  rows = table['rows']
  methods = {r['method'] for r in rows}
  assert methods == {
    'expert_rot0',
    'expert_rot60',
    'expert_rot75',
    'mean',
    'eam',
    'ensemble_entropy',
    'best_expert',
  }
  for r in rows:
    assert 0 <= r['accuracy'] <= 1
    assert r['n'] == (12 if r['stream'] != 'continual' else 48)
  for s in c.streams:
    experts = [
      r['accuracy'] for r in rows if r['stream'] == s and r['method'].startswith('expert_')
    ]
    best = [r['accuracy'] for r in rows if r['stream'] == s and r['method'] == 'best_expert']
    assert best == [max(experts)]
  summary = json.load(open(res / 'merge_summary.json'))['rows']
  assert {r['method'] for r in summary} == methods - {'expert_rot0', 'expert_rot60', 'expert_rot75'}
  # Lambda trace: one record per batch of every traced method, coefficients on the simplex.
  trace = [json.loads(l) for l in open(res / 'lambda_trace.jsonl')]
  eam = [t for t in trace if t['method'] == 'eam']
  assert len(eam) == 3 + 3 + 10  # ceil(12/5) + ceil(12/5) + ceil(48/5)
  for t in eam:
    for key in ('lam_enc', 'lam_head'):
      lam = np.asarray(t[key])
      assert lam.shape == (3,) and np.all(lam >= -1e-6) and abs(lam.sum() - 1) < 1e-3
  # Continual stream visits the target first, then the sources in order.
  doms = [t['domain'] for t in eam if t['stream'] == 'continual']
  assert doms[0] == 'rot30' and doms[-1] == 'rot75'
  assert (tmp_path / 'plots' / 'entropy_landscape_rot30.png').stat().st_size > 1000
  assert (res / 'partial' / 'rot30.json').exists()
  # A restarted run skips finished targets and reproduces the tables.
  out2 = merge_online.run(c, str(tmp_path))
  assert out2['rows'] == out['rows']


def test_validation(tmp_path, data_dir, monkeypatch):
  monkeypatch.setenv('YIPLEARN_DATA_DIR', data_dir)
  c = tiny_config()
  c.targets = ('rot90',)
  with pytest.raises(ValueError, match='targets'):
    merge_online.run(c, str(tmp_path))
  c = tiny_config()
  c.methods = ('median',)
  with pytest.raises(ValueError, match='methods'):
    merge_online.run(c, str(tmp_path))


def test_configs_parse():
  for mod in (merge_digits, merge_lgg, merge_fundus):
    for arg in ('', 'quick', 'quick,batch=1,alpha=0.5,T=0'):
      c = mod.get_config(arg)
      assert c.experiment == 'merge_online'
      assert len(c.data.domains) >= 3
      assert c.stream.batch_size >= 1
  assert merge_digits.get_config('batch=1').stream.batch_size == 1
  with pytest.raises(ValueError):
    merge_digits.get_config('nonsense=1')


def test_fisher_method_follows_dominant_expert_including_batch_stats():
  """One expert with overwhelming Fisher: the 'fisher' method must reproduce that expert exactly,
  BatchNorm running statistics included (they used to be averaged uniformly, mixing one expert's
  weights with the others' statistics)."""

  import jax
  import jax.numpy as jnp
  import ml_collections
  import numpy as np

  from yiplearn.experiments import merge_methods, train_experts
  from yiplearn.merging import tree as tr
  from yiplearn.models.resnet import resnet_classifier

  model = resnet_classifier(3, (1,), (4,))
  x = jnp.asarray(np.random.default_rng(0).normal(size=(6, 8, 8, 1)), jnp.float32)
  base = model.init(jax.random.key(0), x)
  experts = []
  leaves, treedef = jax.tree.flatten(base)
  for k in range(3):  # distinct params and distinct running statistics per expert
    experts.append(
      jax.tree.unflatten(
        treedef,
        [
          a + 0.3 * jax.random.uniform(jax.random.fold_in(jax.random.key(10 + k), i), a.shape)
          for i, a in enumerate(leaves)
        ],
      )
    )
  fishers = [
    jax.tree.map(
      lambda a, k=k: jnp.full(a.shape, 1e6 if k == 1 else 1e-3, jnp.float32), e['params']
    )
    for k, e in enumerate(experts)
  ]
  fam = train_experts.Family(model, ['a', 'b', 'c'], base, experts, fishers)
  cfg = ml_collections.ConfigDict(
    dict(
      methods=('fisher',),
      seed=0,
      static={'fisher_normalize': False},
      eam={},
      bn={'static': 'merge'},
    )
  )
  method = merge_methods.build(cfg, fam)['fisher']
  state = method.init(tr.stack(experts), base)
  _, logits, _ = method.update(state, x)
  np.testing.assert_allclose(logits, model.apply(experts[1], x), rtol=1e-4, atol=1e-4)
  # The uniform mean of the statistics would give clearly different outputs.
  mixed = dict(
    experts[1], batch_stats=jax.tree.map(lambda a: a.mean(0), tr.stack(experts)['batch_stats'])
  )
  assert np.abs(np.asarray(model.apply(mixed, x) - model.apply(experts[1], x))).max() > 1e-3


class _Killed(Exception):
  pass


def test_mid_stream_resume_equals_uninterrupted_run(tmp_path, data_dir, monkeypatch):
  """A run that dies between two checkpoints of one stream, started again, ends with byte-identical
  accuracy tables and lambda trace (the batches after the checkpoint are run again, their trace lines
  written before the crash are dropped)."""
  monkeypatch.setenv('YIPLEARN_DATA_DIR', data_dir)
  c = tiny_config()
  c.methods = ('mean', 'eam')
  c.streams = ('iid', 'continual')
  c.landscape = False
  c.checkpoint_every = 2
  c.experts_workdir = str(tmp_path / 'experts')  # both runs share the trained experts
  ref_dir, dir_ = tmp_path / 'ref', tmp_path / 'killed'
  merge_online.run(c, str(ref_dir))

  original = merge_online.run_stream

  def dying(update, state, stream, *, meta=None, on_batch=None, **kw):
    def hook(i, state, correct, n):
      state = on_batch(i, state, correct, n)
      if meta['method'] == 'eam' and meta['stream'] == 'continual' and i == 4:
        raise _Killed  # after batch 5: checkpoint at 4 batches, trace already holds batch index 4
      return state

    return original(update, state, stream, meta=meta, on_batch=hook, **kw)

  monkeypatch.setattr(merge_online, 'run_stream', dying)
  with pytest.raises(_Killed):
    merge_online.run(c, str(dir_))
  part = dir_ / 'streams' / 'rot30'
  assert (part / 'mean__continual.json').exists() and not (part / 'eam__continual.json').exists()
  trace = [json.loads(l) for l in open(part / 'eam__continual.jsonl')]
  assert [t['batch'] for t in trace] == [0, 1, 2, 3, 4]
  monkeypatch.setattr(merge_online, 'run_stream', original)
  merge_online.run(c, str(dir_))
  for name in (
    'merge_accuracy.json',
    'merge_accuracy.csv',
    'merge_summary.json',
    'lambda_trace.jsonl',
  ):
    assert (dir_ / 'results' / name).read_bytes() == (ref_dir / 'results' / name).read_bytes(), name
