"""Shared helpers for yiplearn's TFDS builders (array_record, no TensorFlow).

Every builder in `yiplearn.data` follows one contract:

- a classmethod `make_config(**kwargs) -> tfds.core.BuilderConfig` validates its keyword
  arguments with :func:`validate_kwargs` and returns a config whose `name` encodes every
  parameter (e.g. ``camera_b-s64-n200x50-seed0``), so different settings never collide in a
  data dir;
- version 1.0.0;
- per-example randomness comes from :func:`example_rng`, i.e. ``np.random.default_rng([seed,
  domain_index, split_index, example_index])``, so a record never depends on generation order;
- images and masks are stored as zlib-encoded ``tfds.features.Tensor`` (``tfds.features.Image``
  needs TensorFlow to encode).

Nothing here imports the core, io or experiments.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import tensorflow_datasets as tfds

from yiplearn import errors

VERSION = tfds.core.Version('1.0.0')

# Split indices folded into per-example rngs (keep stable: changing them changes the data).
SPLIT_INDEX = {'train': 0, 'test': 1, 'validation': 2}


class Param:
  """Specification of one builder keyword argument.

  Args:
    default: value used when the key is not given.
    choices: allowed values (exact membership), or None.
    check: predicate on the (converted) value, used when `choices` is None.
    expected: human-readable description of valid values for error messages.
    convert: callable applied to the raw value before checking (e.g. `int`).
  """

  def __init__(
    self,
    default: Any,
    *,
    choices: Sequence[Any] | None = None,
    check: Callable[[Any], bool] | None = None,
    expected: str | None = None,
    convert: Callable[[Any], Any] | None = None,
  ):
    self.default = default
    self.choices = tuple(choices) if choices is not None else None
    self.check = check
    self.convert = convert
    if expected is None:
      expected = f'one of {list(self.choices)}' if self.choices is not None else 'a valid value'
    self.expected = expected


def int_param(default: int, lo: int, hi: int | None = None) -> Param:
  """A `Param` for an integer in [lo, hi] (hi=None: unbounded)."""
  expected = f'an integer >= {lo}' if hi is None else f'an integer in [{lo}, {hi}]'

  def check(v: Any) -> bool:
    return v >= lo and (hi is None or v <= hi)

  return Param(default, check=check, expected=expected, convert=strict_int)


def strict_int(v: Any) -> int:
  """Converts ints, integral floats and digit strings to int; raises TypeError otherwise (bools too)."""
  if isinstance(v, (bool, np.bool_)):
    raise TypeError('bool is not an integer')
  if isinstance(v, (int, np.integer)):
    return int(v)
  if isinstance(v, str) and v.strip().lstrip('-').isdigit():
    return int(v)
  if isinstance(v, float) and float(v).is_integer():
    return int(v)
  raise TypeError(f'not an integer: {v!r}')


def validate_kwargs(
  builder_name: str, kwargs: Mapping[str, Any], spec: Mapping[str, Param]
) -> dict[str, Any]:
  """Checks `kwargs` against `spec` and fills defaults.

  Raises:
    ValueError: naming the key, the value and the valid choices, for an unknown key or a
      bad value.
  """
  for key in kwargs:
    if key not in spec:
      raise errors.invalid(
        f'{builder_name} config key', key, f'a key of this builder, one of {sorted(spec)}'
      )
  out: dict[str, Any] = {}
  for key, p in spec.items():
    raw = kwargs.get(key, p.default)
    try:
      value = p.convert(raw) if p.convert is not None else raw
      ok = (value in p.choices) if p.choices is not None else (p.check is None or p.check(value))
    except (TypeError, ValueError):
      ok = False
    if not ok:
      raise errors.invalid(f'{builder_name}.{key}', raw, p.expected)
    out[key] = value
  return out


def example_rng(seed: int, *indices: int) -> np.random.Generator:
  """Independent per-example generator: ``default_rng([seed, *indices])``."""
  return np.random.default_rng([int(seed), *(int(i) for i in indices)])


def image_feature(size: int, channels: int) -> tfds.features.Tensor:
  """uint8 (size, size, channels) tensor feature, zlib-encoded (no TensorFlow needed)."""
  return tfds.features.Tensor(shape=(size, size, channels), dtype=np.uint8, encoding='zlib')


def mask_feature(size: int) -> tfds.features.Tensor:
  """uint8 (size, size) class-index mask feature, zlib-encoded."""
  return tfds.features.Tensor(shape=(size, size), dtype=np.uint8, encoding='zlib')


def to_uint8(x: np.ndarray) -> np.ndarray:
  """Float image in [0, 1] (any shape) -> uint8 with rounding and clipping."""
  return np.clip(np.round(np.asarray(x, np.float64) * 255.0), 0, 255).astype(np.uint8)


@contextlib.contextmanager
def file_lock(path: str | os.PathLike) -> Iterator[None]:
  """Exclusive inter-process lock on `path` (created if missing); POSIX `flock`.

  On platforms without `fcntl` this degrades to no locking (TFDS still writes into a
  temporary directory and renames it).
  """
  os.makedirs(os.path.dirname(os.fspath(path)) or '.', exist_ok=True)
  try:
    import fcntl  # noqa: PLC0415  (POSIX only)
  except ImportError:  # pragma: no cover
    yield
    return
  with open(path, 'a+') as f:
    fcntl.flock(f.fileno(), fcntl.LOCK_EX)
    try:
      yield
    finally:
      fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def smooth_noise(rng: np.random.Generator, size: int, scale: float) -> np.ndarray:
  """Smooth random field in roughly [-1, 1], shape (size, size), float64.

  Gaussian white noise low-pass filtered with std `scale` pixels and normalised by its
  maximum absolute value.
  """
  from scipy import ndimage  # noqa: PLC0415

  field = ndimage.gaussian_filter(
    rng.standard_normal((size, size)), sigma=max(scale, 0.5), mode='wrap'
  )
  m = np.abs(field).max()
  return field / m if m > 0 else field


def grid(size: int) -> tuple[np.ndarray, np.ndarray]:
  """Pixel-centre coordinates normalised to [-1, 1]: (yy, xx) each (size, size) float64."""
  c = (np.arange(size, dtype=np.float64) + 0.5) / size * 2.0 - 1.0
  return np.meshgrid(c, c, indexing='ij')


# --------------------------------------------------------------------------------------------
# Synthetic segmentation builders (shared by synthetic_fundus and synthetic_mri).


@dataclasses.dataclass(eq=False)
class SyntheticConfig(tfds.core.BuilderConfig):
  """Config of a procedurally generated, per-domain segmentation dataset."""

  domain: str = ''
  image_size: int = 128
  num_train: int = 200
  num_test: int = 50
  seed: int = 0


def make_synthetic_config(
  builder_name: str,
  domains: Sequence[str],
  kwargs: Mapping[str, Any],
  *,
  default_size: int,
  default_train: int,
  default_test: int,
  description: str,
) -> SyntheticConfig:
  """Validates `kwargs` (domain, image_size, num_train, num_test, seed) -> `SyntheticConfig`.

  The config name is ``<domain>-s<size>-n<train>x<test>-seed<seed>``.
  """
  spec = {
    'domain': Param(domains[0], choices=domains),
    'image_size': int_param(default_size, 16, 1024),
    'num_train': int_param(default_train, 1),
    'num_test': int_param(default_test, 1),
    'seed': int_param(0, 0, 2**31 - 1),
  }
  v = validate_kwargs(builder_name, kwargs, spec)
  name = f'{v["domain"]}-s{v["image_size"]}-n{v["num_train"]}x{v["num_test"]}-seed{v["seed"]}'
  return SyntheticConfig(
    name=name, version=VERSION, description=f'{description} Domain {v["domain"]!r}.', **v
  )


class SyntheticSegmentationBuilder(tfds.core.GeneratorBasedBuilder):
  """Shared body of the procedural segmentation builders (one config per domain and size).

  Subclasses set NAME, DOMAINS, DEFAULT_DOMAIN, DESCRIPTION, EXTRA_FEATURES ({field: dtype}),
  `code_path`, and `make_example = staticmethod(fn)` with
  ``fn(seed, domain, split, index, image_size) -> record``. Records come in index order
  (record i of a split is ``make_example(..., i)``).
  """

  VERSION = VERSION
  RELEASE_NOTES = {'1.0.0': 'Initial release.'}
  BUILDER_CONFIG_CLASS = SyntheticConfig
  NAME: str = ''
  DOMAINS: tuple[str, ...] = ()
  DESCRIPTION: str = ''
  EXTRA_FEATURES: dict[str, Any] = {}
  make_example: Callable[..., dict[str, Any]]

  @classmethod
  def make_config(cls, **kwargs: Any) -> SyntheticConfig:
    """kwargs: domain (one of DOMAINS, default the first), image_size (16..1024, default 128),
    num_train (default 200), num_test (default 50), seed (default 0)."""
    return make_synthetic_config(
      cls.NAME,
      cls.DOMAINS,
      kwargs,
      default_size=128,
      default_train=200,
      default_test=50,
      description=cls.DESCRIPTION,
    )

  def _info(self) -> tfds.core.DatasetInfo:
    s = self.builder_config.image_size
    return tfds.core.DatasetInfo(
      builder=self,
      description=self.__class__.__doc__,
      features=tfds.features.FeaturesDict(
        {
          'image': image_feature(s, 3),
          'mask': mask_feature(s),
          'domain': tfds.features.Text(),
          'id': tfds.features.Text(),
          **self.EXTRA_FEATURES,
        }
      ),
      homepage='https://github.com/yiplearn/yiplearn',
      disable_shuffling=True,  # records in index order: record i == make_example(..., i)
      citation='',
    )

  def _split_generators(self, dl_manager: Any) -> dict[str, Any]:
    c = self.builder_config
    return {
      'train': self._generate_examples('train', c.num_train),
      'test': self._generate_examples('test', c.num_test),
    }

  def _generate_examples(self, split: str, count: int):
    c = self.builder_config
    for i in range(count):
      ex = type(self).make_example(c.seed, c.domain, split, i, c.image_size)
      yield ex['id'], ex
