"""Quickstart: the main job on built-in synthetic data (no download).

Run:
  python -m launch.run --config configs/quickstart.py --workdir runs/quickstart
  (`make run` does the same.) Arguments: `:quick` (smaller, for tests), `size=`, `n=`.

Writes to the workdir: `config.json`; the interactive demo (pre-train a small click U-Net on the
source camera of synthetic fundus, then compare the frozen model, Post-Interaction (PI) and PI +
Mid-Interaction (MI) online on the shifted `camera_c` stream): `pretrain/`,
`results/interactive_camera_c.{md,csv,json}` (disc and cup Dice@1/5/10, NoC, AUC),
`plots/dice_vs_clicks_camera_c_{disc,cup}.png`, `per_click.jsonl`; and the dataset card of the synthetic fundus and MRI datasets
(`results/dataset_card.{md,csv,json}`: records per domain and split, mean intensity, class
fractions) and `plots/samples_<dataset>.png` (samples per domain with masks overlaid).
"""

import ml_collections

from configs import common, dataset_card, interactive_fundus


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  a = common.parse_arg(arg, quick=False, size=64, n=200, steps=400, demo=True)
  size = 32 if a.quick else a.size
  n_train = 8 if a.quick else a.n
  n_test = 8 if a.quick else max(a.n // 2, 8)
  c = ml_collections.ConfigDict()
  c.experiment = 'quickstart'
  c.seed = 0
  c.card = ml_collections.ConfigDict()
  c.card.samples_per_domain = 4 if a.quick else 6
  kwargs = {'image_size': size, 'num_train': n_train, 'num_test': n_test}
  c.card.datasets = [
    dict(dataset_card.ENTRIES[name], name=name, kwargs=kwargs)
    for name in ('synthetic_fundus', 'synthetic_mri')
  ]
  # The interactive demo: pre-train on the source camera, then frozen vs PI vs PI + MI on `camera_c`.
  c.demo = interactive_fundus.get_config(
    f'quick={a.quick},size={size},steps={30 if a.quick else a.steps},n={n_train},n_test={n_test},targets=camera_c'
  )
  c.demo.enabled = a.demo
  if not a.quick:
    c.demo.adapt.targets.camera_c.max_images = 24
  return c
