"""`python -m launch.run`: the quickstart end to end, and one-line user errors with exit status 2."""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(*args, env_extra=None, timeout=600):
  env = dict(os.environ, JAX_PLATFORMS='cpu', **(env_extra or {}))
  env.pop('YIPLEARN_DATA_DIR', None)
  return subprocess.run(
    [sys.executable, '-m', 'launch.run', *args],
    cwd=ROOT,
    env=env,
    capture_output=True,
    text=True,
    timeout=timeout,
  )


def _error_line(proc):
  lines = [l for l in proc.stderr.splitlines() if l.startswith('error:')]
  assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
  assert len(lines) == 1 and 'Traceback' not in proc.stderr, proc.stderr[-2000:]
  return lines[0]


def test_dataset_card_end_to_end(tmp_path):
  proc = _run('--config', 'configs/quickstart.py:quick,demo=false', '--workdir', str(tmp_path))
  assert proc.returncode == 0, proc.stderr[-3000:]
  cfg = json.loads((tmp_path / 'config.json').read_text())
  assert cfg['experiment'] == 'quickstart'
  card = json.loads((tmp_path / 'results' / 'dataset_card.json').read_text())
  domains = {(r['dataset'], r['domain']) for r in card['rows']}
  assert ('synthetic_fundus', 'pathology') in domains and ('synthetic_mri', 'site_d') in domains
  assert all(r['records'] == 8 for r in card['rows'])
  for name in ('samples_synthetic_fundus.png', 'samples_synthetic_mri.png'):
    assert (tmp_path / 'plots' / name).stat().st_size > 1000


@pytest.mark.parametrize(
  'args, expected',
  [
    (['--config', 'configs/quickstart.py:sise=3'], "config argument='sise': expected a key"),
    (['--config', 'configs/quickstart.py:size=big'], "size='big': expected int"),
    (
      ['--config', 'configs/quickstart.py', '--config.nope=1'],
      "config.nope='1': expected a key that exists; there: ",
    ),
    (
      ['--config', 'configs/does_not_exist.py'],
      "--config='configs/does_not_exist.py': expected an existing configs/<name>.py",
    ),
    (
      ['--config', 'configs/quickstart.py', '--config.experiment=bogus'],
      "config.experiment='bogus': expected one of ",
    ),
  ],
)
def test_user_errors_are_one_line(tmp_path, args, expected):
  proc = _run(*args, '--workdir', str(tmp_path))
  assert expected in _error_line(proc)


def test_missing_manual_dir_is_one_line(tmp_path):
  nowhere = tmp_path / 'nowhere'
  proc = _run(
    '--config',
    f'configs/dataset_card.py:dataset=rimone_dl,manual_dir={nowhere}',
    '--workdir',
    str(tmp_path / 'w'),
  )
  line = _error_line(proc)
  assert 'RIM-ONE' in line and str(nowhere) in line


def test_programming_errors_keep_their_traceback(tmp_path):
  """A ValueError that is not a UserError (a bug) is not turned into one line: traceback, status 1."""
  (tmp_path / 'boom_experiment.py').write_text(
    'def run(config, workdir):\n  raise ValueError("internal bug")\n'
  )
  (tmp_path / 'boom.py').write_text(
    'import ml_collections\n\n\ndef get_config():\n'
    '  return ml_collections.ConfigDict({"experiment": "boom"})\n'
  )
  code = (
    'import sys; sys.path.insert(0, sys.argv.pop(1)); from absl import app; import launch.run as r; '
    'from yiplearn import experiments; experiments.EXPERIMENTS["boom"] = "boom_experiment"; '
    'app.run(r.main, flags_parser=r._parse_flags)'
  )
  proc = subprocess.run(
    [sys.executable, '-c', code, str(tmp_path), '--config', str(tmp_path / 'boom.py')]
    + ['--workdir', str(tmp_path / 'w')],
    cwd=ROOT,
    env=dict(os.environ, JAX_PLATFORMS='cpu'),
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert proc.returncode == 1, (proc.returncode, proc.stderr[-2000:])
  assert 'Traceback' in proc.stderr and 'ValueError: internal bug' in proc.stderr
  assert not any(l.startswith('error:') for l in proc.stderr.splitlines())


def test_repeated_library_messages_are_dropped_from_the_log():
  import logging  # pylint: disable=g-import-not-at-top

  from yiplearn import experiments  # pylint: disable=g-import-not-at-top

  def record(path, level, msg):
    return logging.LogRecord('absl', level, path, 1, msg, None, None)

  keep = experiments._QuietLibraries().filter  # pylint: disable=protected-access
  tfds = '/x/tensorflow_datasets/core/dataset_builder.py'
  assert not keep(record(tfds, logging.WARNING, 'Using custom data configuration: SyntheticConfig'))
  assert not keep(
    record('/x/tensorflow_datasets/core/utils/file_utils.py', 30, 'F has no dataset_info.json')
  )
  assert keep(record(tfds, logging.WARNING, 'the manual_dir is empty'))  # other warnings stay
  assert not keep(record('/x/orbax/checkpoint/manager.py', logging.INFO, 'Saving checkpoint'))
  bridge = '/x/jax/_src/xla_bridge.py'
  assert not keep(record(bridge, logging.INFO, "Unable to initialize backend 'tpu': no libtpu"))
  assert keep(record(bridge, logging.WARNING, 'An NVIDIA GPU may be present on this machine'))
  assert keep(
    record('/x/yiplearn/experiments/pretrain.py', logging.INFO, 'pre-training on 8 images')
  )
