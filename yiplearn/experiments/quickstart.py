"""The main job on built-in synthetic data: a dataset card, then the interactive demo.

1. The dataset card of the synthetic datasets (`dataset_card.run`): counts per domain and split,
   intensity statistics, sample grids with masks in `plots/`.
2. When `config.demo` is set: pre-train a small click-conditioned U-Net on the source domain,
   then compare the frozen model, Post-Interaction (PI) and PI + Mid-Interaction (MI) on a shifted
   target stream; prints the table and writes the Dice-per-click plot.
"""
from __future__ import annotations

import os
from typing import Any

import ml_collections

from yiplearn.experiments import dataset_card


def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  summary: dict[str, Any] = {"dataset_card": dataset_card.run(config.card, workdir)}
  if config.get("demo", None) is not None and config.demo.get("enabled", False):
    from yiplearn.experiments import adapt_interactive, pretrain  # pylint: disable=g-import-not-at-top
    pre_dir = os.path.join(workdir, "pretrain")
    summary["pretrain"] = pretrain.run(config.demo.pretrain, pre_dir)
    adapt_cfg = config.demo.adapt
    with adapt_cfg.unlocked():
      adapt_cfg.checkpoint_dir = os.path.join(pre_dir, "checkpoints")
    summary["adapt"] = adapt_interactive.run(adapt_cfg, workdir)
  return summary
