"""The entropy landscape over the K = 3 coefficient simplex (a `merge_online` plot)."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from yiplearn.experiments import merge_methods
from yiplearn.merging import tree as tr


def entropy_landscape(
  path: str, fam, experts, base, x: np.ndarray, chosen: np.ndarray, title: str, resolution: int = 20
) -> str:
  """Ternary heat-map of the full-model mean prediction entropy over the K = 3 simplex."""
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

  from yiplearn.io.plots import save_figure  # pylint: disable=g-import-not-at-top
  from yiplearn.merging import candidates, online  # pylint: disable=g-import-not-at-top

  grid = candidates.simplex_grid(3, resolution)
  tau = tr.task_vectors(experts, base)
  h = np.asarray(
    online.score_candidates(
      fam.model,
      base,
      tau,
      jnp.asarray(x),
      jnp.asarray(grid),
      chunk_size=merge_methods.auto_chunk(0),
    )
  )
  to_xy = lambda lam: (lam[..., 1] + 0.5 * lam[..., 2], (np.sqrt(3) / 2) * lam[..., 2])
  gx, gy = to_xy(grid)
  fig, ax = plt.subplots(figsize=(5.2, 4.6))
  sc = ax.tricontourf(gx, gy, h, levels=20, cmap='viridis')
  fig.colorbar(sc, ax=ax, label='mean prediction entropy (nats)')
  best = grid[np.argmin(h)]
  ax.plot(*to_xy(best), 'w^', ms=9, label='entropy minimum')
  ax.plot(*to_xy(np.asarray(chosen)), 'r*', ms=14, label='entropy-adaptive $\\lambda_{enc}$')
  for (px, py), name in zip([(0, 0), (1, 0), (0.5, np.sqrt(3) / 2)], fam.sources):
    ax.annotate(name, (px, py), ha='center', va='top' if py == 0 else 'bottom', fontsize=9)
  ax.set_aspect('equal')
  ax.axis('off')
  ax.set_title(title, fontsize=10, pad=22)
  ax.legend(loc='upper left', bbox_to_anchor=(-0.05, 1.0), fontsize=8)
  return save_figure(fig, path)
