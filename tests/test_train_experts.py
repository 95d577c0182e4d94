import json
import os

import jax
import numpy as np
import pytest

from configs import merge_digits
from yiplearn.experiments import train_experts


def tiny_config(data_dir_env):
  c = merge_digits.get_config('quick')
  c.experiment = 'train_experts'
  c.data.domains = ('rot0', 'rot45', 'rot75')
  c.data.image_size = 8
  c.data.max_train, c.data.max_test = 64, 16
  c.model.stage_sizes, c.model.widths = (1,), (4,)
  c.train.update(dict(base_steps=6, expert_steps=3, batch_size=16))
  return c


@pytest.fixture()
def env_data_dir(data_dir, monkeypatch):
  monkeypatch.setenv('YIPLEARN_DATA_DIR', data_dir)
  return data_dir


def test_run_writes_table_checkpoints_and_resumes(tmp_path, env_data_dir):
  c = tiny_config(env_data_dir)
  out = train_experts.run(c, str(tmp_path))
  rows = out['accuracy']
  assert [r['model'] for r in rows] == ['base', 'expert_rot0', 'expert_rot45', 'expert_rot75']
  for r in rows:
    for d in c.data.domains:
      assert 0.0 <= r[d] <= 1.0
  table = json.load(open(tmp_path / 'results' / 'expert_accuracy.json'))
  assert table['columns'] == ['model', 'rot0', 'rot45', 'rot75', 'skipped']
  assert all(r['skipped'] == 0 for r in rows)  # training steps skipped as non-finite
  assert (tmp_path / 'results' / 'expert_accuracy.md').exists()
  ck = tmp_path / 'checkpoints' / 'all'
  assert {'base', 'expert_rot0', 'expert_rot45', 'expert_rot75', 'fisher_rot0'} <= set(
    os.listdir(ck)
  )
  # Resume: a second run restores every model instead of training (identical results).
  out2 = train_experts.run(c, str(tmp_path))
  assert out2['accuracy'] == rows


def test_experts_differ_from_base_and_fisher_nonnegative(tmp_path, env_data_dir):
  from yiplearn.experiments import merge_data

  c = tiny_config(env_data_dir)
  data, nc = merge_data.load_domains(c.data, str(tmp_path))
  fam = train_experts.train_family(
    c, data, nc, ['rot0', 'rot45'], str(tmp_path / 'ck'), with_fisher=True
  )
  assert len(fam.experts) == 2 and len(fam.fishers) == 2
  diff = jax.tree.map(
    lambda a, b: float(np.abs(np.asarray(a) - np.asarray(b)).max()),
    fam.experts[0]['params'],
    fam.base['params'],
  )
  assert max(jax.tree.leaves(diff)) > 0
  assert all(np.all(np.asarray(f) >= 0) for f in jax.tree.leaves(fam.fishers[0]))
  with pytest.raises(ValueError, match='sources'):
    train_experts.train_family(c, data, nc, ['rot90'], str(tmp_path / 'ck2'))
  with pytest.raises(ValueError, match='model.arch'):
    c.model.arch = 'mlp'
    train_experts.make_model(c.model, 10)


def test_training_learns_separable_toy():
  # A tiny linearly separable problem: accuracy must rise well above chance.
  rng = np.random.default_rng(0)
  y = rng.integers(0, 2, 128).astype(np.int32)
  x = rng.normal(size=(128, 4, 4, 1)).astype(np.float32) * 0.3 + (2 * y - 1)[:, None, None, None]
  from yiplearn.models.resnet import resnet_classifier

  model = resnet_classifier(2, (1,), (4,))
  v = model.init(jax.random.key(0), x[:2])
  v = train_experts.train(model, v, x, y, steps=40, batch_size=32, lr=1e-2, seed=0)
  assert train_experts.accuracy(model, v, x, y) > 0.9
