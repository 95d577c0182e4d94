"""Config -> typed hyper-parameters: every field reaches the core, the defaults are the core's."""

import ml_collections
import pytest

from configs import interactive_common, interactive_fundus
from yiplearn import errors
from yiplearn.experiments import interactive_setup as setup
from yiplearn.interactive import pretraining, rules
from yiplearn.interactive.spec import Loss, SessionSpec


def test_every_field_reaches_the_core():
  c = ml_collections.ConfigDict(
    {
      'num_classes': 3,
      'report': {'disc': [1, 2], 'cup': [2]},
      'episodic': True,
      'clicks': {
        'max_clicks': 7,
        'encoding': 'disk',
        'sigma': 4.0,
        'radius': 3.0,
        'policy': 'deepest',
        'prev_mask': True,
        'tie_break': 'released',
        'reverse_classes': True,
      },
      'loss': {
        'alpha': 0.5,
        'gamma': 1.0,
        'beta': 100.0,
        'ccg_sigma': 2.0,
        'ccg_variant': 'released',
      },
      'pi': {'clicks': 4, 'repredict': True, 'stage1_ccg': True, 'fill': 'released'},
      'ia_sa': {'reg_weight': 0.3},
      'tent': {'lr_scale': 0.1},
      'sampler': {'name': 'released', 'min_area': (150, 150, 80)},
    }
  )
  spec = setup.spec_from_config(c)
  assert spec == SessionSpec(
    num_classes=3,
    num_clicks=7,
    policy='deepest',
    encoding='disk',
    sigma=4.0,
    radius=3.0,
    prev_mask=True,
    tie_break='released',
    reverse_classes=True,
    report=(('cup', (2,)), ('disc', (1, 2))),
  )
  assert setup.spec_from_config(c, 3).num_clicks == 3
  assert setup.loss_from_config(c) == Loss(0.5, 1.0, 100.0, 2.0, 'released')
  assert setup.rule_from_config(c, 'pi_mi').name == 'pi_mi_episodic'
  assert setup.sampler_from_config(c) == {'sampler': 'released', 'min_area': (150, 150, 80)}
  c.pi.fill = 'sometimes'
  with pytest.raises(errors.UserError, match="pi.fill='sometimes'"):
    setup.check_methods(c, ['pi'])
  with pytest.raises(errors.UserError, match="methods='magic'"):
    setup.check_methods(c, ['frozen', 'magic'])


def test_config_defaults_are_the_cores():
  cfg = interactive_fundus.get_config('quick')
  spec, loss = setup.spec_from_config(cfg.adapt), setup.loss_from_config(cfg.adapt)
  d = SessionSpec._field_defaults
  assert all(getattr(spec, k) == d[k] for k in d if k not in ('num_classes', 'report'))
  assert loss == Loss()
  assert setup.rule_from_config(cfg.adapt, 'ia_sa').name == 'ia_sa'
  assert cfg.adapt.ia_sa.to_dict() == rules.defaults(rules.ia_sa)
  assert cfg.adapt.pi.to_dict() == {
    'clicks': 0,
    'repredict': False,
    'stage1_ccg': False,
    'fill': 'invalid',
  }
  want = rules.defaults(pretraining.make_train_step)
  assert setup.sampler_from_config(cfg.pretrain) == {
    'sampler': want['sampler'],
    'min_area': want['min_area'],
  }
  assert interactive_common.clicks(3).max_clicks == 3
