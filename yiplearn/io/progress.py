"""Progress logging for long loops: steps done, rate and time left, through absl logging."""

from __future__ import annotations

import time

from absl import logging


def _fmt_seconds(s: float) -> str:
  s = max(0, int(round(s)))
  h, rem = divmod(s, 3600)
  m, sec = divmod(rem, 60)
  return f'{h}:{m:02d}:{sec:02d}' if h else f'{m}:{sec:02d}'


class Progress:
  """Call `update(n)` as work finishes; logs at most every `log_every_s` seconds and at the end."""

  def __init__(self, total: int, desc: str, *, log_every_s: float = 10.0, start: int = 0):
    self.total, self.desc, self.log_every_s = int(total), desc, float(log_every_s)
    self.done = int(start)
    self._start_done = self.done
    self._t0 = time.perf_counter()
    self._last = self._t0

  @property
  def rate(self) -> float:
    elapsed = time.perf_counter() - self._t0
    return (self.done - self._start_done) / elapsed if elapsed > 0 else 0.0

  def message(self) -> str:
    rate = self.rate
    left = (self.total - self.done) / rate if rate > 0 else float('nan')
    eta = _fmt_seconds(left) if left == left else '?'
    return (
      f'{self.desc}: {self.done}/{self.total} ({100.0 * self.done / max(self.total, 1):.0f}%), '
      f'{rate:.2f}/s, elapsed {_fmt_seconds(time.perf_counter() - self._t0)}, left {eta}'
    )

  def update(self, n: int = 1) -> None:
    self.done += n
    now = time.perf_counter()
    if now - self._last >= self.log_every_s or self.done >= self.total:
      self._last = now
      logging.info('%s', self.message())
