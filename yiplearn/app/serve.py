"""The ``annotate`` experiment: serve the click-and-learn app on a workdir (or replay its record).

``run(config, workdir)``: the images (a folder or a dataset split), the model (``config.checkpoint_dir``, a
pre-training run's ``best/``; without one the demo reuses ``config.reuse_dir`` when it exists, e.g. ``make
run``'s, or pre-trains ``config.pretrain`` into ``<workdir>/pretrain`` first), JAX's persistent compilation
cache in ``config.cache_dir`` (default ``<workdir>/jax_cache``: a restart's first click is fast), then the
session resumed from the workdir and served with uvicorn on ``config.host:config.port`` (127.0.0.1 unless
told otherwise; any other host prints a warning). One line ``http://HOST:PORT/`` is printed once the
socket listens; the first click's functions compile first, the rest in the background.

``config.mode = 'replay'``: drives a fresh session through ``events.jsonl`` and compares its weights with
the newest saved state (``results/replay.json``).
"""

from __future__ import annotations

import os
import socket
import sys
from typing import Any

import jax
import ml_collections
import numpy as np
from absl import logging

from yiplearn import errors
from yiplearn.app import annotator as annotator_lib
from yiplearn.app import images as images_lib
from yiplearn.app.engine import APP_METHODS, Engine
from yiplearn.app.record import Record
from yiplearn.io import checkpoints, files
from yiplearn.models.unet import UNet

__all__ = ['run', 'build', 'LOCAL_HOSTS']

LOCAL_HOSTS = ('127.0.0.1', 'localhost', '::1')


def host_warning(host: str) -> str | None:
  """The warning printed when the app is served beyond this machine (None for a loopback host)."""
  if host in LOCAL_HOSTS:
    return None
  return (
    f'warning: host={host!r} serves the app (no authentication) to every machine that reaches it; '
    'the default 127.0.0.1 with an SSH tunnel is safer'
  )


def enable_compilation_cache(path: str) -> None:
  """JAX's persistent compilation cache in ``path`` for every compilation of this process."""
  os.makedirs(path, exist_ok=True)
  jax.config.update('jax_compilation_cache_dir', path)
  jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.0)
  jax.config.update('jax_persistent_cache_min_entry_size_bytes', -1)


def load_images(config: ml_collections.ConfigDict, workdir: str) -> images_lib.ImageSet:
  src = config.images
  if src.source == 'folder':
    return images_lib.from_folder(
      src.folder,
      channels=int(src.channels),
      num_classes=int(config.num_classes),
      image_size=int(src.image_size),
      norm=src.norm,
    )
  if src.source == 'dataset':
    data = ml_collections.ConfigDict(src.data.to_dict())
    if not data.get('data_dir', ''):
      data.data_dir = os.path.join(workdir, 'data')
    return images_lib.from_dataset(data, workdir)
  raise errors.invalid('images.source', src.source, "'folder' or 'dataset'")


def checkpoint_dir(config: ml_collections.ConfigDict, workdir: str) -> str:
  """The model to serve: the configured checkpoint, a reusable demo one, or the demo pre-trained now."""
  if config.checkpoint_dir:
    return config.checkpoint_dir
  if config.reuse_dir and os.path.isdir(config.reuse_dir):
    logging.info('demo: reusing the pre-trained model in %s', config.reuse_dir)
    return config.reuse_dir
  if config.get('pretrain', None) is None:
    raise errors.invalid('checkpoint_dir', '', "a pre-training run's best/ directory")
  from yiplearn.experiments import pretrain  # pylint: disable=g-import-not-at-top

  pre = ml_collections.ConfigDict(config.pretrain.to_dict())
  if not pre.data.get('data_dir', ''):
    pre.data.data_dir = os.path.join(workdir, 'data')
  print('demo: pre-training the click model first (progress in the log) ...', flush=True)
  return pretrain.run(pre, os.path.join(workdir, 'pretrain'))['best_dir']


def make_engine(config: ml_collections.ConfigDict, ckpt_dir: str, shape) -> Engine:
  """The click U-Net of ``config.model`` with the weights of ``ckpt_dir`` and one rule per method."""
  from yiplearn.experiments import interactive_setup  # pylint: disable=g-import-not-at-top
  from yiplearn.interactive import rules  # pylint: disable=g-import-not-at-top

  if not os.path.isdir(ckpt_dir):
    raise errors.MissingDataError(
      errors.message('checkpoint_dir', ckpt_dir, "a pre-training run's best/ directory")
    )
  spec = interactive_setup.spec_from_config(config)
  model = UNet(
    num_classes=spec.num_classes,
    widths=tuple(config.model.widths),
    bottleneck=int(config.model.bottleneck),
    norm=config.model.norm,
  )
  x = jax.ShapeDtypeStruct((1, *shape[:2], spec.input_channels(shape[-1])), np.float32)
  target = jax.eval_shape(model.init, jax.random.PRNGKey(0), x)
  params, _ = checkpoints.Checkpointer(ckpt_dir, max_to_keep=1).restore(None, target)
  methods = {m: interactive_setup.rule_from_config(config, m) for m in config.methods}
  tx = rules.make_optimizer(float(config.optim.lr))
  return Engine(model, params, spec, methods, tx=tx, seed=int(config.seed))


