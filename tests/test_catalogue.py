"""Catalogue of bad inputs at every user-facing boundary, each with the one-line message it must produce
(the field, the value and what was expected) or its documented behaviour; the launch rows also check
exit status 2, a single `error:` line and no traceback."""

import glob
import pathlib
import shutil
import subprocess

import jax
import jax.numpy as jnp
import launch_runs
import numpy as np
import pytest

from configs import common, interactive_fundus, merge_digits
from yiplearn import checks, clicks, experiments
from yiplearn.data import registry, streams
from yiplearn.experiments import adapt_interactive, merge_online, pretrain, train_experts
from yiplearn.interactive import rules
from yiplearn.interactive import session as session_lib
from yiplearn.interactive.spec import SessionSpec
from yiplearn.io import checkpoints, files
from yiplearn.merging import online
from yiplearn.merging import tree as tr

K, H, W = 3, 8, 8


def toy_apply(params, x):
  return jnp.einsum('nhwc,ck->nhwk', x, params['w'])


RULE, TX = rules.make('pi_mi'), rules.make_optimizer(1e-2)
SESSION = session_lib.make_session(toy_apply, SessionSpec(num_classes=K, num_clicks=3), RULE, tx=TX)
PARAMS = {'w': jnp.full((1 + K, K), 0.1)}


def _session(image, gt):
  SESSION(rules.init_state(RULE, PARAMS, TX), image, gt, jax.random.PRNGKey(0))


def _run_stream(images):
  session_lib.run_stream(
    SESSION,
    rules.init_state(RULE, PARAMS, TX),
    images,
    np.zeros((len(images), H, W), np.int32),
    jax.random.PRNGKey(0),
  )


def _nan(shape, index, value=np.nan):
  x = np.zeros(shape, np.float32)
  x[index] = value
  return x


def _adapt_config(**fields):
  c = interactive_fundus.get_config('quick,stage=adapt')
  c.update_from_flattened_dict(fields)  # "a.b" keys
  return c


def _merge_config(**fields):
  c = merge_digits.get_config('quick')
  c.update_from_flattened_dict(fields)
  return c


def _small_tree(width=4):
  return {
    'conv': {'kernel': jnp.ones((3, 3, 1, width)), 'bias': jnp.zeros((width,))},
    'head': {'w': jnp.ones((width, 2))},
  }


def _nan_expert():
  bad = _small_tree()
  bad['head']['w'] = bad['head']['w'].at[0, 0].set(jnp.nan)
  tr.check_experts([_small_tree(), bad], ['a', 'b'])


def _manual(name, layout):
  def call(tmp_path):
    root = tmp_path / 'manual'
    if layout == 'masks_only':
      (root / 'kaggle_3m' / 'TCGA_CS_4941_19960909').mkdir(parents=True)
      (
        root / 'kaggle_3m' / 'TCGA_CS_4941_19960909' / 'TCGA_CS_4941_19960909_1_mask.tif'
      ).write_bytes(b'')
    elif layout == 'unrelated':
      (root / 'sub').mkdir(parents=True)
      (root / 'sub' / 'readme.txt').write_text('not the release')
    registry.load_arrays(name, 'train', data_dir=str(tmp_path / 'data'), manual_dir=str(root))

  return call


