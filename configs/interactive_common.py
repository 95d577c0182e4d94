"""Sub-configs shared by the interactive-segmentation configs.

The defaults of the clicks, the loss and the rules are copied from their one home in the core
(`yiplearn.interactive.spec` and the factories of `yiplearn.interactive.rules`, DESIGN.md 1.1); the
mapping back is `yiplearn/experiments/interactive_setup.py`.
"""

import ml_collections

from yiplearn.interactive import pretraining, rules, spec
from yiplearn.models.unet import UNet


def model(quick: bool, paper: bool = False) -> ml_collections.ConfigDict:
  """The U-Net: the paper's widths (12, 72, 144, 288) + 576, or small ones for CPU runs.

  conv_bias and norm_eps (0 = the U-Net's default) are the released code's options.
  """
  if paper:
    widths, bottleneck = (12, 72, 144, 288), 576
  elif quick:
    widths, bottleneck = (4, 8), 16
  else:
    widths, bottleneck = (8, 16, 32, 64), 128
  return ml_collections.ConfigDict(
    {
      'widths': widths,
      'bottleneck': bottleneck,
      'norm': 'instance',
      'conv_bias': UNet.conv_bias,
      'norm_eps': float(UNet.norm_eps or 0.0),
    }
  )


def mesh() -> ml_collections.ConfigDict:
  """Device mesh (yiplearn/parallel.py): shape -1 = all devices on the data axis; the global batch must
  split evenly over it. E.g. `--config.mesh.shape=4` uses the first 4 devices."""
  return ml_collections.ConfigDict({'shape': -1, 'axis_names': ('data',)})


def clicks(max_clicks: int | None = None) -> ml_collections.ConfigDict:
  d = spec.SessionSpec._field_defaults
  return ml_collections.ConfigDict(
    {
      'max_clicks': d['num_clicks'] if max_clicks is None else max_clicks,
      'encoding': d['encoding'],
      'sigma': d['sigma'],
      'radius': d['radius'],
      'policy': d['policy'],
      'prev_mask': d['prev_mask'],
      'tie_break': d['tie_break'],
      'reverse_classes': d['reverse_classes'],
    }
  )


def loss() -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(spec.Loss()._asdict())


def rule_sections(c: ml_collections.ConfigDict) -> None:
  """The rules' own hyper-parameters: pi.{clicks (0 = T), repredict, stage1_ccg}, ia_sa, tent."""
  pi = rules.defaults(rules.pi)
  c.pi = ml_collections.ConfigDict(
    {
      'clicks': pi['pi_clicks'] or 0,
      'repredict': pi['pi_repredict'],
      'stage1_ccg': pi['pi_stage1_ccg'],
      'fill': pi['pi_fill'],
    }
  )
  c.ia_sa = ml_collections.ConfigDict(rules.defaults(rules.ia_sa))
  c.tent = ml_collections.ConfigDict(rules.defaults(rules.tent))


def augment(enabled: bool = True) -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(
    {
      'enabled': enabled,
      'flip_lr': 0.5,
      'affine': 0.5,
      'max_rotate': 15.0,
      'scale_range': (0.9, 1.1),
      'brightness': 0.1,
      'contrast_range': (0.8, 1.2),
      'gamma_range': (0.8, 1.25),
      'p_noise': 0.3,
      'noise_std': 0.03,
    }
  )


