"""Tests for the dataset registry: names, validation, preparation, concurrency, arrays."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from yiplearn.data import registry

KW = dict(image_size=32, num_train=6, num_test=3)
ALL = [
  'drishti_gs1',
  'lgg_kaggle_3m',
  'rimone_dl',
  'rotated_digits',
  'synthetic_fundus',
  'synthetic_mri',
]


def test_builder_names():
  assert registry.builder_names() == ALL


@pytest.mark.parametrize('name', ALL)
def test_builder_classes_resolve(name):
  module = registry._BUILDERS[name].split(':')[0]
  if importlib.util.find_spec(module) is None:
    pytest.skip(f'{module} not written yet')
  cls = registry.builder_class(name)
  assert cls.name == name and callable(cls.make_config)


def test_unknown_name_lists_valid_names(data_dir):
  with pytest.raises(ValueError, match=r"data.name='fundus': expected one of.*synthetic_fundus"):
    registry.load_source('fundus', 'train', data_dir=data_dir)


def test_unknown_key_and_bad_value(data_dir):
  with pytest.raises(
    ValueError,
    match=r"synthetic_fundus config key='sz': expected a key of this builder.*image_size",
  ):
    registry.get_builder('synthetic_fundus', data_dir=data_dir, sz=32)
  with pytest.raises(
    ValueError, match=r"synthetic_fundus.domain='mars': expected one of.*camera_b"
  ):
    registry.get_builder('synthetic_fundus', data_dir=data_dir, domain='mars')
  assert not os.path.exists(os.path.join(data_dir, 'synthetic_fundus', 'mars-s128-n200x50-seed0'))


def test_unknown_split_lists_available(data_dir):
  with pytest.raises(
    ValueError, match=r"synthetic_fundus split='validation': expected one of \['test', 'train'\]"
  ):
    registry.load_source('synthetic_fundus', 'validation', data_dir=data_dir, **KW)


def test_load_source_records_and_slices(data_dir):
  src = registry.load_source('synthetic_fundus', 'train', data_dir=data_dir, domain='noisy', **KW)
  assert len(src) == 6
  rec = src[-1]
  assert isinstance(rec['domain'], str) and rec['domain'] == 'noisy'
  assert isinstance(rec['id'], str) and rec['id'] == 'noisy-train-00005'
  assert rec['image'].dtype == np.uint8 and rec['image'].shape == (32, 32, 3)
  assert isinstance(rec['cup_to_disc'], np.float32)
  with pytest.raises(IndexError):
    src[6]
  sliced = registry.load_source(
    'synthetic_fundus', 'train[:2]', data_dir=data_dir, domain='noisy', **KW
  )
  assert len(sliced) == 2
  np.testing.assert_array_equal(sliced[1]['image'], src[1]['image'])


def test_load_arrays_stacks_and_reuses_prepared_data(data_dir):
  a = registry.load_arrays('synthetic_fundus', 'test', data_dir=data_dir, domain='camera_b', **KW)
  assert a['image'].shape == (3, 32, 32, 3) and a['mask'].shape == (3, 32, 32)
  assert a['id'].dtype.kind == 'U' and list(a['id']) == [f'camera_b-test-{i:05d}' for i in range(3)]
  assert a['cup_to_disc'].dtype == np.float32
  b = registry.get_builder('synthetic_fundus', data_dir=data_dir, domain='camera_b', **KW)
  files = sorted(os.listdir(b.data_dir))
  mtimes = [os.path.getmtime(os.path.join(b.data_dir, f)) for f in files]
  b2 = registry.get_builder(
    'synthetic_fundus', data_dir=data_dir, domain='camera_b', **KW
  )  # no rebuild
  assert b2.is_prepared() and sorted(os.listdir(b2.data_dir)) == files
  assert [os.path.getmtime(os.path.join(b.data_dir, f)) for f in files] == mtimes


def test_stack_records():
  out = registry.stack_records([{'x': np.ones(2), 's': 'a'}, {'x': np.zeros(2), 's': 'bc'}])
  assert out['x'].shape == (2, 2) and out['s'].tolist() == ['a', 'bc']
  assert registry.stack_records([]) == {}


def test_default_data_dir(monkeypatch, tmp_path):
  monkeypatch.setenv('YIPLEARN_DATA_DIR', str(tmp_path / 'env'))
  assert registry.default_data_dir('/w') == str(tmp_path / 'env')
  monkeypatch.delenv('YIPLEARN_DATA_DIR')
  assert registry.default_data_dir('/w') == os.path.join('/w', 'data')
  assert registry.default_data_dir().endswith(os.path.join('.cache', 'yiplearn', 'data'))


def test_concurrent_preparation_is_safe(tmp_path):
  """Two processes preparing the same config at once both succeed and read identical data."""
  code = textwrap.dedent(f"""
        import sys, numpy as np
        from yiplearn.data import registry
        a = registry.load_arrays("synthetic_fundus", "train", data_dir={str(tmp_path)!r},
                                 domain="camera_c", image_size=32, num_train=40, num_test=2)
        np.save(sys.argv[1], a["image"])
    """)
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  env = dict(os.environ, PYTHONPATH=repo + os.pathsep + os.environ.get('PYTHONPATH', ''))
  outs = [str(tmp_path / f'out{i}.npy') for i in range(2)]
  procs = [
    subprocess.Popen(
      [sys.executable, '-c', code, o],
      env=env,
      cwd=repo,
      stdout=subprocess.PIPE,
      stderr=subprocess.PIPE,
    )
    for o in outs
  ]
  for p in procs:
    _, err = p.communicate(timeout=300)
    assert p.returncode == 0, err.decode()[-2000:]
  a, b = (np.load(o) for o in outs)
  assert a.shape == (40, 32, 32, 3)
  np.testing.assert_array_equal(a, b)
  leftovers = [
    f
    for f in os.listdir(tmp_path / 'synthetic_fundus' / 'camera_c-s32-n40x2-seed0')
    if 'incomplete' in f
  ]
  assert leftovers == []


def test_all_and_union_splits_are_accepted(tmp_path):
  kw = dict(data_dir=tmp_path, domain='source', image_size=16, num_train=3, num_test=2)
  assert len(registry.load_source('synthetic_fundus', 'all', **kw)) == 5
  assert len(registry.load_source('synthetic_fundus', 'train+test[:1]', **kw)) == 4
  with pytest.raises(ValueError, match=r"split='train\+valid': expected one of"):
    registry.load_source('synthetic_fundus', 'train+valid', **kw)