# (id, call(tmp_path), exception, message fragment)
CASES = [
  # Arrays entering the interactive core.
  (
    'image_rank',
    lambda p: _session(np.zeros((H, W)), np.zeros((H, W), np.int32)),
    ValueError,
    'image/gt=((8, 8), (8, 8)): expected (H, W, C) and (H, W)',
  ),
  (
    'gt_shape',
    lambda p: _session(np.zeros((H, W, 1)), np.zeros((H + 1, W), np.int32)),
    ValueError,
    'image/gt=((8, 8, 1), (9, 8)): expected (H, W, C) and (H, W)',
  ),
  (
    'image_dtype_complex',
    lambda p: _session(np.zeros((H, W, 1), np.complex64), np.zeros((H, W), np.int32)),
    ValueError,
    'image.dtype=complex64: expected real floating-point (or integer) pixels',
  ),
  (
    'image_dtype_bool',
    lambda p: _session(np.zeros((H, W, 1), bool), np.zeros((H, W), np.int32)),
    ValueError,
    'image.dtype=bool: expected real floating-point',
  ),
  (
    'gt_dtype_float',
    lambda p: _session(np.zeros((H, W, 1)), np.zeros((H, W), np.float32)),
    ValueError,
    'gt.dtype=float32: expected integer class indices',
  ),
  (
    'nan_pixels',
    lambda p: _run_stream(_nan((3, H, W, 1), (1, 2, 2, 0))),
    ValueError,
    "images='NaN or Inf pixels in images [1]': expected finite values",
  ),
  (
    'inf_pixels',
    lambda p: _run_stream(_nan((2, H, W, 1), (0, 0, 0, 0), np.inf)),
    ValueError,
    "images='NaN or Inf pixels in images [0]'",
  ),
  (
    'stream_nan_pixels',
    lambda p: streams.make_stream(
      'iid', _nan((4, H, W, 1), (3, 0, 0, 0)), np.zeros(4, int), batch_size=2
    ),
    ValueError,
    'NaN or Inf pixels in images [3]',
  ),
  (
    'model_input_rank',
    lambda p: clicks.model_input(jnp.zeros((H, W)), clicks.empty_clicks(2), K),
    ValueError,
    'image.shape=(8, 8): expected (H, W, C) for a single image',
  ),
  (
    'label_map_range',
    lambda p: checks.label_maps('masks', np.full((2, H, W), 5), K),
    ValueError,
    'masks values=[5, 5]: expected classes in [0, 3)',
  ),
  # Clicks.
  (
    'click_outside_image',
    lambda p: clicks.from_lists([[5, 1]], [1], 3, shape=(4, 4)),
    ValueError,
    'coords=[[5, 1]]: expected inside the image of shape (4, 4)',
  ),
  (
    'clicks_over_capacity',
    lambda p: clicks.from_lists([[0, 0], [1, 1], [2, 2]], [1, 1, 1], 2),
    ValueError,
    'capacity=2: expected an integer >= max(1, number of clicks=3)',
  ),
  (
    'click_label_range',
    lambda p: clicks.from_lists([[0, 0]], [3], 2, num_classes=3),
    ValueError,
    'labels=[3]: expected classes in [0, 3)',
  ),
  # Hyper-parameters and experiment configs (checked before any data is built).
  (
    'session_lr_zero',
    lambda p: rules.make_optimizer(0.0),
    ValueError,
    'lr=0.0: expected > 0',
  ),
  (
    'session_click_budget_zero',
    lambda p: SessionSpec(num_classes=K, num_clicks=0).validate(),
    ValueError,
    'num_clicks=0: expected an integer >= 1',
  ),
  (
    'adapt_lr_negative',
    lambda p: adapt_interactive.validate(_adapt_config(**{'optim.lr': -1e-4})),
    ValueError,
    'optim.lr=-0.0001: expected a positive learning rate',
  ),
  (
    'adapt_click_budget_zero',
    lambda p: adapt_interactive.validate(_adapt_config(**{'clicks.max_clicks': 0})),
    ValueError,
    'clicks.max_clicks=0: expected a click budget >= 1',
  ),
  (
    'adapt_unknown_method',
    lambda p: adapt_interactive.validate(_adapt_config(methods=('frozen', 'magic'))),
    ValueError,
    "methods='magic': expected one of",
  ),
  (
    'pretrain_batch_zero',
    lambda p: pretrain.validate(_pre(**{'optim.batch_size': 0})),
    ValueError,
    'optim.batch_size=0: expected a positive integer',
  ),
  (
    'pretrain_lr_zero',
    lambda p: pretrain.validate(_pre(**{'optim.lr': 0.0})),
    ValueError,
    'optim.lr=0.0: expected a positive learning rate',
  ),
  (
    'merge_k1',
    lambda p: merge_online.validate(_merge_config(**{'data.domains': ('rot0', 'rot30')})),
    ValueError,
    "data.domains=('rot0', 'rot30'): expected at least 3 domains (a held-out target and K >= 2 experts",
  ),
  (
    'entropy_adaptive_k1',
    lambda p: online.entropy_adaptive(None, 1),
    ValueError,
    'num_experts=1: expected >= 2 (one expert leaves nothing to merge)',
  ),
  (
    'merge_stream_batch_zero',
    lambda p: merge_online.validate(_merge_config(**{'stream.batch_size': 0})),
    ValueError,
    'stream.batch_size=0: expected a positive number',
  ),
  (
    'merge_unknown_stream',
    lambda p: merge_online.validate(_merge_config(streams=('sideways',))),
    ValueError,
    "streams entry='sideways': expected one of ('iid', 'dirichlet', 'mixed', 'continual')",
  ),
  (
    'merge_unknown_method',
    lambda p: merge_online.validate(_merge_config(methods=('mean', 'magic'))),
    ValueError,
    "methods entry='magic': expected one of",
  ),
  (
    'experts_lr_zero',
    lambda p: train_experts.validate(_merge_config(**{'train.expert_lr': 0.0})),
    ValueError,
    'train.expert_lr=0.0: expected a positive number',
  ),
  (
    'experts_batch_zero',
    lambda p: merge_online.validate(_merge_config(**{'train.batch_size': 0})),
    ValueError,
    'train.batch_size=0: expected a positive number',
  ),
  (
    'merge_tent_lr_zero',
    lambda p: merge_online.validate(_merge_config(**{'tent.lr': 0.0})),
    ValueError,
    'tent.lr=0.0: expected a positive number',
  ),
  (
    'config_unknown_key',
    lambda p: merge_digits.get_config('quick,nope=1'),
    ValueError,
    "config argument='nope': expected a key of this config, one of T, alpha, batch",
  ),
  (
    'config_wrong_type',
    lambda p: common.parse_arg('size=big', size=64),
    ValueError,
    "config argument size='big': expected int (default 64)",
  ),
  (
    'unknown_experiment',
    lambda p: experiments.get('bogus'),
    ValueError,
    "config.experiment='bogus': expected one of ",
  ),
  (
    'unknown_dataset',
    lambda p: registry.builder_class('nope'),
    ValueError,
    "data.name='nope': expected one of",
  ),
  # Merging.
  (
    'experts_other_architecture',
    lambda p: tr.stack([_small_tree(4), _small_tree(5)]),
    ValueError,
    'trees[1] leaf conv/bias shape=(5,): expected (4,) as in trees[0] (models of one architecture)',
  ),
  (
    'experts_other_structure',
    lambda p: tr.stack([_small_tree(), {'head': _small_tree()['head']}]),
    ValueError,
    'trees[1] parameter tree=',
  ),
  (
    'base_other_architecture',
    lambda p: tr.task_vectors(tr.stack([_small_tree(4)] * 2), _small_tree(5)),
    ValueError,
    'experts leaf conv/bias shape=(4,): expected (5,) as in base (models of one architecture)',
  ),
  (
    'expert_nonfinite',
    lambda p: _nan_expert(),
    ValueError,
    "expert 'b' leaf head/w='NaN or Inf': expected finite weights",
  ),
  (
    'empty_stream',
    lambda p: streams.make_stream('iid', np.zeros((0, H, W, 1)), np.zeros(0, int), batch_size=2),
    ValueError,
    'len(images)=0: expected at least one example in the stream',
  ),
  (
    'stream_batch_zero',
    lambda p: streams.make_stream('iid', np.zeros((2, H, W, 1)), np.zeros(2, int), batch_size=0),
    ValueError,
    'batch_size=0: expected an int >= 1',
  ),
  # Checkpoints and saved results.
  (
    'checkpoint_missing',
    lambda p: adapt_interactive.validate(_adapt_config(checkpoint_dir=str(p / 'nowhere'))),
    FileNotFoundError,
    "nowhere': expected an existing best/ directory of a pretrain run",
  ),
  (
    'checkpoint_empty',
    lambda p: checkpoints.Checkpointer(p / 'empty').restore(None, {'a': np.zeros(2)}),
    FileNotFoundError,
    'expected a step directory written by Checkpointer.save (no checkpoint there',
  ),
  (
    'npz_pickled',
    lambda p: (np.savez(p / 'x.npz', a=np.array([{}], dtype=object)), files.read_npz(p / 'x.npz')),
    ValueError,
    'expected plain numeric or string arrays, not: Object arrays cannot be loaded when allow_pickle',
  ),
  (
    'npz_truncated',
    lambda p: (
      np.savez(p / 'x.npz', a=np.zeros(100)),
      (p / 'x.npz').write_bytes((p / 'x.npz').read_bytes()[:40]),
      files.read_npz(p / 'x.npz'),
    ),
    ValueError,
    'expected a complete npz written by numpy.savez (delete it to recompute; BadZipFile)',
  ),
  # Manual dataset directories.
  (
    'lgg_missing_dir',
    _manual('lgg_kaggle_3m', 'missing'),
    FileNotFoundError,
    "expected a folder holding files matching 'TCGA_*_mask.tif'",
  ),
  (
    'lgg_masks_without_images',
    _manual('lgg_kaggle_3m', 'masks_only'),
    FileNotFoundError,
    'lgg_kaggle_3m.manual_dir=',
  ),
  (
    'rimone_wrong_layout',
    _manual('rimone_dl', 'unrelated'),
    FileNotFoundError,
    'rimone_dl.manual_dir=',
  ),
  (
    'drishti_missing_dir',
    _manual('drishti_gs1', 'missing'),
    FileNotFoundError,
    "expected a folder holding files matching 'drishtiGS_*.png'",
  ),
]


