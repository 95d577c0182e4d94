"""SIGKILL the served app after two accepted images and during a third; the restart on the same workdir
restores the weights saved after the second, and replaying events.jsonl through the session gives them
again (1e-6). The server is the real launcher (`python -m launch.run --config configs/annotate.py`)."""

import json
import os
import signal
import subprocess
import sys
import threading
import time

import httpx

from tests import app_toys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _start(workdir, *extra):
  args = [
    sys.executable,
    '-m',
    'launch.run',
    *app_toys.cli_args(app_toys.assets(), ('pi_mi',)),
    *extra,
  ]
  proc = subprocess.Popen(
    [*args, f'--workdir={workdir}'],
    cwd=REPO,
    stdout=subprocess.PIPE,
    stderr=subprocess.DEVNULL,
    text=True,
    env=dict(os.environ, JAX_PLATFORMS='cpu'),
  )
  return proc


def _url(proc, timeout=300):
  deadline = time.time() + timeout
  while time.time() < deadline:
    line = proc.stdout.readline()
    if not line and proc.poll() is not None:
      raise AssertionError(f'the server exited with {proc.returncode} before printing its URL')
    if line.startswith('http://127.0.0.1:'):
      return line.strip()
  raise AssertionError('no URL printed')


def _click(client, row, col, label):
  with client.stream('POST', 'api/click', json={'row': row, 'col': col, 'label': label}) as r:
    assert r.status_code == 200, r.read()
    return [json.loads(line) for line in r.iter_lines() if line][-1]


def _label(client, gt):
  return _click(client, *app_toys.gt_pixel(gt), 1), _click(client, 0, 0, 0)


def test_sigkill_during_the_third_image_then_restart_and_replay(tmp_path):
  workdir = tmp_path / 'app'
  gts = app_toys.toy_images().gts
  proc = _start(workdir)
  try:
    url = _url(proc)
    with httpx.Client(base_url=url, timeout=300) as client:
      for i in (0, 1):
        _label(client, gts[i])
        accepted = client.post('api/accept', json={}).json()
      saved = accepted['weights']['pi_mi']
      assert accepted['current']['index'] == 2 and saved['updates'] >= 4
      _label(client, gts[2])
      # a click in flight when the process dies
      flying = threading.Thread(target=lambda: _click_quietly(url), daemon=True)
      flying.start()
      time.sleep(0.3)
  finally:
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
  proc = _start(workdir)
  try:
    url = _url(proc)
    state = httpx.get(url + 'api/state', timeout=60).json()
  finally:
    proc.send_signal(signal.SIGTERM)
    proc.wait(60)
  assert [i['status'] for i in state['images']] == ['accepted', 'accepted', 'todo', 'todo']
  assert state['current']['index'] == 2 and state['current']['clicks'] == []
  assert state['weights']['pi_mi'] == saved  # the weights saved after the second image
  assert len(state['rows']) == 2
  replay = subprocess.run(
    [sys.executable, '-m', 'launch.run', *_replay_args(), f'--workdir={workdir}'],
    cwd=REPO,
    capture_output=True,
    text=True,
    timeout=300,
    env=dict(os.environ, JAX_PLATFORMS='cpu'),
  )
  assert replay.returncode == 0, replay.stderr[-2000:]
  out = json.load(open(workdir / 'results' / 'replay.json'))
  assert list(out['max_abs_diff']) == ['pi_mi'] and out['max_abs_diff']['pi_mi'] <= 1e-6
  events = [json.loads(line) for line in open(workdir / 'events.jsonl')]
  kinds = [e['event'] for e in events if e['event'] in ('accept', 'resume')]
  assert kinds == ['resume', 'accept', 'accept', 'resume']  # started, 2 accepted, restarted
  assert not any(e.get('image') == 2 and e['event'] == 'click' for e in events)  # dropped


def _click_quietly(url):
  try:
    httpx.post(url + 'api/click', json={'row': 5, 'col': 5, 'label': 1}, timeout=60).read()
  except httpx.HTTPError:
    pass


def _replay_args():
  args = app_toys.cli_args(app_toys.assets(), ('pi_mi',))
  args[0] = args[0] + ',replay'
  return args
