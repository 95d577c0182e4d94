"""The main job on built-in synthetic data: a dataset card, then the interactive demo.

1. The dataset card of the synthetic datasets (`dataset_card.run`): counts per domain and split,
   intensity statistics, sample grids with masks in `plots/`.
2. When `config.demo` is set: pre-train a small click-conditioned U-Net on the source domain,
   then compare the frozen model, Post-Interaction (PI) and PI + Mid-Interaction (MI) on a shifted
   target stream; prints the table and writes the Dice-per-click plot.
"""

from __future__ import annotations

from typing import Any

import ml_collections

from yiplearn.experiments import dataset_card


def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  summary: dict[str, Any] = {'dataset_card': dataset_card.run(config.card, workdir)}
  if config.get('demo', None) is not None and config.demo.get('enabled', False):
    from yiplearn.experiments import interactive  # pylint: disable=g-import-not-at-top

    summary['demo'] = interactive.run(config.demo, workdir)
  return summary
