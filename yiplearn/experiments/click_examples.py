"""Example pictures of `adapt_interactive`: what frozen and PI+MI showed at clicks 1, 5 and 10.

For a few images of each target stream (evenly spaced, so the first shows the pre-trained model and
the last the most adapted one) the stream keeps the session's clicks and the state it had before the
image; the image is then replayed through the per-click tool (`interactive/tool.py`), which gives the
session's predictions and weights on the same clicks, to get the prediction shown after each click.
`plots/examples_<target>.png` draws, per image, the image, the ground truth and each method's
predictions at clicks 1, 5 and 10 with the clicks placed so far.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from yiplearn.interactive import tool as tool_lib
from yiplearn.io import plots

METHODS = ('frozen', 'pi_mi')  # the methods drawn, where the run has them


def clicks_shown(num_clicks: int) -> tuple[int, ...]:
  """The clicks drawn: 1, 5 and 10 within the budget, and the last click."""
  return tuple(sorted({k for k in (1, 5, 10) if k <= num_clicks} | {int(num_clicks)}))


def pick(n: int, count: int) -> np.ndarray:
  """`count` evenly spaced image indices of a stream of `n` (first and last included)."""
  return np.unique(np.linspace(0, n - 1, min(int(count), n)).round().astype(np.int64))


class Recorder:
  """Collects the example predictions of one (target, method) stream; `arrays` go in its checkpoint."""

  def __init__(self, model, spec, rule, tx, method: str, n: int, shape, count: int, tools: dict):
    self.enabled = method in METHODS and int(count) > 0 and not rule.needs_gt
    self.index = pick(n, count) if self.enabled else np.zeros((0,), np.int64)
    self.ks = clicks_shown(int(spec.num_clicks))
    e, t = len(self.index), int(spec.num_clicks)
    self.arrays = {
      'ex_index': self.index,
      'ex_pred': np.zeros((e, len(self.ks), *shape[:2]), np.int32),
      'ex_coords': np.zeros((e, t, 2), np.int32),
      'ex_labels': np.zeros((e, t), np.int32),
      'ex_valid': np.zeros((e, t), bool),
    }
    if self.enabled and ('tool', method) not in tools:  # one jitted tool per method
      tools['tool', method] = tool_lib.make_tool(model, spec, rule, tx=tx)
    self.tool = tools.get(('tool', method))

  def wants(self, i: int) -> bool:
    return bool(self.enabled and np.any(self.index == i))

  def record(self, i: int, state_before: Any, image: np.ndarray, clicks: Any, key: jax.Array):
    """Replays image i's session clicks from the stream state before it (a copy: the tool donates)."""
    j = int(np.flatnonzero(self.index == i)[0])
    coords, labels = np.asarray(clicks.coords), np.asarray(clicks.labels)
    valid = np.asarray(clicks.valid)
    self.arrays['ex_coords'][j], self.arrays['ex_labels'][j] = coords, labels
    self.arrays['ex_valid'][j] = valid
    state, view = self.tool.start(state_before, image, coords[0], labels[0], key=key)
    preds = [np.asarray(view.pred)]
    for t in range(1, len(coords)):
      if valid[t]:  # no click once nothing is left to correct: the prediction stays
        state, view = self.tool.click(state, view, coords[t], labels[t])
      preds.append(np.asarray(view.pred))
    self.arrays['ex_pred'][j] = np.stack([preds[k - 1] for k in self.ks])

  def carry(self) -> dict[str, np.ndarray]:
    """The arrays to checkpoint and to keep in the stream's result (none when nothing is recorded)."""
    return dict(self.arrays) if self.enabled else {}

  def restore(self, saved: dict) -> None:
    """Takes the example arrays back from a restored carry."""
    if self.enabled:
      self.arrays = {k: np.array(saved[k]) for k in self.arrays}


def copy_state(state: Any) -> Any:
  return jax.tree_util.tree_map(jnp.copy, state)


def plot(path: str, target: str, images, masks, results: dict[str, dict]) -> str | None:
  """`plots/examples_<target>.png` from the stream results {method: done-marker arrays}."""
  drawn = {m: r for m, r in results.items() if m in METHODS and len(r.get('ex_index', ())) > 0}
  if not drawn:
    return None
  first = next(iter(drawn.values()))
  index = np.asarray(first['ex_index'])
  ks = clicks_shown(int(np.asarray(first['ex_coords']).shape[1]))
  rows = []
  for j, i in enumerate(index):
    cells = [('image', images[i], None, None), ('ground truth', images[i], masks[i], None)]
    for method, r in drawn.items():
      for col, k in enumerate(ks):
        valid = np.asarray(r['ex_valid'][j][:k])
        pts = (np.asarray(r['ex_coords'][j][:k])[valid], np.asarray(r['ex_labels'][j][:k])[valid])
        cells.append((f'{method} @{k}', images[i], r['ex_pred'][j][col], pts))
    rows.append((f'image {int(i)}', cells))
  return plots.click_examples(os.fspath(path), rows, title=f'{target}: predictions after k clicks')
