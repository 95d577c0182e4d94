"""Device meshes and shardings: data-parallel batches, replicated state, sharded vmap axes.

Pure helpers (no I/O, no global state) used by the experiments:

    mesh = make_mesh(-1)                         # all devices on one axis 'data'
    mesh = mesh_from_config(config.get('mesh'))  # {'shape': -1 | (2, 4), 'axis_names': ('data',) | ...}
    batch_sharding(mesh)                         # leading (batch) axis split over 'data'
    replicated(mesh)                             # a full copy on every device (params, opt state)
    to_global(tree, sharding)                    # host values (identical on every process) -> global arrays
    from_process_local(tree, sharding)           # each process's rows -> one global array (multi-host)
    to_host(tree)                                # global arrays -> numpy on every process
    shard_vmapped(fn, mesh, in_axes)             # a vmapped fn with its leading axis split over devices,
                                                 # padded to a multiple of the device count and stripped

It imports neither wing: the sharded interactive session is `interactive.session.sharded_session`.

Multi-host: after `jax.distributed.initialize`, `jax.devices()` lists every process's devices, so
`make_mesh()` spans all of them; `make_mesh(devices=jax.local_devices())` spans this process's only.
On one device every helper is the identity up to placement, so single-device numerics are unchanged.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from yiplearn import errors

__all__ = [
  'make_mesh',
  'mesh_from_config',
  'data_axis_size',
  'batch_sharding',
  'replicated',
  'leading_sharding',
  'check_divisible',
  'local_rows',
  'pad_leading',
  'unpad_leading',
  'to_global',
  'from_process_local',
  'to_host',
  'local_copy',
  'shard_vmapped',
]

DATA = 'data'


def make_mesh(
  shape: int | Sequence[int] = -1,
  axis_names: Sequence[str] = (DATA,),
  *,
  devices: Sequence[Any] | None = None,
) -> Mesh:
  """A `Mesh` over `devices` (default: all devices of all processes).

  Args:
    shape: -1 (all devices on the first axis), an int (that many devices on one axis), or a tuple
      with one entry per axis name, at most one of them -1 (inferred). The product must equal the
      number of devices used; an int shape smaller than the device count takes the first ones.
    axis_names: one name per mesh axis; the first is the data axis of `batch_sharding`.
  """
  devices = list(jax.devices() if devices is None else devices)
  names = tuple(axis_names)
  if not names or len(set(names)) != len(names) or not all(isinstance(n, str) and n for n in names):
    raise errors.invalid('mesh.axis_names', axis_names, 'distinct non-empty strings')
  shp = (int(shape),) if isinstance(shape, (int, np.integer)) else tuple(int(s) for s in shape)
  if len(shp) == 1 and len(names) == 1 and shp[0] > 0:  # a prefix of the devices
    if shp[0] > len(devices):
      raise errors.invalid('mesh.shape', shape, f'at most the {len(devices)} available devices')
    devices = devices[: shp[0]]
  if len(shp) != len(names):
    raise errors.invalid('mesh.shape', shape, f'one entry per axis name {names}')
  if sum(s == -1 for s in shp) > 1 or any(s == 0 or s < -1 for s in shp):
    raise errors.invalid('mesh.shape', shape, 'positive sizes with at most one -1 (inferred)')
  known = math.prod(s for s in shp if s != -1)
  if -1 in shp:
    if len(devices) % known:
      raise errors.invalid('mesh.shape', shape, f'sizes that divide the {len(devices)} devices')
    shp = tuple(len(devices) // known if s == -1 else s for s in shp)
  if math.prod(shp) != len(devices):
    raise errors.invalid(
      'mesh.shape',
      shape,
      f'{len(devices)} devices in all (the devices available), not {math.prod(shp)}',
    )
  return Mesh(np.asarray(devices, dtype=object).reshape(shp), names)


def mesh_from_config(cfg: Any = None, *, devices: Sequence[Any] | None = None) -> Mesh:
  """`make_mesh` from a config-like mapping {'shape': ..., 'axis_names': ...}; None: all devices."""
  if cfg is None:
    return make_mesh(devices=devices)
  get = cfg.get if hasattr(cfg, 'get') else (lambda k, d=None: getattr(cfg, k, d))
  shape = get('shape', -1)
  names = get('axis_names', None) or (DATA,)
  if isinstance(names, str):
    names = (names,)
  return make_mesh(shape if shape is not None else -1, tuple(names), devices=devices)


def data_axis_size(mesh: Mesh, axis: str | None = None) -> int:
  """Devices along the data axis (the first axis unless named)."""
  axis = axis or mesh.axis_names[0]
  if axis not in mesh.shape:
    raise errors.invalid('axis', axis, f'one of the mesh axes {mesh.axis_names}')
  return int(mesh.shape[axis])


def batch_sharding(mesh: Mesh, axis: str | None = None) -> NamedSharding:
  """Leading (batch) axis split over the data axis, other axes replicated."""
  return NamedSharding(mesh, P(axis or mesh.axis_names[0]))


leading_sharding = (
  batch_sharding  # a leading vmap axis (streams, candidates) is sharded the same way
)


def replicated(mesh: Mesh) -> NamedSharding:
  """A full copy on every device of `mesh`."""
  return NamedSharding(mesh, P())


def check_divisible(field: str, value: int, mesh: Mesh, axis: str | None = None) -> None:
  """Raises a UserError naming `field` unless `value` splits evenly over the data axis (and processes)."""
  n = data_axis_size(mesh, axis)
  if int(value) % n:
    raise errors.invalid(
      field,
      value,
      f'a multiple of the {n} devices on mesh axis {axis or mesh.axis_names[0]!r} (the global '
      'batch is split evenly over them)',
    )
  if int(value) % jax.process_count():
    raise errors.invalid(field, value, f'a multiple of the {jax.process_count()} processes')


def local_rows(global_size: int) -> slice:
  """The rows of a global batch of `global_size` that this process loads: its contiguous block."""
  nproc, pid = jax.process_count(), jax.process_index()
  if global_size % nproc:
    raise errors.invalid('global batch size', global_size, f'a multiple of the {nproc} processes')
  per = global_size // nproc
  return slice(pid * per, (pid + 1) * per)


def pad_leading(tree: Any, multiple: int) -> tuple[Any, int]:
  """Pads every leaf's leading axis to a multiple of `multiple` with copies of its last row.

  Returns (padded tree, original length). Copies (not zeros) keep padded rows numerically benign.
  """
  leaves = jax.tree.leaves(tree)
  if not leaves:
    return tree, 0
  n = int(np.shape(leaves[0])[0])
  if any(int(np.shape(x)[0]) != n for x in leaves):
    raise errors.invalid('leading axes', [np.shape(x)[0] for x in leaves], 'equal lengths')
  pad = (-n) % int(multiple)
  if pad == 0:
    return tree, n

  def one(x):
    xp = jnp if isinstance(x, jax.Array) else np
    return xp.concatenate([x, xp.repeat(x[-1:], pad, axis=0)], axis=0)

  return jax.tree.map(one, tree), n


def unpad_leading(tree: Any, n: int) -> Any:
  """The first `n` rows of every leaf (undoes `pad_leading`)."""
  return jax.tree.map(lambda x: x[:n], tree)


def _is_multiprocess(sharding: jax.sharding.Sharding) -> bool:
  return len({d.process_index for d in sharding.device_set}) > 1


def to_global(tree: Any, sharding: jax.sharding.Sharding | Any) -> Any:
  """Host values, identical on every process, placed as global arrays with `sharding` (a pytree prefix).

  Each process materialises only the shards of its own devices (`make_array_from_callback`), so this
  works across processes; on one process it is `device_put`.
  """

  def put(x, s):
    if not _is_multiprocess(s):
      return jax.device_put(x, s)
    if isinstance(x, jax.Array) and x.sharding == s:
      return x
    host = np.asarray(x)
    return jax.make_array_from_callback(host.shape, s, lambda idx: host[idx])

  return jax.tree.map(put, tree, _broadcast_shardings(sharding, tree))


def from_process_local(tree: Any, sharding: jax.sharding.Sharding) -> Any:
  """One global array per leaf from each process's local rows (leading axis) under `sharding`.

  Process p supplies rows `local_rows(global)[p]`; the global leading size is the sum over processes.
  """

  def put(x):
    x = np.asarray(x)
    global_shape = (x.shape[0] * jax.process_count(),) + x.shape[1:]
    return jax.make_array_from_process_local_data(sharding, x, global_shape)

  return jax.tree.map(put, tree)


def to_host(tree: Any) -> Any:
  """numpy copies of (global) arrays on every process; sharded multi-process arrays are all-gathered."""

  def get(x):
    if isinstance(x, jax.Array) and not x.is_fully_addressable and not x.is_fully_replicated:
      from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top

      return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return np.asarray(jax.device_get(x))

  return jax.tree.map(get, tree)


def local_copy(tree: Any) -> Any:
  """Fully replicated arrays as their copy on this process's first device (no transfer): later
  computations on them run on one device instead of repeating on every device of the mesh."""

  def one(x):
    if isinstance(x, jax.Array) and len(x.sharding.device_set) > 1 and x.is_fully_replicated:
      return x.addressable_data(0)
    return x

  return jax.tree.map(one, tree)


def _broadcast_shardings(prefix: Any, tree: Any) -> Any:
  if isinstance(prefix, jax.sharding.Sharding):
    return jax.tree.map(lambda _: prefix, tree)
  return jax.tree.map(
    lambda s, t: jax.tree.map(lambda _: s, t),
    prefix,
    tree,
    is_leaf=lambda s: isinstance(s, jax.sharding.Sharding) or s is None,
  )


def shard_vmapped(
  fn: Callable,
  mesh: Mesh,
  in_axes: Sequence[int | None],
  *,
  axis: str | None = None,
  pad: bool = True,
) -> Callable:
  """`fn` (batched along the leading axis of the arguments whose `in_axes` is 0) split over `axis`.

  Each device runs `fn` on its block of the leading axis (`jax.shard_map`, no communication);
  arguments with `in_axes=None` are replicated. Every output must carry the leading axis. With
  `pad`, the leading axis is padded to a multiple of the axis size (copies of the last row) and
  the padding is stripped from the outputs. Jit the result (the padding then fuses into the
  program); on a one-device mesh it is `fn` itself.
  """
  axis = axis or mesh.axis_names[0]
  size = data_axis_size(mesh, axis)
  in_axes = tuple(in_axes)
  if any(a not in (0, None) for a in in_axes):
    raise errors.invalid('in_axes', in_axes, '0 (sharded leading axis) or None (replicated) each')
  if size == 1:
    return fn
  specs = tuple(P(axis) if a == 0 else P() for a in in_axes)
  sharded = jax.shard_map(fn, mesh=mesh, in_specs=specs, out_specs=P(axis), check_vma=False)

  def wrapped(*args):
    if len(args) != len(in_axes):
      raise errors.invalid('arguments', len(args), f'{len(in_axes)} (in_axes={in_axes})')
    mapped = [a for a, ax in zip(args, in_axes) if ax == 0]
    n = int(np.shape(jax.tree.leaves(mapped)[0])[0])
    if pad and n % size:
      mapped, _ = pad_leading(mapped, size)
    elif n % size:
      raise errors.invalid('leading axis', n, f'a multiple of the {size} devices on {axis!r}')
    it = iter(mapped)
    full = [next(it) if ax == 0 else a for a, ax in zip(args, in_axes)]
    out = sharded(*full)
    return unpad_leading(out, n) if pad and n % size else out

  return wrapped
