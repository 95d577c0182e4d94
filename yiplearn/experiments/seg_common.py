"""Shared pieces of the interactive-segmentation experiments: data selection and the model.

The `data` sub-config of `pretrain` and `adapt_interactive`:

    name        builder name (synthetic_fundus, synthetic_mri, lgg_kaggle_3m, rimone_dl, drishti_gs1)
    kwargs      builder config kwargs (e.g. {'domain': 'camera_b', 'image_size': 64} or {'variant': 'all_slices'})
    split       split to read ('train', 'test', 'validation', ...)
    manual_dir  manual directory of a real dataset ('' for synthetic ones)
    sequence    LGG only: 'flair' | 't1' | 't1c' selects that channel and drops FLAIR-copy patients
    channels    explicit channel indices (used when `sequence` is empty; empty = all channels)
    sites       LGG only: keep these sites (empty = all); exclude_sites: drop these
    releases    RIM-ONE DL only: keep these sub-releases ('r1', 'r2', 'r3'; empty = all)
    image_size  resize to this square size (0 = keep)
    norm        'unit' | 'zscore'
    foreground_only  keep only images with a non-empty mask (a click needs an object)
    max_images  keep at most this many, in order (0 = all)
    data_dir    where builders write ('' = $YIPLEARN_DATA_DIR, else <workdir>/data)
"""

from __future__ import annotations

import os
from typing import Any

import ml_collections
import numpy as np

from yiplearn import checks, errors
from yiplearn.data import prepare, registry
from yiplearn.models.unet import UNet

DATA_DEFAULTS = dict(
  kwargs={},
  split='train',
  val_split='test',
  manual_dir='',
  sequence='',
  channels=(),
  sites=(),
  exclude_sites=(),
  releases=(),
  image_size=0,
  norm='unit',
  foreground_only=True,
  max_images=0,
  data_dir='',
)


def data_config(name: str, **fields: Any) -> ml_collections.ConfigDict:
  """The `data` sub-config (see the module docstring) of builder `name`: `DATA_DEFAULTS` with
  `fields` over them (`val_split`: the split pre-training validates on)."""
  for field in fields:
    if field not in DATA_DEFAULTS:
      raise errors.invalid('data field', field, f'one of {sorted(DATA_DEFAULTS)}')
  return ml_collections.ConfigDict(dict(DATA_DEFAULTS, name=name, **fields))


def _default_lgg_dir() -> str:
  here = os.path.dirname(os.path.abspath(__file__))
  return os.path.normpath(os.path.join(here, '..', '..', '..', 'shared', 'data', 'lgg_kaggle_3m'))


def manual_dir(data: ml_collections.ConfigDict) -> str | None:
  """The manual directory of a real dataset: config, then `$YIPLEARN_<NAME>_DIR`, then ../shared for LGG."""
  if data.get('manual_dir', ''):
    return data.manual_dir
  env = os.environ.get(f'YIPLEARN_{data.name.upper().split("_")[0]}_DIR')
  if env:
    return env
  if data.name == 'lgg_kaggle_3m':
    return _default_lgg_dir()
  return None


