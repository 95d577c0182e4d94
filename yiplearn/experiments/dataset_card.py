"""Dataset card: builds the configured datasets and describes them in the workdir.

For every dataset entry of `config.datasets` (name, config kwargs, domains, splits) it builds
the TFDS data (into `config.data_dir` or the workdir's `data/`), then writes

- `results/dataset_card.{md,csv,json}`: records per dataset, domain and split, with the image
  size, per-channel mean intensity, class frequencies of the masks (or labels);
- `plots/samples_<dataset>.png`: a grid of samples per domain with their masks overlaid.

A domain is either a builder config (`domain_arg`, e.g. `domain=` or `angle=`) or, when
`group_by` names a record field (e.g. LGG's `site`), the values of that field.
"""

from __future__ import annotations

import os
from typing import Any

import ml_collections
import numpy as np
from absl import logging

from yiplearn.data import registry
from yiplearn.io import plots, tables


def _entries(config: ml_collections.ConfigDict) -> list[dict[str, Any]]:
  out = []
  for i, entry in enumerate(config.datasets):
    entry = dict(entry)
    for key in ('name', 'splits'):
      if key not in entry:
        raise ValueError(
          f'config.datasets[{i}] has no {key!r}: expected keys name, kwargs, splits and '
          'either domains (with domain_arg) or group_by'
        )
    out.append(entry)
  return out


def _load(entry: dict[str, Any], split: str, data_dir: str, manual_dir: str | None):
  """Yields (domain, arrays) for one dataset entry and split."""
  kwargs = dict(entry.get('kwargs', {}) or {})
  if entry.get('domains'):
    arg = entry.get('domain_arg', 'domain')
    for domain in entry['domains']:
      arrays = registry.load_arrays(
        entry['name'], split, data_dir=data_dir, manual_dir=manual_dir, **{arg: domain}, **kwargs
      )
      yield str(domain), arrays
  else:
    arrays = registry.load_arrays(
      entry['name'], split, data_dir=data_dir, manual_dir=manual_dir, **kwargs
    )
    field = entry.get('group_by')
    if not field:
      yield 'all', arrays
      return
    values = arrays[field]
    for value in sorted(set(values.tolist())):
      sel = values == value
      yield str(value), {k: v[sel] for k, v in arrays.items()}


def _describe(name: str, domain: str, split: str, arrays: dict[str, np.ndarray]) -> dict[str, Any]:
  images = arrays['image']
  row: dict[str, Any] = {
    'dataset': name,
    'domain': domain,
    'split': split,
    'records': int(images.shape[0]),
    'shape': 'x'.join(map(str, images.shape[1:])),
  }
  means = images.reshape(images.shape[0], -1, images.shape[-1]).mean(axis=(0, 1)) / 255.0
  row['mean_intensity'] = ' '.join(f'{m:.3f}' for m in means)
  if 'mask' in arrays:
    counts = np.bincount(arrays['mask'].reshape(-1).astype(np.int64))
    row['class_fractions'] = ' '.join(f'{c / counts.sum():.3f}' for c in counts)
  elif 'label' in arrays:
    counts = np.bincount(arrays['label'].astype(np.int64))
    row['class_fractions'] = ' '.join(f'{c / counts.sum():.3f}' for c in counts)
  return row


def _grid(path: str, name: str, samples: dict[str, dict[str, np.ndarray]], per_domain: int) -> str:
  images, masks, titles = [], [], []
  for domain, arrays in samples.items():
    n = min(per_domain, arrays['image'].shape[0])
    for i in range(n):
      img = arrays['image'][i].astype(np.float32) / 255.0
      if img.shape[-1] not in (1, 3):
        img = img[..., :3]
      images.append(img)
      masks.append(arrays['mask'][i] if 'mask' in arrays else None)
      label = f' y={int(arrays["label"][i])}' if 'label' in arrays else ''
      titles.append(f'{domain}{label}')
  return plots.image_grid(path, images, masks, titles, ncols=per_domain, title=name)


def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Builds every dataset in `config.datasets` and writes the card and sample grids."""
  data_dir = config.get('data_dir', None) or registry.default_data_dir(workdir)
  rows, written = [], []
  for entry in _entries(config):
    samples: dict[str, dict[str, np.ndarray]] = {}
    for split in entry['splits']:
      for domain, arrays in _load(entry, split, data_dir, entry.get('manual_dir')):
        rows.append(_describe(entry['name'], domain, split, arrays))
        logging.info(
          'dataset %s domain %s split %s: %d records',
          entry['name'],
          domain,
          split,
          rows[-1]['records'],
        )
        samples.setdefault(domain, arrays)
    written.append(
      _grid(
        os.path.join(workdir, 'plots', f'samples_{entry["name"]}.png'),
        entry['name'],
        samples,
        int(config.get('samples_per_domain', 6)),
      )
    )
  md = tables.write_table(
    os.path.join(workdir, 'results', 'dataset_card'), rows, title='Dataset card'
  )
  print(md)
  return {'rows': rows, 'plots': written}