def build(
  config: ml_collections.ConfigDict, workdir: str, *, engine: Engine | None = None
) -> tuple[Engine, images_lib.ImageSet]:
  """The engine (model, pre-trained weights, tools) and the images of ``config``."""
  for m in config.methods:
    if m not in APP_METHODS:
      raise errors.invalid('methods', m, f'methods among {list(APP_METHODS)}')
  if config.method not in config.methods:
    raise errors.invalid('method', config.method, f'one of methods={list(config.methods)}')
  if len(config.classes) != int(config.num_classes):
    raise errors.invalid('classes', list(config.classes), f'{config.num_classes} class names')
  imgs = load_images(config, workdir)
  levels = 2 ** len(config.model.widths)
  channels = {im.shape[-1] for im in imgs.images}
  for name, im in zip(imgs.names, imgs.images):
    if im.shape[0] % levels or im.shape[1] % levels:
      raise errors.invalid(
        f'image {name!r} shape',
        list(im.shape[:2]),
        f'sides divisible by {levels} (images.image_size)',
      )
  if len(channels) != 1:
    raise errors.invalid('images channels', sorted(channels), 'one channel count for every image')
  if engine is None:
    engine = make_engine(config, checkpoint_dir(config, workdir), imgs.images[0].shape)
  return engine, imgs


def _replay(config, workdir: str, engine: Engine, imgs) -> dict[str, Any]:
  record = Record(workdir)
  events = record.read_events()
  ann = annotator_lib.replay(engine, imgs, events, class_names=config.classes)
  saved = annotator_lib.Annotator(engine, imgs, record, method=ann.method)
  covered = saved.restore()
  diffs = {}
  for m, state in saved.states.items():
    a = jax.tree_util.tree_leaves(jax.device_get(state.params))
    b = jax.tree_util.tree_leaves(jax.device_get(ann.states[m].params))
    diffs[m] = max((float(np.max(np.abs(x - y))) for x, y in zip(a, b)), default=0.0)
  out = {'events': len(events), 'state_covers': covered, 'max_abs_diff': diffs}
  files.atomic_write_json(os.path.join(workdir, 'results', 'replay.json'), out)
  print(f'replayed {len(events)} events; max |saved - replayed| per method: {diffs}', flush=True)
  return out


def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  enable_compilation_cache(config.cache_dir or os.path.join(workdir, 'jax_cache'))
  engine, imgs = build(config, workdir)
  if config.mode == 'replay':
    return _replay(config, workdir, engine, imgs)
  if config.mode != 'serve':
    raise errors.invalid('mode', config.mode, "'serve' or 'replay'")
  import uvicorn  # pylint: disable=g-import-not-at-top

  from yiplearn.app import server  # pylint: disable=g-import-not-at-top

  record = Record(workdir, keep_states=config.keep_states or None)
  ann = annotator_lib.Annotator(
    engine, imgs, record, method=config.method, class_names=config.classes
  )
  resumed = ann.resume()
  logging.info('resumed %s', resumed)
  host, port = str(config.host), int(config.port)
  if (warning := host_warning(host)) is not None:
    print(warning, file=sys.stderr, flush=True)
  family = socket.AF_INET6 if ':' in host else socket.AF_INET
  sock = socket.socket(family, socket.SOCK_STREAM)
  sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
  try:
    sock.bind((host, port))
  except OSError as e:
    raise errors.invalid(
      'port', port, f'a free port on {host} ({e.strerror}); 0 picks one'
    ) from None
  sock.listen(128)
  port = sock.getsockname()[1]
  asgi, app = server.make_app(ann, max_body_bytes=int(config.max_body_bytes))
  first = imgs.images[ann.current.index if ann.current else 0]
  app.warm(engine.warmup_jobs(first.shape, ann.method, imgs.has_gt))
  url = f'http://{"[" + host + "]" if ":" in host else host}:{port}/'
  logging.info('serving %d images (%d done) at %s', len(imgs), len(ann.done), url)
  print(url, flush=True)  # one line, once the socket listens
  uv = uvicorn.Server(
    uvicorn.Config(
      asgi, log_level='warning', access_log=False, lifespan='off', timeout_graceful_shutdown=2
    )
  )
  try:
    uv.run(sockets=[sock])
  finally:
    app.close()
  return {'url': url, 'resumed': resumed, 'done': len(ann.done)}