def load_segmentation(
  data: ml_collections.ConfigDict,
  workdir: str,
  *,
  split: str | None = None,
  data_dir: str | None = None,
  cache: dict | None = None,
) -> dict[str, Any]:
  """Reads, filters and prepares a segmentation split: images (N,S,S,C) float32, masks (N,S,S) int32, ids."""
  split = split or data.split
  data_dir = data_dir or data.get('data_dir', '') or registry.default_data_dir(workdir)
  kwargs = dict(data.get('kwargs', {}) or {})
  key = (data.name, split, data_dir, manual_dir(data), tuple(sorted(kwargs.items())))
  if cache is not None and key in cache:  # `cache`: the split's arrays read once for many filters
    arrays = cache[key]
  else:
    arrays = registry.load_arrays(
      data.name, split, data_dir=data_dir, manual_dir=manual_dir(data), **kwargs
    )
    if cache is not None:
      cache[key] = arrays
  if not arrays:
    raise errors.invalid('data.split', split, f'a split of {data.name} with at least one image')
  keep = np.ones(len(arrays['image']), bool)
  channels = list(data.get('channels', ()) or ()) or None
  sequence = data.get('sequence', '')
  if sequence:
    if 'pre_is_flair_copy' not in arrays:
      raise errors.invalid('data.sequence', sequence, f"'' ({data.name} has no MRI sequences)")
    keep &= prepare.lgg_channel_filter(arrays, sequence)
    channels = [prepare.lgg_channel(sequence)]
  sites = tuple(data.get('sites', ()) or ())
  exclude = tuple(data.get('exclude_sites', ()) or ())
  if sites or exclude:
    if 'site' not in arrays:
      raise errors.invalid('data.sites', sites + exclude, f"() ({data.name} has no 'site' field)")
    known = sorted(set(arrays['site'].tolist()))
    for s in sites + exclude:
      if s not in known:
        raise errors.invalid('data.sites entry', s, f'one of the sites in {split!r}: {known}')
    if sites:
      keep &= np.isin(arrays['site'], sites)
    keep &= ~np.isin(arrays['site'], exclude)
  releases = tuple(data.get('releases', ()) or ())
  if releases:
    if 'release' not in arrays:
      raise errors.invalid(
        'data.releases', releases, f"a dataset with a 'release' field, not {data.name}"
      )
    found = sorted(set(np.asarray(arrays['release']).astype(str).tolist()))
    for r in releases:
      if r not in found:
        raise errors.invalid('data.releases entry', r, f'one of the releases in {split!r}: {found}')
    keep &= np.isin(np.asarray(arrays['release']).astype(str), releases)
  if data.get('foreground_only', True):
    keep &= arrays['mask'].reshape(len(keep), -1).max(axis=1) > 0
  arrays = prepare.select(arrays, keep)
  if data.get('max_images', 0):
    arrays = {k: v[: int(data.max_images)] for k, v in arrays.items()}
  if len(arrays['image']) == 0:
    raise errors.invalid(
      f'{data.name}/{split} after filtering (sequence, sites, exclude_sites, releases)',
      (sequence, sites, exclude, releases),
      'at least one image left',
    )
  images, masks = prepare.prepare_segmentation(
    arrays, channels=channels, image_size=data.get('image_size', 0), norm=data.get('norm', 'unit')
  )
  checks.image_batch(
    f'{data.name}/{split} images', images
  )  # NaN/Inf pixels are refused here, on the host
  ids = arrays.get('id', np.array([str(i) for i in range(len(images))]))
  return {'images': images, 'masks': masks, 'ids': np.asarray(ids), 'arrays': arrays}


def take(data: dict[str, Any], n: int) -> dict[str, Any]:
  """The first `n` images of a `load_segmentation` result (all fields, metadata included)."""
  out = {k: v[:n] for k, v in data.items() if k != 'arrays'}
  out['arrays'] = {k: v[:n] for k, v in data['arrays'].items()}
  return out


def make_unet(model: ml_collections.ConfigDict, num_classes: int) -> UNet:
  """model.{widths, bottleneck, norm} and the optional conv_bias, norm_eps (0: the U-Net's default)."""
  eps = float(model.get('norm_eps', 0.0) or 0.0)
  return UNet(
    num_classes=num_classes,
    widths=tuple(model.widths),
    bottleneck=int(model.bottleneck),
    norm=model.norm,
    conv_bias=bool(model.get('conv_bias', UNet.conv_bias)),
    norm_eps=eps if eps > 0 else UNet.norm_eps,
  )


def input_channels(image_channels: int, num_classes: int, prev_mask: bool) -> int:
  """Model input width: image channels ++ one guidance map per class (++ previous mask)."""
  return image_channels + num_classes + int(bool(prev_mask))