def _pre(**fields):
  c = interactive_fundus.get_config('quick,stage=pretrain')
  c.update_from_flattened_dict(fields)
  return c


@pytest.mark.parametrize('name,call,exc,fragment', CASES, ids=[c[0] for c in CASES])
def test_bad_input_gives_one_clear_error(tmp_path, name, call, exc, fragment):
  with pytest.raises(exc) as info:
    call(tmp_path)
  message = str(info.value)
  assert fragment in message, message
  assert '\n' not in message.strip(), message  # one line


# Checkpoints of another architecture, corrupt and truncated: restored through adapt_interactive.load_pretrained.
@pytest.fixture(scope='module')
def saved_model(tmp_path_factory):
  return pathlib.Path(launch_runs.pretrained(launch_runs.root(tmp_path_factory)))


def _damage(src: pathlib.Path, dst: pathlib.Path, how: str) -> None:
  shutil.copytree(src, dst)
  if how == 'metadata':
    meta = next(pathlib.Path(p) for p in glob.glob(str(dst / '*' / 'state' / '_METADATA')))
    meta.write_bytes(meta.read_bytes()[: len(meta.read_bytes()) // 2])
    return
  for path in glob.glob(str(dst / '*' / 'state' / 'ocdbt.process_0' / 'd' / '*')):
    data = bytearray(pathlib.Path(path).read_bytes())
    if how == 'truncated':
      data = data[: len(data) // 2]
    else:  # corrupt: the second half overwritten
      data[len(data) // 2 :] = bytes((b * 7 + 13) % 256 for b in data[len(data) // 2 :])
    pathlib.Path(path).write_bytes(bytes(data))


@pytest.mark.parametrize('how', ['other_architecture', 'corrupt', 'truncated', 'metadata'])
def test_bad_checkpoint_is_one_clear_error(saved_model, tmp_path, how):
  config = _adapt_config(checkpoint_dir=str(saved_model))
  if how == 'other_architecture':
    config.model.widths = (4, 16)
  else:
    config.checkpoint_dir = str(tmp_path / 'best')
    _damage(saved_model, tmp_path / 'best', how)
  with pytest.raises(checkpoints.CheckpointError) as info:
    adapt_interactive.load_pretrained(config, K, 3, 32)
  message = str(info.value)
  assert "expected one with this model's structure (this is of another architecture" in message
  assert str(config.checkpoint_dir) in message and '\n' not in message


# Documented behaviour of degenerate ground truths (yiplearn/interactive/user.py).
def _interact(gt):
  state, out = SESSION(
    rules.init_state(RULE, PARAMS, TX), np.ones((H, W, 1), np.float32), gt, jax.random.PRNGKey(0)
  )
  return jax.device_get(out)


def test_empty_ground_truth_gets_no_first_click_and_only_background_corrections():
  out = _interact(np.zeros((H, W), np.int32))
  valid, labels = np.asarray(out.clicks.valid), np.asarray(out.clicks.labels)
  assert not valid[0] and np.all(labels[valid] == 0)
  assert np.all(np.isfinite(np.asarray(out.union_dice))) and int(out.skipped) == 0


def test_all_foreground_ground_truth_gets_a_first_click_inside():
  gt = np.full((H, W), 2, np.int32)
  out = _interact(gt)
  assert bool(np.asarray(out.clicks.valid)[0]) and int(np.asarray(out.clicks.labels)[0]) == 2


def test_click_outside_the_image_is_ignored_by_the_guidance_maps():
  inside = clicks.from_lists([[2, 3]], [1], 2)
  with_outside = clicks.Clicks(
    inside.coords.at[1].set(jnp.array([50, -3])),
    inside.labels.at[1].set(1),
    inside.valid.at[1].set(True),
  )
  np.testing.assert_array_equal(
    np.asarray(clicks.guidance_maps(with_outside, (H, W), K)),
    np.asarray(clicks.guidance_maps(inside, (H, W), K)),
  )


# Through `python -m launch.run`: exit status 2, one `error:` line, no traceback (processes run in parallel).
LAUNCH = [
  (
    'unknown_experiment',
    ['configs/merge_digits.py:quick', '--config.experiment=bogus'],
    "config.experiment='bogus': expected one of ",
  ),
  (
    'unknown_method',
    ['configs/merge_digits.py:quick', "--config.methods=('mean','magic')"],
    "methods entry='magic': expected one of",
  ),
  (
    'unknown_dataset',
    ['configs/merge_digits.py:quick', '--config.data.name=nope'],
    "data.name='nope': expected one of",
  ),
  (
    'unknown_config_arg',
    ['configs/merge_digits.py:quick,nope=1'],
    "config argument='nope': expected a key of this config",
  ),
  (
    'unknown_override',
    ['configs/merge_digits.py:quick', '--config.train.nope=1'],
    "config.train.nope='1': expected a key that exists; there:",
  ),
  (
    'lr_zero',
    ['configs/interactive_fundus.py:quick,stage=adapt', '--config.optim.lr=0'],
    'optim.lr=0.0: expected a positive learning rate',
  ),
  (
    'missing_manual_dir',
    [
      'configs/interactive_lgg.py:quick,stage=pretrain',
      '--config.data.manual_dir=/nonexistent/lgg',
    ],
    "lgg_kaggle_3m.manual_dir='/nonexistent/lgg': expected a folder holding files matching 'TCGA_*_mask.tif'",
  ),
]


@pytest.fixture(scope='module')
def launched(tmp_path_factory):
  base = tmp_path_factory.mktemp('launch_errors')
  procs = {}
  for name, args, _ in LAUNCH:
    procs[name] = subprocess.Popen(
      launch_runs.command(args, base / name),
      cwd=launch_runs.REPO,
      env=launch_runs.env(base),
      stdout=subprocess.PIPE,
      stderr=subprocess.PIPE,
      text=True,
    )
  return {name: (p.wait(timeout=600), p.communicate()[1]) for name, p in procs.items()}


@pytest.mark.parametrize('name,args,fragment', LAUNCH, ids=[c[0] for c in LAUNCH])
def test_launch_user_error_is_one_line_with_status_2(launched, name, args, fragment):
  returncode, stderr = launched[name]
  lines = [l for l in stderr.splitlines() if l.startswith('error:')]
  assert returncode == 2 and len(lines) == 1 and 'Traceback' not in stderr, stderr[-2000:]
  assert fragment in lines[0], lines[0]
