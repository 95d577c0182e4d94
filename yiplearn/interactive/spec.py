"""Typed hyper-parameters of the interactive wing: the session spec and the segmentation loss.

Pure Python (no JAX), so config files take their defaults from here: every default has this one home.

* :class:`SessionSpec` -- what a session, the per-click tool, validation and pre-training share: classes,
  the click budget, the simulated user's policy, the click-map encoding and the reported foreground
  unions. The update rules' own hyper-parameters live with their factories (``rules.mi(...)``, ...).
* :class:`Loss` -- DiceFocal + beta CCG (DESIGN.md 1.1), used by MI, PI, the oracle and pre-training.
"""

from __future__ import annotations

from typing import NamedTuple

from yiplearn import errors

__all__ = ['ENCODINGS', 'CCG_VARIANTS', 'SessionSpec', 'Loss']

ENCODINGS = ('gaussian', 'disk')
CCG_VARIANTS = ('paper', 'released')


def _is_int(value, low: int) -> bool:
  try:
    return not isinstance(value, bool) and int(value) == value and value >= low
  except (TypeError, ValueError):
    return False


class SessionSpec(NamedTuple):
  """The interaction (paper defaults in brackets, DESIGN.md 1.1).

  Attributes:
    num_classes: K (background included).
    num_clicks: T clicks per image [10] (the capacity of every click set).
    policy: the simulated user's click policy ['random_in_largest'] | 'deepest'.
    encoding: click maps 'gaussian' [sigma 5] | 'disk' [radius 5]; sigma, radius: their sizes.
    prev_mask: the model takes the previous prediction's foreground as an extra input channel [False].
    tie_break: equal-size error components: 'first' (raster order) [default] | 'released' (the
      authors' code: the later error type / component; ``user.TIE_BREAKS``).
    reverse_classes: guidance channels in the order K-1..0 (the released code's [cup, rim, bg] /
      [fg, bg], to load its checkpoints) [False].
    report: ((name, (classes...)), ...) foreground unions scored after every click (empty: each
      foreground class on its own, named 'class<k>').
  """

  num_classes: int
  num_clicks: int = 10
  policy: str = 'random_in_largest'
  encoding: str = 'gaussian'
  sigma: float = 5.0
  radius: float = 5.0
  prev_mask: bool = False
  tie_break: str = 'first'
  reverse_classes: bool = False
  report: tuple = ()

  @property
  def report_unions(self) -> tuple[tuple[str, tuple[int, ...]], ...]:
    if self.report:
      return tuple((str(n), tuple(int(c) for c in cs)) for n, cs in self.report)
    return tuple((f'class{k}', (k,)) for k in range(1, self.num_classes))

  def input_channels(self, image_channels: int) -> int:
    """Channels of the model input: image ++ one guidance map per class [++ previous mask]."""
    return int(image_channels) + int(self.num_classes) + int(bool(self.prev_mask))

  def validate(self) -> SessionSpec:
    """Raises a UserError naming the first bad field; returns self."""
    from yiplearn.interactive import user  # pylint: disable=g-import-not-at-top (JAX)

    if not _is_int(self.num_classes, 2):
      raise errors.invalid('num_classes', self.num_classes, 'an integer >= 2')
    if not _is_int(self.num_clicks, 1):
      raise errors.invalid('num_clicks', self.num_clicks, 'an integer >= 1')
    if self.policy not in user.POLICIES:
      raise errors.invalid('policy', self.policy, f'one of {user.POLICIES}')
    if self.encoding not in ENCODINGS:
      raise errors.invalid('encoding', self.encoding, f'one of {ENCODINGS}')
    if self.tie_break not in user.TIE_BREAKS:
      raise errors.invalid('tie_break', self.tie_break, f'one of {user.TIE_BREAKS}')
    if not (self.sigma > 0 and self.radius > 0):
      raise errors.invalid('sigma/radius', (self.sigma, self.radius), 'positive sizes')
    for n, cs in self.report_unions:
      if not cs or any(not 0 < c < self.num_classes for c in cs):
        raise errors.invalid(
          f'report.{n}', list(cs), f'foreground classes in [1, {self.num_classes})'
        )
    return self


class Loss(NamedTuple):
  """DiceFocal = (1 - alpha) Dice + alpha Focal [alpha 0.7, gamma 2]; total + beta CCG [beta 200].

  ``ccg_sigma`` [3] and ``ccg_variant`` ('paper' | 'released', see ``losses.ccg_loss``) shape the CCG.
  """

  alpha: float = 0.7
  gamma: float = 2.0
  beta: float = 200.0
  ccg_sigma: float = 3.0
  ccg_variant: str = 'paper'

  def validate(self) -> Loss:
    if not 0.0 <= self.alpha <= 1.0:
      raise errors.invalid('loss.alpha', self.alpha, 'a weight in [0, 1]')
    if not self.gamma >= 0:
      raise errors.invalid('loss.gamma', self.gamma, '>= 0')
    if not self.beta >= 0:
      raise errors.invalid('loss.beta', self.beta, '>= 0')
    if not self.ccg_sigma > 0:
      raise errors.invalid('loss.ccg_sigma', self.ccg_sigma, '> 0')
    if self.ccg_variant not in CCG_VARIANTS:
      raise errors.invalid('loss.ccg_variant', self.ccg_variant, f'one of {CCG_VARIANTS}')
    return self
