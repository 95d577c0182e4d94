"""Datasets (TFDS builders, array_record, no TensorFlow) and grain input pipelines.

Typical use::

    from yiplearn import data
    src = data.load_source("synthetic_fundus", "train", data_dir=data.default_data_dir(workdir),
                           domain="camera_b", image_size=64)
    for batch in data.make_loader(src, batch_size=8, seed=0, num_epochs=2):
        ...  # batch: dict of numpy arrays, leading dim 8

Builder modules are imported lazily by the registry (see `registry.builder_names()`).
"""

from yiplearn.data.augment import SegAugment, classification_augment
from yiplearn.data.pipeline import ArraySource, Loader, iterate_arrays, make_loader
from yiplearn.data.registry import (
  builder_class,
  builder_names,
  default_data_dir,
  get_builder,
  load_arrays,
  load_source,
  stack_records,
)

__all__ = [
  'ArraySource',
  'Loader',
  'SegAugment',
  'builder_class',
  'classification_augment',
  'builder_names',
  'default_data_dir',
  'get_builder',
  'iterate_arrays',
  'load_arrays',
  'load_source',
  'make_loader',
  'stack_records',
]
