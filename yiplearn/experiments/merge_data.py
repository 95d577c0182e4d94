"""Domain-labelled classification data for the merging experiments (`train_experts`, `merge_online`).

`load_domains(data_cfg, workdir)` returns `{domain: {'train': (x, y), 'test': (x, y)}}` with
x float32 (N, S, S, C) and y int32 (N,), plus the number of classes. The `data` sub-config:

    name         'rotated_digits' | 'lgg_kaggle_3m' | 'synthetic_fundus'
    domains      list of domain names:
                   rotated_digits: 'rot0', 'rot15', ..., 'rot75' (10 digit classes);
                   lgg_kaggle_3m: with domain_by='sequence' 'pre' | 'flair' | 'post' (each MRI
                     channel as a grey image; FLAIR-copy patients left out of 'pre'/'post'),
                     with domain_by='site' TCGA site codes 'DU' | 'HT' | 'CS' | 'FG' (3 channels);
                     label = tumour present (lesion_area > 0), patient-level splits;
                   synthetic_fundus: 'source' | 'camera_b' | 'camera_c' | 'noisy';
                     label = cup-to-disc ratio > cdr_threshold (large cup).
    image_size   square size the images are resized to
    norm         'unit' ([0, 1]) or 'zscore' (per image and channel)
    manual_dir   LGG release folder ('' = $YIPLEARN_LGG_DIR or ../shared/data/lgg_kaggle_3m)
    domain_by    LGG only: 'sequence' or 'site'
    num_train, num_test, cdr_threshold   synthetic_fundus only
    max_train, max_test   keep at most this many per domain (0 = all), for quick runs
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from yiplearn import errors
from yiplearn.data import prepare, registry

Split = tuple[np.ndarray, np.ndarray]
NUM_CLASSES = {'rotated_digits': 10, 'lgg_kaggle_3m': 2, 'synthetic_fundus': 2}
LGG_SEQUENCES = ('pre', 'flair', 'post')


def lgg_dir(cfg: Any) -> str:
  if cfg.get('manual_dir', ''):
    return cfg.manual_dir
  env = os.environ.get('YIPLEARN_LGG_DIR')
  if env:
    return env
  here = os.path.dirname(os.path.abspath(__file__))
  return os.path.normpath(os.path.join(here, '..', '..', '..', 'shared', 'data', 'lgg_kaggle_3m'))


def _finish(images: np.ndarray, labels: np.ndarray, cfg: Any, limit: int) -> Split:
  if limit:
    images, labels = images[:limit], labels[:limit]
  images = prepare.resize_images(np.asarray(images, np.uint8), int(cfg.image_size))
  return prepare.normalize(images, cfg.get('norm', 'unit')), np.asarray(labels, np.int32)


def _digits(cfg: Any, domain: str, data_dir: str) -> dict[str, Split]:
  if not domain.startswith('rot') or not domain[3:].isdigit():
    raise errors.invalid('data.domains entry', domain, "'rot<angle>' e.g. 'rot30'")
  out = {}
  for split, limit in (('train', cfg.get('max_train', 0)), ('test', cfg.get('max_test', 0))):
    a = registry.load_arrays(
      'rotated_digits',
      split,
      data_dir=data_dir,
      angle=int(domain[3:]),
      image_size=int(cfg.image_size),
    )
    out[split] = _finish(a['image'], a['label'], cfg, limit)
  return out


def _fundus(cfg: Any, domain: str, data_dir: str) -> dict[str, Split]:
  out = {}
  size = max(16, int(cfg.image_size))
  for split, limit in (('train', cfg.get('max_train', 0)), ('test', cfg.get('max_test', 0))):
    a = registry.load_arrays(
      'synthetic_fundus',
      split,
      data_dir=data_dir,
      domain=domain,
      image_size=size,
      num_train=int(cfg.num_train),
      num_test=int(cfg.num_test),
    )
    labels = (np.asarray(a['cup_to_disc']) > float(cfg.cdr_threshold)).astype(np.int32)
    out[split] = _finish(a['image'], labels, cfg, limit)
  return out


def _lgg(cfg: Any, domains: list[str], data_dir: str) -> dict[str, dict[str, Split]]:
  by = cfg.get('domain_by', 'sequence')
  if by not in ('sequence', 'site'):
    raise errors.invalid('data.domain_by', by, "'sequence' or 'site'")
  out: dict[str, dict[str, Split]] = {d: {} for d in domains}
  for split, src_split, limit in (
    ('train', 'train', cfg.get('max_train', 0)),
    ('test', 'validation+test', cfg.get('max_test', 0)),
  ):
    a = registry.load_arrays(
      'lgg_kaggle_3m', src_split, data_dir=data_dir, manual_dir=lgg_dir(cfg), variant='all_slices'
    )
    labels = (np.asarray(a['lesion_area']) > 0).astype(np.int32)
    for d in domains:
      if by == 'sequence':
        if d not in LGG_SEQUENCES:
          raise errors.invalid('data.domains entry', d, f'one of {LGG_SEQUENCES}')
        keep = prepare.lgg_channel_filter(a, d)
        c = prepare.lgg_channel(d)
        imgs = np.asarray(a['image'])[keep][..., c : c + 1]
      else:
        keep = np.asarray(a['site']).astype(str) == d
        if not keep.any():
          raise errors.invalid(
            'data.domains entry',
            d,
            f'a site with LGG slices in split {src_split!r} '
            f'(sites: {sorted(set(np.asarray(a["site"]).astype(str)))})',
          )
        imgs = np.asarray(a['image'])[keep]
      out[d][split] = _finish(imgs, labels[keep], cfg, limit)
  return out


def load_domains(cfg: Any, workdir: str) -> tuple[dict[str, dict[str, Split]], int]:
  """({domain: {'train': (x, y), 'test': (x, y)}}, num_classes); see the module docstring."""
  name = cfg.name
  if name not in NUM_CLASSES:
    raise errors.invalid('data.name', name, f'one of {sorted(NUM_CLASSES)}')
  domains = list(cfg.domains)
  if len(domains) < 2:
    raise errors.invalid('data.domains', domains, 'at least 2 domains')
  data_dir = registry.default_data_dir(workdir)
  if name == 'lgg_kaggle_3m':
    data = _lgg(cfg, domains, data_dir)
  else:
    load = _digits if name == 'rotated_digits' else _fundus
    data = {d: load(cfg, d, data_dir) for d in domains}
  for d, splits in data.items():
    for s, (x, _) in splits.items():
      if len(x) == 0:
        raise errors.invalid(f'domain {d!r} split', s, 'at least one example (it is empty)')
  return data, NUM_CLASSES[name]
