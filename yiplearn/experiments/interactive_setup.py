"""Config -> typed hyper-parameters of the interactive wing (the one place that reads config fields).

The core takes :class:`~yiplearn.interactive.spec.SessionSpec`, :class:`~yiplearn.interactive.spec.Loss`
and rules built by ``rules.make``; `pretrain`, `adapt_interactive` and `sweep_interactive` configs
carry them as

    num_classes, report                       -> SessionSpec.num_classes, .report
    clicks.{max_clicks, policy, encoding, sigma, radius, prev_mask, tie_break, reverse_classes}
                                              -> SessionSpec
    loss.{alpha, gamma, beta, ccg_sigma, ccg_variant}                -> Loss
    pi.{clicks (0 = T), repredict, stage1_ccg, fill}, ia_sa.reg_weight, tent.lr_scale, episodic
                                              -> the rule's own hyper-parameters (rules.make)
    optim.lr                                  -> rules.make_optimizer (adaptation)
    sampler.{name, min_area}                  -> pretraining.make_train_step (pre-training)

Every default lives in the core (the NamedTuples and the rule factories' signatures); the config files
copy them from there (configs/interactive_common.py).
"""

from __future__ import annotations

from typing import Any

from yiplearn.interactive import pretraining, rules
from yiplearn.interactive.spec import Loss, SessionSpec

__all__ = [
  'spec_from_config',
  'loss_from_config',
  'rule_from_config',
  'sampler_from_config',
  'check_methods',
]


def spec_from_config(config: Any, num_clicks: int | None = None) -> SessionSpec:
  """The session spec of a config (``num_clicks`` overrides ``clicks.max_clicks``, e.g. eval_clicks)."""
  c = config.clicks
  report = dict(config.get('report', None) or {})
  d = SessionSpec._field_defaults  # optional fields keep the core's defaults
  return SessionSpec(
    num_classes=int(config.num_classes),
    num_clicks=int(c.max_clicks if num_clicks is None else num_clicks),
    policy=str(c.policy),
    encoding=str(c.encoding),
    sigma=float(c.sigma),
    radius=float(c.radius),
    prev_mask=bool(c.prev_mask),
    tie_break=str(c.get('tie_break', d['tie_break'])),
    reverse_classes=bool(c.get('reverse_classes', d['reverse_classes'])),
    report=tuple((str(k), tuple(int(x) for x in v)) for k, v in report.items()),
  ).validate()


def loss_from_config(config: Any) -> Loss:
  return Loss(**{k: config.loss[k] for k in Loss._fields}).validate()


def rule_from_config(config: Any, method: str) -> rules.Rule:
  """The rule of ``method`` with the config's hyper-parameters (sections that are absent keep the
  factory defaults)."""
  hyper: dict[str, Any] = {'loss': loss_from_config(config)}
  if config.get('pi', None) is not None:
    hyper.update(
      pi_clicks=int(config.pi.clicks) or None,
      pi_repredict=bool(config.pi.repredict),
      pi_stage1_ccg=bool(config.pi.stage1_ccg),
      pi_fill=str(config.pi.get('fill', rules.defaults(rules.pi)['pi_fill'])),
    )
  if config.get('ia_sa', None) is not None:
    hyper['reg_weight'] = float(config.ia_sa.reg_weight)
  if config.get('tent', None) is not None:
    hyper['lr_scale'] = float(config.tent.lr_scale)
  return rules.make(method, episodic_reset=bool(config.get('episodic', False)), **hyper)


def sampler_from_config(config: Any) -> dict[str, Any]:
  """The pre-training sampler's keyword arguments of ``pretraining.make_train_step``."""
  d = rules.defaults(pretraining.make_train_step)
  c = config.get('sampler', None)
  if c is None:
    return {'sampler': d['sampler'], 'min_area': d['min_area']}
  area = c.min_area
  return {'sampler': str(c.name), 'min_area': int(area) if isinstance(area, int) else tuple(area)}


def check_methods(config: Any, methods) -> None:
  """Every method name known and every hyper-parameter valid, before any data is built."""
  rules.check_names(list(methods))
  spec_from_config(config)
  for m in methods:
    rule_from_config(config, m)
