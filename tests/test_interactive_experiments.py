"""End to end on tiny configs: pre-training (and its resume), then online adaptation with every method."""

import json
import os

import jax
import numpy as np
import pytest

from configs import interactive_fundus, interactive_lgg
from yiplearn.experiments import adapt_interactive, interactive, pretrain, seg_common
from yiplearn.io import files, writers


def _tiny(config):
  """Shrinks an `interactive` config further: 2 target images, 3 clicks, few steps."""
  config.pretrain.steps = 4
  config.pretrain.eval_every = 2
  config.pretrain.checkpoint_every = 2
  config.pretrain.val_images = 2
  config.pretrain.eval_clicks = 2
  config.pretrain.select_metric = 'dice@2'
  config.pretrain.optim.batch_size = 2
  for data in config.adapt.targets.values():
    data.max_images = 2
  config.adapt.clicks.max_clicks = 3
  config.adapt.checkpoint_every = 1
  return config


def test_pretrain_then_adapt_every_method(tmp_path):
  config = _tiny(interactive_fundus.get_config('quick,targets=camera_c'))
  # Every rule is unit-tested in test_updates/test_session; here three cover no, per-click and per-image updates.
  config.adapt.methods = ('frozen', 'pi_mi', 'oracle')
  summary = interactive.run(config, str(tmp_path))
  rows = {r['method']: r for r in summary['adapt']['camera_c']}
  assert set(rows) == set(config.adapt.methods)
  assert rows['frozen']['updates'] == 0
  # PI: two updates per image plus MI's up to T - 1 = 2 per image; the oracle one per image.
  assert rows['oracle']['updates'] == 2 and 4 <= rows['pi_mi']['updates'] <= 8
  for r in rows.values():
    assert 0.0 <= r['disc_dice@1'] <= 1.0 and 1.0 <= r['cup_noc@90'] <= 3.0 and r['skipped'] == 0
  table = json.loads((tmp_path / 'results' / 'interactive_camera_c.json').read_text())
  assert [r['method'] for r in table['rows']] == list(config.adapt.methods)
  records = [json.loads(l) for l in (tmp_path / 'per_click.jsonl').read_text().splitlines()]
  assert len(records) == 2 * len(config.adapt.methods) and len(records[0]['dice_disc']) == 3
  assert (tmp_path / 'plots' / 'dice_vs_clicks_camera_c_cup.png').exists()
  assert (tmp_path / 'pretrain' / 'results' / 'pretrain_val.md').exists()
  # The example pictures: frozen and PI+MI replayed through the tool show the session's predictions.
  assert (tmp_path / 'plots' / 'examples_camera_c.png').stat().st_size > 0
  gt = seg_common.load_segmentation(config.adapt.targets.camera_c, str(tmp_path))['masks']
  for method in ('frozen', 'pi_mi'):
    res = files.read_npz(tmp_path / 'streams' / f'camera_c__{method}.npz')
    assert res['ex_index'].tolist() == [0, 1] and res['ex_pred'].shape == (2, 2, 32, 32)
    for j, i in enumerate(res['ex_index']):
      for col, k in enumerate((1, 3)):  # clicks drawn with a budget of 3
        pred, want = res['ex_pred'][j, col] == 2, gt[i] == 2  # the cup
        dice = 2 * (pred & want).sum() / max(pred.sum() + want.sum(), 1)
        cup = list(res['names']).index('cup')
        np.testing.assert_allclose(dice, res['union'][i, k - 1, cup], atol=1e-5)

  # Started again in the same workdir: every stream is finished, results are identical.
  per_click = (tmp_path / 'per_click.jsonl').read_text()
  again = interactive.run(config, str(tmp_path))
  assert again['adapt'] == summary['adapt']
  assert (tmp_path / 'per_click.jsonl').read_text() == per_click


def test_resumed_stream_log_drops_records_after_the_checkpoint(tmp_path):
  path = tmp_path / 's.jsonl'
  path.write_text(''.join(json.dumps({'index': i, 'dice': [0.5]}) + '\n' for i in range(3)))
  log = writers.resume_jsonl(str(path), 'index', 2)  # checkpoint after 2 images; image 2 is redone
  log.write({'index': 2, 'dice': [0.7]})
  log.close()
  records = [json.loads(l) for l in path.read_text().splitlines()]
  assert [r['index'] for r in records] == [0, 1, 2] and records[2]['dice'] == [0.7]