def pretrain(
  data: ml_collections.ConfigDict,
  *,
  num_classes: int,
  report: dict,
  quick: bool,
  steps: int,
  batch_size: int = 8,
  lr: float = 5e-4,
  paper_model: bool = False,
) -> ml_collections.ConfigDict:
  """A `pretrain` experiment config around `data` (see yiplearn/experiments/seg_common.py)."""
  c = ml_collections.ConfigDict()
  c.experiment = 'pretrain'
  c.seed = 0
  c.data = data
  c.num_classes = num_classes
  c.report = report
  c.model = model(quick, paper_model)
  c.clicks = clicks()
  c.loss = loss()
  d = rules.defaults(pretraining.make_train_step)  # the click sampler (interactive/sampler.py)
  c.sampler = ml_collections.ConfigDict({'name': d['sampler'], 'min_area': d['min_area']})
  c.augment = augment()
  c.optim = ml_collections.ConfigDict(
    {
      'lr': lr,
      'batch_size': batch_size,
      'decay_every': max(steps // 3, 1),
      'decay_rate': 0.5,
      'schedule': rules.defaults(pretraining.make_optimizer)['schedule'],
    }
  )
  c.steps = steps
  c.log_every = max(steps // 20, 1)
  c.eval_every = max(steps // 4, 1)
  c.eval_clicks = 5
  c.val_images = 8 if quick else 64
  c.select_metric = 'dice@5'
  c.checkpoint_every = max(steps // 4, 1)
  c.keep_checkpoints = 2
  c.mesh = mesh()
  return c


METHODS = ('frozen', 'ia_sa', 'tent', 'pi', 'pi_mi', 'oracle')  # names: rules.METHODS


def adapt(
  targets: dict,
  *,
  num_classes: int,
  report: dict,
  quick: bool,
  lr: float,
  methods=('frozen', 'pi', 'pi_mi'),
) -> ml_collections.ConfigDict:
  """An `adapt_interactive` config: every method over every target stream (online protocol)."""
  c = ml_collections.ConfigDict()
  c.experiment = 'adapt_interactive'
  c.seed = 0
  c.checkpoint_dir = ''  # the pre-training run's best/ (or checkpoints/) directory
  c.targets = {name: data for name, data in targets.items()}
  c.methods = tuple(methods)
  c.num_classes = num_classes
  c.report = report
  c.model = model(quick)
  c.clicks = clicks(10)
  c.loss = loss()
  c.optim = ml_collections.ConfigDict({'lr': lr})
  c.episodic = False  # every method reset to the pre-trained model before each image
  rule_sections(c)
  c.checkpoint_every = 10  # images between stream checkpoints (resume)
  c.example_images = 3  # plots/examples_<target>.png: images shown (0: no picture)
  c.session_unroll = (
    1  # clicks unrolled in the session scan (rolled: fast to compile; see benchmarks/NOTES.md)
  )
  return c


def stage_config(
  stage: str, pre: ml_collections.ConfigDict, adapt_cfg: ml_collections.ConfigDict, seeds=()
):
  """`pretrain`, `adapt` or `all` (the `interactive` driver: pre-train, then adapt with that model)."""
  adapt_cfg.model = pre.model
  adapt_cfg.seed = pre.seed
  if stage == 'pretrain':
    return pre
  if stage == 'adapt':
    return adapt_cfg
  c = ml_collections.ConfigDict()
  c.experiment = 'interactive'
  c.seeds = tuple(seeds)  # one pre-training + adaptation per seed, then mean ± std
  c.pretrain = pre
  c.adapt = adapt_cfg
  return c


# The released code's area-halving thresholds (pixels at its 512 x 512 fundus / 256 x 256 brain size).
RELEASED_MIN_AREA = {3: ((150, 150, 80), 512), 2: ((150, 150), 256)}


def released(
  pre: ml_collections.ConfigDict, adapt_cfg: ml_collections.ConfigDict, size: int
) -> None:
  """Sets every option in which the authors' released code differs from the paper (DESIGN.md 1.1).

  Applied by the `:released` argument of the interactive configs, before `stage_config`:
  (1) CCG: loss.ccg_variant='released' (log(e + K - 1) - p, per H W, +-10 px, sigma 10 // 3);
  (2) pi.stage1_ccg; (3) pi.fill='released' (T stage-2 clicks); (4) clicks.tie_break='released';
  (5) sampler.name='released' (min_area scaled from the released resolution to `size`: the same
  anatomy gets the same clicks), optim.schedule='released' (x1/0.5/0.25/0.1/0.01 at 45k..75k steps),
  model selection on mean(rim, cup) (fundus) / lesion Dice after 6 clicks; (6) clicks.reverse_classes
  ([cup, rim, bg] / [fg, bg]) and model.conv_bias, model.norm_eps=1e-5 (its U-Net's parameters).
  """
  for c in (pre, adapt_cfg):
    c.loss.ccg_variant = 'released'
    c.loss.ccg_sigma = float(10 // 3)
    c.clicks.tie_break = 'released'
    c.clicks.reverse_classes = True
    c.model.conv_bias = True
    c.model.norm_eps = 1e-5
  adapt_cfg.pi.stage1_ccg = True
  adapt_cfg.pi.fill = 'released'
  adapt_cfg.pi.clicks = 0  # T, the released num_correction_clicks = 10 with T = 10
  k = int(pre.num_classes)
  areas, ref = RELEASED_MIN_AREA.get(k, ((150,) * k, 256))
  min_area = tuple(max(1, round(a * (size / ref) ** 2)) for a in areas)  # one per class
  pre.sampler = ml_collections.ConfigDict({'name': 'released', 'min_area': min_area})
  pre.optim.schedule = 'released'
  pre.eval_clicks = 6
  if k == 3:
    pre.report = {'rim': [1], 'cup': [2]}
  pre.select_metric = 'dice@6'  # the mean over pre.report's entries after 6 clicks