# Segmentation domains for merging (`merge_seg`, `train_experts` with model.arch='unet').
LGG_SITES = ('DU', 'HT', 'CS', 'FG')
LGG_SEQUENCES = ('flair', 't1', 't1c')
NUM_CLASSES = {'lgg_kaggle_3m': 2, 'synthetic_fundus': 3, 'rimone_dl': 3}
EXTRA_TARGET = 'drishti_gs1'  # a further unseen fundus target (data.drishti_dir), never a source


def domain_config(cfg: ml_collections.ConfigDict, domain: str) -> ml_collections.ConfigDict:
  """The `load_segmentation` config of one merging domain of `cfg` (see `load_domains`)."""
  d = data_config(
    cfg.name,
    manual_dir=cfg.get('manual_dir', ''),
    kwargs=dict(cfg.get('kwargs', {}) or {}),
    image_size=int(cfg.image_size),
    norm=cfg.get('norm', 'zscore'),
    foreground_only=bool(cfg.get('foreground_only', True)),
    data_dir=cfg.get('data_dir', ''),
  )
  if domain == EXTRA_TARGET:
    d.name, d.manual_dir = EXTRA_TARGET, cfg.get('drishti_dir', '')
    d.kwargs = {k: v for k, v in d.kwargs.items() if k in ('image_size', 'crop_scale')}
  elif cfg.name == 'lgg_kaggle_3m':
    d.kwargs = dict(d.kwargs, variant='all_slices')
    if cfg.get('domain_by', 'site') == 'sequence':
      if domain not in LGG_SEQUENCES:
        raise errors.invalid('data.domains entry', domain, f'one of {LGG_SEQUENCES}')
      d.sequence = domain
    else:
      d.sites = (domain,)
  elif cfg.name == 'synthetic_fundus':
    d.kwargs = dict(d.kwargs, domain=domain, image_size=max(16, int(cfg.image_size)))
  elif cfg.name == 'rimone_dl':
    d.releases = (domain,)
  else:
    raise errors.invalid('data.name', cfg.name, f'one of {sorted(NUM_CLASSES)}')
  return d


def load_domains(cfg: ml_collections.ConfigDict, workdir: str) -> tuple[dict, int]:
  """({domain: {'train': (images, masks), 'test': (images, masks)}}, num_classes).

  `cfg` (the `data` sub-config of `merge_seg`): name ('lgg_kaggle_3m' | 'synthetic_fundus' |
  'rimone_dl'), domains, image_size, norm, manual_dir, foreground_only, max_train / max_test (0 =
  all), train_split / test_split (defaults: LGG 'train' / 'validation+test' (patient-level),
  synthetic 'train' / 'test', RIM-ONE DL the official partition's 'train' / 'test'), domain_by
  (LGG: 'site' = the TCGA institution, all 3 channels; 'sequence' = one MRI channel as a grey image,
  FLAIR-copy patients left out), kwargs (builder config). RIM-ONE DL domains are the sub-releases
  'r1' | 'r2' | 'r3' (the `release` feature); with `drishti_dir` set, Drishti-GS1 is added as the
  domain 'drishti_gs1' (its 'train' / 'test' splits), a further unseen target.
  """
  domains = list(cfg.domains)
  if len(domains) < 2:
    raise errors.invalid('data.domains', tuple(domains), 'at least 2 domains')
  default_test = 'validation+test' if cfg.name == 'lgg_kaggle_3m' else 'test'
  splits = (
    ('train', cfg.get('train_split', '') or 'train', int(cfg.get('max_train', 0))),
    ('test', cfg.get('test_split', '') or default_test, int(cfg.get('max_test', 0))),
  )
  out, cache = {}, {}
  if cfg.get('drishti_dir', ''):
    domains = domains + [EXTRA_TARGET]
  for dom in domains:
    out[dom] = {}
    for key, split, limit in splits:
      d = domain_config(cfg, dom)
      d.split, d.max_images = (
        (('test' if key == 'test' else 'train') if dom == EXTRA_TARGET else split),
        limit,
      )
      loaded = load_segmentation(d, workdir, cache=cache)
      out[dom][key] = (loaded['images'], loaded['masks'])
  return out, NUM_CLASSES[cfg.name]
