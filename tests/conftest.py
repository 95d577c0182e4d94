"""Shared pytest fixtures (keep minimal and generic)."""

from __future__ import annotations

import atexit
import os
import pathlib
import shutil
import tempfile

# One persistent XLA cache for the session, set before jax is imported: in-process tests and the
# subprocesses they launch (launch_runs.env passes it on) compile a program the suite has already
# compiled once only. Results do not depend on it (tests/test_kill_resume.py compares runs byte for byte with it).
if 'JAX_COMPILATION_CACHE_DIR' not in os.environ:
  _cache = tempfile.mkdtemp(prefix='yiplearn_test_xla_cache_')
  atexit.register(shutil.rmtree, _cache, ignore_errors=True)
  os.environ['JAX_COMPILATION_CACHE_DIR'] = _cache
  os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS', '0.2')

import jax  # noqa: E402
import pytest  # noqa: E402

# Faster PRNG compilation on CPU (the non-partitionable threefry lowers to much smaller programs; model
# initialisation in the end-to-end tests compiles 3-4x faster). Tests check invariants and references,
# never the production random streams, so the choice of PRNG implementation does not change what they assert.
jax.config.update('jax_threefry_partitionable', False)

REPO = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope='session')
def data_dir(tmp_path_factory) -> str:
  """A session-wide TFDS data dir in pytest's tmp area (datasets built once per session)."""
  return str(tmp_path_factory.mktemp('yiplearn_data'))


@pytest.fixture(scope='session')
def lgg_dir() -> pathlib.Path:
  """The real LGG kaggle_3m subset ($YIPLEARN_LGG_DIR or <repo>/../shared/data/lgg_kaggle_3m); skips if absent."""
  path = pathlib.Path(
    os.environ.get('YIPLEARN_LGG_DIR', REPO.parent / 'shared' / 'data' / 'lgg_kaggle_3m')
  )
  if not path.is_dir():
    pytest.skip(f'LGG data not found at {path} (set YIPLEARN_LGG_DIR)')
  return path
