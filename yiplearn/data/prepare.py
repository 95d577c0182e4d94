"""Host-side preparation of segmentation arrays for the models: channels, size, intensity scale.

`prepare_segmentation(arrays, ...)` takes the stacked records of a segmentation builder
(`image` uint8 (N,H,W,C), `mask` uint8 (N,H,W)) and returns float32 images (N,S,S,C') and int32
masks (N,S,S): selected channels, resized (bilinear images, nearest masks) and scaled to [0, 1]
(`unit`) or standardised per image and channel over non-zero pixels (`zscore`, the MRI habit).
`lgg_channel_filter` drops LGG patients whose chosen channel is a copy of FLAIR (see SUBSET.md).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image

from yiplearn import errors

NORMALIZATIONS = ('unit', 'zscore')
LGG_CHANNELS = {'pre': 0, 't1': 0, 'flair': 1, 'post': 2, 't1c': 2}


def _resize_channel(x: np.ndarray, size: int, resample) -> np.ndarray:
  return np.asarray(Image.fromarray(x).resize((size, size), resample=resample))


def resize_images(images: np.ndarray, size: int) -> np.ndarray:
  """Bilinear resize of uint8 (N,H,W,C) images to (N,size,size,C), channel by channel."""
  if images.shape[1] == size and images.shape[2] == size:
    return images
  out = np.empty((images.shape[0], size, size, images.shape[3]), images.dtype)
  for i in range(images.shape[0]):
    for c in range(images.shape[3]):
      out[i, :, :, c] = _resize_channel(images[i, :, :, c], size, Image.BILINEAR)
  return out


def resize_masks(masks: np.ndarray, size: int) -> np.ndarray:
  """Nearest-neighbour resize of integer (N,H,W) masks to (N,size,size)."""
  if masks.shape[1] == size and masks.shape[2] == size:
    return masks
  return np.stack([_resize_channel(m.astype(np.uint8), size, Image.NEAREST) for m in masks]).astype(
    masks.dtype
  )


def normalize(images: np.ndarray, mode: str) -> np.ndarray:
  """uint8 (N,H,W,C) -> float32 in [0,1] (`unit`) or per-image, per-channel z-scores (`zscore`)."""
  if mode not in NORMALIZATIONS:
    raise errors.invalid('normalize', mode, f'one of {NORMALIZATIONS}')
  x = images.astype(np.float32) / 255.0
  if mode == 'unit':
    return x
  fg = x > 0
  count = np.maximum(fg.sum(axis=(1, 2), keepdims=True), 1)
  mean = (x * fg).sum(axis=(1, 2), keepdims=True) / count
  var = (((x - mean) * fg) ** 2).sum(axis=(1, 2), keepdims=True) / count
  return ((x - mean) / np.sqrt(var + 1e-6) * fg).astype(np.float32)


def prepare_segmentation(
  arrays: dict,
  *,
  channels: Sequence[int] | None = None,
  image_size: int | None = None,
  norm: str = 'unit',
  num_classes: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
  """Returns (images float32 (N,S,S,C'), masks int32 (N,S,S)) ready for the click models."""
  if 'image' not in arrays or 'mask' not in arrays:
    raise errors.invalid(
      'arrays keys', sorted(arrays), "'image' and 'mask' (a segmentation dataset)"
    )
  images, masks = np.asarray(arrays['image']), np.asarray(arrays['mask'])
  if images.ndim != 4 or images.dtype != np.uint8:
    raise errors.invalid('image', f'{images.dtype} {images.shape}', 'uint8 (N, H, W, C)')
  if channels is not None:
    channels = list(channels)
    bad = [c for c in channels if not 0 <= c < images.shape[-1]]
    if bad:
      raise errors.invalid('channels', channels, f'indices in [0, {images.shape[-1]})')
    images = images[..., channels]
  if image_size:
    images, masks = resize_images(images, int(image_size)), resize_masks(masks, int(image_size))
  masks = masks.astype(np.int32)
  if num_classes is not None and masks.size and masks.max() >= num_classes:
    raise errors.invalid('mask class', int(masks.max()), f'classes in [0, {num_classes})')
  return normalize(images, norm), masks


def lgg_channel(name: str) -> int:
  """Index of an LGG sequence by name (pre|t1, flair, post|t1c)."""
  if name not in LGG_CHANNELS:
    raise errors.invalid('sequence', name, f'one of {sorted(LGG_CHANNELS)}')
  return LGG_CHANNELS[name]


def lgg_channel_filter(arrays: dict, sequence: str) -> np.ndarray:
  """Boolean (N,) selecting records whose `sequence` channel is real (not a FLAIR copy)."""
  c = lgg_channel(sequence)
  n = len(arrays['image'])
  if c == 0:
    return ~np.asarray(arrays['pre_is_flair_copy'], bool)
  if c == 2:
    return ~np.asarray(arrays['post_is_flair_copy'], bool)
  return np.ones(n, bool)


def select(arrays: dict, keep: np.ndarray) -> dict:
  """The records where `keep` is True, for every field."""
  return {k: np.asarray(v)[keep] for k, v in arrays.items()}
