"""Matplotlib (Agg) helpers that save figures atomically under `plots/`."""

from __future__ import annotations

import io
import os
from collections.abc import Mapping, Sequence

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
import numpy as np

from yiplearn import errors
from yiplearn.io import files

# Colours for class overlays: class 1, 2, 3, ... (class 0 is background and not drawn).
OVERLAY_COLOURS = np.array([[0.0, 0.9, 0.2], [1.0, 0.15, 0.1], [0.2, 0.4, 1.0], [1.0, 0.8, 0.0]])


def save_figure(fig, path: str | os.PathLike, dpi: int = 110) -> str:
  """Saves `fig` as PNG to `path` atomically and closes it; returns the path."""
  buf = io.BytesIO()
  fig.savefig(buf, format='png', dpi=dpi, bbox_inches='tight')
  plt.close(fig)
  if files.is_writer():  # multi-host: one process writes results
    files.atomic_write_bytes(path, buf.getvalue())
  return os.fspath(path)


def plot_curves(
  path,
  curves: Mapping[str, tuple[Sequence[float], Sequence[float]]],
  *,
  xlabel: str,
  ylabel: str,
  title: str | None = None,
  ylim=None,
  bounds: tuple[float, float] | None = None,
) -> str:
  """One line per entry of `curves` (label -> (x, y)), with markers and a legend.

  `ylim`: fixed limits, or None to scale the y axis to the data (`data_limits`, within `bounds`,
  e.g. (0, 1) for Dice), so curves between 0.95 and 0.97 stay apart.
  """
  fig, ax = plt.subplots(figsize=(5.5, 4.0))
  for label, (x, y) in curves.items():
    ax.plot(np.asarray(x), np.asarray(y), marker='o', markersize=3, label=label)
  ax.set_xlabel(xlabel)
  ax.set_ylabel(ylabel)
  if ylim is None:
    ylim = data_limits([y for _, y in curves.values()], bounds=bounds)
  if ylim is not None:
    ax.set_ylim(*ylim)
  if title:
    ax.set_title(title)
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8)
  return save_figure(fig, path)


def data_limits(
  values, *, pad: float = 0.08, min_span: float = 0.01, bounds: tuple[float, float] | None = None
) -> tuple[float, float] | None:
  """Axis limits around the finite `values` (sequences of numbers): their range widened by `pad` of
  the span (at least `min_span`) on each side, clipped to `bounds`; None when nothing is finite."""
  flat = [np.ravel(np.asarray(v, np.float64)) for v in values]
  flat = np.concatenate(flat) if flat else np.zeros((0,))
  flat = flat[np.isfinite(flat)]
  if not flat.size:
    return None
  lo, hi = float(flat.min()), float(flat.max())
  margin = max(hi - lo, min_span) * pad + max(min_span - (hi - lo), 0.0) / 2
  lo, hi = lo - margin, hi + margin
  if bounds is not None:
    lo, hi = max(lo, bounds[0]), min(hi, bounds[1])
  return lo, hi


def display(image: np.ndarray) -> np.ndarray:
  """An image of any intensity scale (e.g. z-scored MRI) mapped to [0, 1] by its 1st-99th percentiles."""
  img = np.asarray(image, np.float32)
  lo, hi = np.percentile(img, [1, 99]) if img.size else (0.0, 1.0)
  if not hi > lo:
    return np.zeros_like(img)
  return np.clip((img - lo) / (hi - lo), 0.0, 1.0)


def overlay(image: np.ndarray, mask: np.ndarray | None, alpha: float = 0.45) -> np.ndarray:
  """`image` (H,W) or (H,W,C) in [0,1] as RGB with the classes of `mask` (H,W) tinted."""
  img = np.asarray(image, np.float32)
  if img.ndim == 2:
    img = img[..., None]
  if img.shape[-1] == 1:
    img = np.repeat(img, 3, axis=-1)
  elif img.shape[-1] != 3:
    img = np.repeat(img[..., :1], 3, axis=-1)
  img = np.clip(img, 0.0, 1.0)
  if mask is None:
    return img
  out = img.copy()
  mask = np.asarray(mask)
  for k in range(1, int(mask.max(initial=0)) + 1):
    sel = mask == k
    colour = OVERLAY_COLOURS[(k - 1) % len(OVERLAY_COLOURS)]
    out[sel] = (1 - alpha) * out[sel] + alpha * colour
  return out


def image_grid(
  path,
  images: Sequence[np.ndarray],
  masks: Sequence[np.ndarray] | None = None,
  titles: Sequence[str] | None = None,
  ncols: int = 6,
  title: str | None = None,
  cell: float = 1.8,
) -> str:
  """A grid of images in [0,1] (H,W[,C]), each with its mask overlaid when given."""
  n = len(images)
  if n == 0:
    raise errors.invalid('images', [], 'at least one image for the grid')
  ncols = max(1, min(ncols, n))
  nrows = (n + ncols - 1) // ncols
  fig, axes = plt.subplots(
    nrows, ncols, figsize=(cell * ncols, cell * nrows + (0.4 if title else 0)), squeeze=False
  )
  for i, ax in enumerate(axes.flat):
    ax.axis('off')
    if i >= n:
      continue
    ax.imshow(overlay(images[i], None if masks is None else masks[i]), interpolation='nearest')
    if titles is not None:
      ax.set_title(titles[i], fontsize=7)
  if title:
    fig.suptitle(title, fontsize=10)
  return save_figure(fig, path)


def click_examples(path, rows, *, title: str | None = None, cell: float = 1.6) -> str:
  """A grid with one row per example: `rows` = [(row label, [(title, image, mask, clicks), ...])].

  `image` (H, W[, C]) of any scale (shown by `display`), `mask` (H, W) classes overlaid or None,
  `clicks` None or (coords (N, 2) row/col, labels (N,)): drawn as dots in the class colour (white for
  background), the newest click larger.
  """
  if not rows:
    raise errors.invalid('rows', [], 'at least one example row')
  ncols = max(len(cells) for _, cells in rows)
  fig, axes = plt.subplots(
    len(rows),
    ncols,
    figsize=(cell * ncols, cell * len(rows) + (0.4 if title else 0)),
    squeeze=False,
  )
  for r, (label, cells) in enumerate(rows):
    for c, ax in enumerate(axes[r]):
      ax.set_xticks([])
      ax.set_yticks([])
      if c >= len(cells):
        ax.axis('off')
        continue
      name, image, mask, clicks = cells[c]
      ax.imshow(overlay(display(image), mask), interpolation='nearest')
      if clicks is not None and len(clicks[0]):
        coords, labels = np.asarray(clicks[0]), np.asarray(clicks[1])
        colours = [
          (1.0, 1.0, 1.0) if k == 0 else OVERLAY_COLOURS[(k - 1) % len(OVERLAY_COLOURS)]
          for k in labels
        ]
        sizes = np.full(len(coords), 14.0)
        sizes[-1] = 36.0
        ax.scatter(coords[:, 1], coords[:, 0], s=sizes, c=colours, edgecolors='k', linewidths=0.6)
      ax.set_title(name, fontsize=7)
      if c == 0:
        ax.set_ylabel(label, fontsize=7)
  if title:
    fig.suptitle(title, fontsize=10)
  return save_figure(fig, path)