def test_pretrain_resumes_from_latest_checkpoint(tmp_path, caplog):
  config = _tiny(interactive_fundus.get_config('quick,targets=camera_c')).pretrain
  config.steps = config.eval_every = config.checkpoint_every = 1
  first = pretrain.run(config, str(tmp_path))
  config.steps, config.val_images = 2, 50  # more validation images than the split has: said so
  with caplog.at_level('INFO'):
    second = pretrain.run(config, str(tmp_path))
  logged = [r.getMessage() for r in caplog.records]
  assert any(
    "val_images=50, but the validation split 'test' has only 8 images" in m for m in logged
  )
  assert any('validating on 8 of 8' in m for m in logged)
  steps = [json.loads(l)['step'] for l in (tmp_path / 'metrics.jsonl').read_text().splitlines()]
  assert steps.count(1) == 2 and max(steps) == 2  # step 1 (train + val records) was not run twice
  assert first['best']['step'] == 1 and second['best']['step'] in (1, 2)
  # The resumed run's validation table lists every evaluation (step 1 from the checkpoint), with skip counts.
  rows = json.loads((tmp_path / 'results' / 'pretrain_val.json').read_text())['rows']
  assert [r['step'] for r in rows] == [1, 2] and all(r['skipped'] == 0 for r in rows)


def test_pretrain_with_the_previous_mask_channel_trains_and_validates_with_it(tmp_path):
  config = _tiny(interactive_fundus.get_config('quick,targets=camera_c')).pretrain
  config.clicks.prev_mask = True
  config.steps = config.eval_every = config.checkpoint_every = 1
  out = pretrain.run(config, str(tmp_path))
  # Validation ran the session's click step on the 3 + 3 + 1 channel model (the mask channel).
  rows = json.loads((tmp_path / 'results' / 'pretrain_val.json').read_text())['rows']
  assert [r['step'] for r in rows] == [1] and 0.0 <= rows[0]['dice@2'] <= 1.0
  config.checkpoint_dir = out['best_dir']
  _, params = adapt_interactive.load_pretrained(config, 3, 3, 32)  # restores 7-channel weights
  kernels = [a for a in jax.tree.leaves(params) if a.ndim == 4]
  assert out['best']['step'] == 1 and any(k.shape[2] == 3 + 3 + 1 for k in kernels)


def test_pretrain_rejects_unknown_selection_metric(tmp_path):
  config = interactive_fundus.get_config('quick,stage=pretrain')
  config.select_metric = 'dice@7'
  with pytest.raises(ValueError, match="select_metric='dice@7'"):
    pretrain.run(config, str(tmp_path))


def test_adapt_errors_name_the_field(tmp_path):
  config = interactive_fundus.get_config('quick,stage=adapt')
  with pytest.raises(ValueError, match="checkpoint_dir=''"):
    adapt_interactive.run(config, str(tmp_path))
  config.methods = ('frozen', 'magic')
  with pytest.raises(ValueError, match='magic'):
    adapt_interactive.run(config, str(tmp_path))
  config.methods = ('frozen',)
  config.checkpoint_dir = str(tmp_path / 'missing')
  with pytest.raises(FileNotFoundError, match='missing'):
    adapt_interactive.run(config, str(tmp_path))


LGG = os.environ.get('YIPLEARN_LGG_DIR') or os.path.join(
  os.path.dirname(__file__), '..', '..', 'shared', 'data', 'lgg_kaggle_3m'
)


@pytest.mark.skipif(not os.path.isdir(LGG), reason='LGG subset not available')
def test_lgg_modality_targets_leave_out_flair_copies(tmp_path):
  from yiplearn.experiments import seg_common

  config = interactive_lgg.get_config('quick')
  for name, sequence in (('t1', 't1'), ('t1c', 't1c')):
    data = config.adapt.targets[name]
    data.max_images = 0
    data.manual_dir = LGG
    out = seg_common.load_segmentation(data, str(tmp_path))
    arrays = out['arrays']
    assert out['images'].shape[-1] == 1 and np.all(
      out['masks'].reshape(len(out['masks']), -1).max(1) == 1
    )
    copy_flag = arrays['pre_is_flair_copy'] if sequence == 't1' else arrays['post_is_flair_copy']
    assert not copy_flag.any()
    assert set(np.unique(arrays['patient'])).isdisjoint(
      set(
        np.unique(
          seg_common.load_segmentation(config.pretrain.data, str(tmp_path), split='train')[
            'arrays'
          ]['patient']
        )
      )
    )
