"""Progress logging for long loops: items done, rate and a smoothed time left, through absl logging.

The first items of a jitted loop are dominated by compilation (a session's first image can take a
minute, the next ones a second), so the rate skips the first `warmup` items and then follows an
exponential moving average of the seconds per item: the time left is `ema * items left`, and `?`
until it is measured. Once `measure` items after the warm-up are timed, one line says how long the
whole loop is expected to take (e.g. that a default run will take about an hour).
"""

from __future__ import annotations

import time

from absl import logging


def format_seconds(s: float) -> str:
  """`H:MM:SS` (or `M:SS` under an hour)."""
  s = max(0, int(round(s)))
  h, rem = divmod(s, 3600)
  m, sec = divmod(rem, 60)
  return f'{h}:{m:02d}:{sec:02d}' if h else f'{m}:{sec:02d}'


class Progress:
  """Call `update(n)` as work finishes; logs at most every `log_every_s` seconds and at the end.

  Args:
    total: the number of items of the whole loop; `start` of them were done before (a resumed run).
    desc: what is counted, e.g. 'pre-training steps'.
    warmup: items not timed (compilation).
    measure: timed items after which the expected total time is logged once.
    smoothing: weight of the newest measurement in the moving average of seconds per item.
  """

  def __init__(
    self,
    total: int,
    desc: str,
    *,
    log_every_s: float = 10.0,
    start: int = 0,
    warmup: int = 2,
    measure: int = 5,
    smoothing: float = 0.1,
    clock=time.perf_counter,
  ):
    self.total, self.desc, self.log_every_s = int(total), desc, float(log_every_s)
    self.done = int(start)
    self.warmup, self.measure, self.smoothing = int(warmup), int(measure), float(smoothing)
    self._clock = clock
    self._t0 = self._last_log = self._last = clock()
    self._updates = 0  # items finished in this process
    self._timed = 0  # items after the warm-up
    self._ema: float | None = None  # seconds per item
    self._announced = False

  @property
  def seconds_per_item(self) -> float | None:
    """The smoothed seconds per item after the warm-up (None until measured)."""
    return self._ema

  @property
  def rate(self) -> float:
    return 1.0 / self._ema if self._ema else 0.0

  def seconds_left(self) -> float | None:
    return None if self._ema is None else self._ema * max(self.total - self.done, 0)

  def message(self) -> str:
    left = self.seconds_left()
    rate = f'{self.rate:.2f}/s' if self._ema is not None else 'rate ?'
    return (
      f'{self.desc}: {self.done}/{self.total} ({100.0 * self.done / max(self.total, 1):.0f}%), '
      f'{rate}, elapsed {format_seconds(self._clock() - self._t0)}, '
      f'left {format_seconds(left) if left is not None else "?"}'
    )

  def update(self, n: int = 1) -> None:
    now = self._clock()
    self.done += n
    self._updates += n
    if self._updates > self.warmup:
      timed = min(n, self._updates - self.warmup)  # items of this update after the warm-up
      per_item = (now - self._last) / n
      if self._ema is None:
        self._ema = per_item
      else:
        w = 1.0 - (1.0 - self.smoothing) ** timed
        self._ema = (1.0 - w) * self._ema + w * per_item
      self._timed += timed
    self._last = now
    if not self._announced and self._timed >= self.measure and self.done < self.total:
      self._announced = True
      logging.info(
        '%s: expected to take about %s in all, %s left (%.3g s each, measured after the first %d, '
        'which include compilation)',
        self.desc,
        format_seconds(self._ema * (self.total - self.done) + (now - self._t0)),
        format_seconds(self.seconds_left()),
        self._ema,
        self.warmup,
      )
    if now - self._last_log >= self.log_every_s or self.done >= self.total:
      self._last_log = now
      logging.info('%s', self.message())
