"""The click-and-learn app (DESIGN.md 1.4): a person clicks in a browser and the model adapts live.

Run (prints `http://127.0.0.1:PORT/` once it listens; open it, or tunnel it from a remote machine with
`ssh -N -L 8765:127.0.0.1:8765 user@server`):
  make annotate    (python -m launch.run --config configs/annotate.py --workdir runs/annotate): the demo on
                   synthetic fundus `camera_c`, reusing `make run`'s model or pre-training it first
  python -m launch.run --config configs/annotate.py:quick --workdir /tmp/annotate_quick   (tiny demo: 32 px,
                   a few pre-training steps, serving within a minute on 2 cores)
  python -m launch.run --config configs/annotate.py:data=lgg \\
      --config.checkpoint_dir=runs/lgg_modality/pretrain/best --workdir runs/annotate_lgg   (LGG T1 slices
                   of the test patients, model from `configs/interactive_lgg.py`)
  python -m launch.run --config configs/annotate.py:data=folder,folder=/path/to/images,classes=background+lesion \\
      --config.checkpoint_dir=DIR/best --workdir runs/mine   (PNG/JPEG/TIFF; masks/<stem>.png = ground truth)
  python -m launch.run --config configs/annotate.py:replay --workdir runs/annotate   (events.jsonl -> weights,
                   compared with the saved state: results/replay.json)
  args: quick, data=fundus|lgg|folder, folder=, classes=, channels=, size=, port=, paper_model, replay

Writes to the workdir: events.jsonl (every click, undo, reset, method switch, accept, skip), masks/<name>.png
(accepted masks, class indices), state/ (the adapted state of every method after each accepted image,
orbax), jax_cache/ (compiled functions), pretrain/ and data/ (demo). Restarting on the workdir resumes.
"""

import ml_collections

from configs import common, interactive_fundus, interactive_lgg
from configs import interactive_common as ic


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  a = common.parse_arg(
    arg,
    quick=False,
    data='fundus',
    folder='',
    classes=('background', 'lesion'),
    channels=1,
    size=0,
    port=8765,
    paper_model=False,
    replay=False,
  )
  common.check_choice('data', a.data, ('fundus', 'lgg', 'folder'))
  c = ml_collections.ConfigDict()
  c.experiment = 'annotate'
  c.seed = 0
  c.mode = 'replay' if a.replay else 'serve'
  c.host = '127.0.0.1'  # anything else is reachable from other machines (a warning is printed)
  c.port = a.port  # 0: a free port
  c.max_body_bytes = 4096
  c.cache_dir = ''  # JAX's persistent compilation cache ('' = <workdir>/jax_cache)
  c.keep_states = 3  # saved states kept (0 = all)
  c.checkpoint_dir = ''  # a pre-training run's best/ ('' = the demo model)
  c.reuse_dir = ''
  c.methods = ('frozen', 'pi', 'pi_mi')
  c.method = 'pi_mi'
  c.images = ml_collections.ConfigDict(
    {
      'source': 'dataset',
      'folder': a.folder,
      'channels': a.channels,
      'image_size': a.size,
      'norm': 'unit',
    }
  )
  if (
    a.data == 'fundus'
  ):  # the quickstart's demo: pre-trained on the source camera, served on camera_c
    size = a.size or (32 if a.quick else 64)
    n, n_test, steps = (16, 8, 6) if a.quick else (200, 100, 400)
    demo = interactive_fundus.get_config(
      f'quick={a.quick},size={size},steps={steps},n={n},n_test={n_test},targets=camera_c'
    )
    c.pretrain = demo.pretrain
    if a.quick:  # validate (and keep best/) once, at the end: the demo serves sooner
      c.pretrain.eval_every = c.pretrain.checkpoint_every = steps
      c.pretrain.val_images = 4
    c.images.data = demo.adapt.targets.camera_c
    c.images.data.max_images = 8 if a.quick else 24
    c.classes = ('background', 'rim', 'cup')
    c.report = {'disc': [1, 2], 'cup': [2]}
    lr = 1e-4
    if not a.quick and not a.size and not a.paper_model:
      c.reuse_dir = 'runs/quickstart/pretrain/best'  # `make run`'s model, when it exists
  elif a.data == 'lgg':
    lgg = interactive_lgg.get_config(f'quick={a.quick},size={a.size or (32 if a.quick else 128)}')
    c.pretrain = lgg.pretrain
    c.images.data = lgg.adapt.targets.t1
    c.images.data.max_images = 8 if a.quick else 0
    c.classes = ('background', 'lesion')
    c.report = {'lesion': [1]}
    lr = 5e-5
  else:
    c.images.source = 'folder'
    c.pretrain = None  # a folder needs --config.checkpoint_dir
    c.classes = tuple(a.classes)
    c.report = {}
    lr = 5e-5
  c.num_classes = len(c.classes)
  c.model = c.pretrain.model if c.pretrain is not None else ic.model(a.quick, a.paper_model)
  if a.paper_model:
    c.model = ic.model(a.quick, True)
    if c.pretrain is not None:
      c.pretrain.model = c.model
  c.clicks = ic.clicks(20)  # at most 20 clicks per image
  c.pi = ml_collections.ConfigDict({'clicks': 10, 'repredict': False, 'stage1_ccg': False})  # PI's
  c.loss = ic.loss()
  c.optim = ml_collections.ConfigDict({'lr': lr})
  return c
