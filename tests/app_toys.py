"""Tiny inputs shared by the app tests: a folder of 32x32 grey images with masks, a tiny U-Net checkpoint,
the app config around them, and one engine per test process (its functions compile once)."""

from __future__ import annotations

import functools
import os
import tempfile

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image

from configs import annotate as annotate_config
from yiplearn.io import checkpoints
from yiplearn.models.unet import UNet

SIZE, N_IMAGES = 32, 4
WIDTHS, BOTTLENECK = (2,), 4  # one level: the smallest U-Net (compiles fastest)
METHODS = ('frozen', 'pi_mi')


def write_images(folder: str, n: int = N_IMAGES, size: int = SIZE) -> None:
  """``n`` grey images, a bright disk each (the lesion) on noise, with ``masks/<stem>.png`` (0/1)."""
  rng = np.random.default_rng(0)
  os.makedirs(os.path.join(folder, 'masks'), exist_ok=True)
  yy, xx = np.mgrid[:size, :size]
  for i in range(n):
    cy, cx, r = rng.integers(size // 3, 2 * size // 3, 2).tolist() + [size // 6 + i % 3]
    mask = ((yy - cy) ** 2 + (xx - cx) ** 2 <= r * r).astype(np.uint8)
    image = np.clip(60 + 120 * mask + rng.normal(0, 20, (size, size)), 0, 255).astype(np.uint8)
    Image.fromarray(image).save(os.path.join(folder, f'img{i}.png'))
    Image.fromarray(mask * 255).save(os.path.join(folder, 'masks', f'img{i}.png'))


def write_checkpoint(
  directory: str, size: int = SIZE, widths=WIDTHS, bottleneck=BOTTLENECK
) -> None:
  """A randomly initialised click U-Net (1 image channel, 2 classes) saved as a pre-training best/."""
  model = UNet(num_classes=2, widths=tuple(widths), bottleneck=bottleneck)
  params = jax.jit(model.init)(jax.random.PRNGKey(0), jnp.zeros((1, size, size, 3)))
  with checkpoints.Checkpointer(directory, max_to_keep=1) as ckpt:
    ckpt.save(0, params, extra={'best': {'metric': 0.0, 'step': 0}})


@functools.cache
def assets() -> str:
  """One folder per test process with ``images/`` and ``best/``."""
  root = tempfile.mkdtemp(prefix='yiplearn_app_')
  write_images(os.path.join(root, 'images'))
  write_checkpoint(os.path.join(root, 'best'))
  return root


def config_arg(root: str) -> str:
  return f'data=folder,folder={os.path.join(root, "images")},classes=background+lesion,channels=1'


def overrides(root: str, methods=METHODS) -> dict:
  return {
    'checkpoint_dir': os.path.join(root, 'best'),
    'model.widths': WIDTHS,
    'model.bottleneck': BOTTLENECK,
    'methods': tuple(methods),
    'method': methods[-1],
    'clicks.max_clicks': 6,
    'pi.clicks': 3,
    'port': 0,
  }


def config(root: str | None = None):
  root = root or assets()
  c = annotate_config.get_config(config_arg(root))
  c.update_from_flattened_dict(overrides(root))
  return c


def cli_args(root: str, methods=METHODS) -> list[str]:
  """The same config as ``launch.run`` flags."""
  args = [f'--config=configs/annotate.py:{config_arg(root)}']
  for k, v in overrides(root, methods).items():
    v = str(v) if isinstance(v, tuple) else v
    args.append(f'--config.{k}={v}')
  return args


@functools.cache
def engine_and_images():
  """The engine (compiled once per test process) and the image set."""
  from yiplearn.app import serve  # pylint: disable=g-import-not-at-top

  root = assets()
  return serve.build(config(root), os.path.join(root, 'unused_workdir'))


def gt_pixel(gt: np.ndarray, k: int = 1) -> tuple[int, int]:
  """A pixel of class ``k`` near the middle of its region (a person's first click)."""
  rows, cols = np.nonzero(gt == k)
  i = np.argmin((rows - rows.mean()) ** 2 + (cols - cols.mean()) ** 2)
  return int(rows[i]), int(cols[i])


@functools.cache
def toy_engine():
  """An engine over tests/toys.py's tiny conv model (compiles in seconds), frozen and PI + MI."""
  from tests import toys  # pylint: disable=g-import-not-at-top
  from yiplearn.app.engine import Engine  # pylint: disable=g-import-not-at-top
  from yiplearn.interactive import rules  # pylint: disable=g-import-not-at-top
  from yiplearn.interactive.spec import SessionSpec  # pylint: disable=g-import-not-at-top

  spec = SessionSpec(num_classes=2, num_clicks=5)
  methods = {'frozen': rules.make('frozen'), 'pi_mi': rules.make('pi_mi', pi_clicks=3)}
  # committed to the device, as restored checkpoints are (the warm-up must still match)
  params = jax.device_put(toys.toy_params(spec.input_channels(1), seed=0, k=2), jax.devices()[0])
  return Engine(toys.toy_apply, params, spec, methods, tx=rules.make_optimizer(1e-2), seed=0)


@functools.cache
def toy_images():
  """The test images as an ImageSet (read from the folder once)."""
  from yiplearn.app import images  # pylint: disable=g-import-not-at-top

  return images.from_folder(
    os.path.join(assets_images(), 'images'), channels=1, num_classes=2, image_size=0
  )


@functools.cache
def assets_images() -> str:
  """A folder with only ``images/`` (no checkpoint: nothing compiled)."""
  root = tempfile.mkdtemp(prefix='yiplearn_app_img_')
  write_images(os.path.join(root, 'images'))
  return root
