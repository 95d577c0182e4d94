"""The app's HTTP API through Starlette's TestClient: every action, resume, and refused requests."""

import json
import os
import threading
import time

import numpy as np
import pytest
from starlette.testclient import TestClient

from tests import app_toys
from yiplearn.app.annotator import Annotator
from yiplearn.app.record import Record
from yiplearn.app.server import make_app


def _serve(workdir, resume=True):
  ann = Annotator(
    app_toys.toy_engine(), app_toys.toy_images(), Record(str(workdir)), method='pi_mi',
    class_names=('background', 'lesion'),
  )  # fmt: skip
  if resume:
    ann.resume()
  asgi, app = make_app(ann, max_body_bytes=4096)
  return TestClient(asgi), app


@pytest.fixture
def served(tmp_path):
  client, app = _serve(tmp_path)
  yield client, app
  app.close()


def _click(client, row, col, label, path='/api/click'):
  body = {} if path == '/api/auto' else {'row': row, 'col': col, 'label': label}
  with client.stream('POST', path, json=body) as r:
    assert r.status_code == 200, r.read()
    assert r.headers['content-type'].startswith('application/x-ndjson')
    return [json.loads(line) for line in r.iter_lines() if line]


def _pred(p):
  import base64  # pylint: disable=g-import-not-at-top

  return np.frombuffer(base64.b64decode(p['data']), np.uint8).reshape(p['shape'])


def test_page_and_static_files(served):
  client, _ = served
  page = client.get('/')
  assert page.status_code == 200 and '<canvas id="canvas"' in page.text
  assert 'http' not in page.text.replace('http-equiv', '')  # no CDN: every resource is served here
  js = client.get('/static/app.js')
  assert js.status_code == 200 and 'javascript' in js.headers['content-type']
  assert 'fetch(' in js.text and 'https://' not in js.text
  png = client.get('/api/image/0')
  assert png.status_code == 200 and png.content[:8] == b'\x89PNG\r\n\x1a\n'


def test_click_undo_reset_method_accept_skip(served, tmp_path):
  client, _ = served
  state = client.get('/api/state').json()
  assert state['current']['index'] == 0 and state['current']['clicks'] == []
  assert state['method'] == 'pi_mi' and state['busy'] is False
  gt = app_toys.toy_images().gts[0]
  r, c = app_toys.gt_pixel(gt)
  first, adapted = _click(client, r, c, 1)
  assert first['stage'] == 'first' and first['click'] == [r, c, 1]
  assert _pred(first['pred']).shape == (32, 32)
  assert adapted['stage'] == 'adapted' and adapted['current']['clicks'] == [[r, c, 1, False]]
  assert adapted['weights']['pi_mi']['updates'] == 0  # click 1: no Mid-Interaction update
  first2, adapted2 = _click(client, 2, 3, 0)
  assert adapted2['weights']['pi_mi']['updates'] == 1  # click 2: one MI step
  assert len(adapted2['current']['dice']) == 2 == len(adapted2['current']['frozen_dice'])
  undone = client.post('/api/undo', json={}).json()
  assert len(undone['current']['clicks']) == 1 and undone['weights']['pi_mi']['updates'] == 0
  np.testing.assert_array_equal(_pred(undone['current']['pred']), _pred(adapted['pred']))
  _click(client, 0, 0, 0, path='/api/auto')
  reset = client.post('/api/reset', json={}).json()
  assert reset['current']['clicks'] == [] and reset['weights']['pi_mi']['updates'] == 0
  switched = client.post('/api/method', json={'method': 'frozen'}).json()
  assert switched['method'] == 'frozen'
  _click(client, r, c, 1)
  _click(client, 0, 0, 0)
  accepted = client.post('/api/accept', json={}).json()
  assert accepted['images'][0]['status'] == 'accepted' and accepted['current']['index'] == 1
  assert accepted['rows'][0]['clicks'] == 2 and accepted['rows'][0]['method'] == 'frozen'
  assert os.path.exists(tmp_path / 'masks' / 'img0.png')
  skipped = client.post('/api/skip', json={}).json()
  assert skipped['images'][1]['status'] == 'skipped' and skipped['current']['index'] == 2
  opened = client.post('/api/open', json={'index': 3}).json()
  assert opened['current']['index'] == 3
  kinds = [json.loads(line)['event'] for line in open(tmp_path / 'events.jsonl')]
  assert kinds[:4] == ['resume', 'open', 'click', 'click'] and 'accept' in kinds and 'skip' in kinds


def test_resume_after_restart(tmp_path):
  client, app = _serve(tmp_path)
  gt = app_toys.toy_images().gts[0]
  r, c = app_toys.gt_pixel(gt)
  _click(client, r, c, 1)
  _click(client, 0, 0, 0)
  before = client.post('/api/accept', json={}).json()
  params = lambda app: app.annotator.engine.params_of(app.annotator.states['pi_mi'])
  saved = [p.copy() for p in params(app)]
  _click(client, 1, 1, 0)
  _click(client, 2, 2, 1)  # an MI step on the image in progress: lost at the restart
  progress = [p.copy() for p in params(app)]
  app.close()
  client, app = _serve(tmp_path)  # a new process on the same workdir
  after = client.get('/api/state').json()
  assert [i['status'] for i in after['images']] == [i['status'] for i in before['images']]
  assert after['current']['index'] == 1 and after['current']['clicks'] == []
  assert after['weights']['pi_mi'] == before['weights']['pi_mi'] and after['rows'] == before['rows']
  restored = params(app)
  assert all(np.array_equal(a, b) for a, b in zip(saved, restored))
  assert not all(np.array_equal(a, b) for a, b in zip(progress, restored))
  app.close()


BAD = [  # (method, path, body or raw, headers, status, message)
  ('post', '/api/click', {'row': 40, 'col': 3, 'label': 1}, None, 400,
   'row=40: expected an integer in [0, 32) (inside the 32x32 image)'),
  ('post', '/api/click', {'row': 3, 'col': -1, 'label': 1}, None, 400,
   'col=-1: expected an integer in [0, 32) (inside the 32x32 image)'),
  ('post', '/api/click', {'row': 3, 'col': 3, 'label': 2}, None, 400,
   'label=2: expected a class index in [0, 2)'),
  ('post', '/api/click', {'row': '3', 'col': 3, 'label': 1}, None, 400,
   "row='3': expected an integer in [0, 32) (inside the 32x32 image)"),
  ('post', '/api/click', {'row': True, 'col': 3, 'label': 1}, None, 400,
   'row=True: expected an integer in [0, 32) (inside the 32x32 image)'),
  ('post', '/api/click', {'row': 3, 'col': 3}, None, 400, "label=None: expected a value for 'label'"),
  ('post', '/api/click', {'row': 3, 'col': 3, 'label': 1, 'path': '/etc'}, None, 400,
   "body.path='/etc': expected only the fields ['col', 'label', 'row']"),
  ('post', '/api/click', b'{nope', {'content-type': 'application/json'}, 400,
   "body='{nope': expected a JSON object"),
  ('post', '/api/click', b'[1, 2]', {'content-type': 'application/json'}, 400,
   "body='[1, 2]': expected a JSON object"),
  ('post', '/api/click', b'row=1', {'content-type': 'text/plain'}, 415,
   "content-type='text/plain': expected application/json"),
  ('post', '/api/click', b'{"row": "' + b'x' * 5000 + b'"}', {'content-type': 'application/json'},
   413, "content-length='5011': expected a body of at most 4096 bytes"),
  ('post', '/api/open', {'index': 99}, None, 404, 'index=99: expected an image index in [0, 4)'),
  ('post', '/api/open', {'index': '../etc'}, None, 400,
   "index='../etc': expected an integer image index in [0, 4)"),
  ('get', '/api/image/../../etc', None, None, 404,
   "path='/etc': expected / or a route under /api/"),
  ('get', '/api/image/7', None, None, 404, 'index=7: expected an image index in [0, 4)'),
  ('post', '/api/accept', {}, None, 409, 'clicks=0: expected at least one click before Accept'),
  ('post', '/api/undo', {}, None, 409, 'clicks=0: expected at least one click to undo'),
  ('post', '/api/method', {'method': 'magic'}, None, 400,
   "method='magic': expected one of ['frozen', 'pi_mi']"),
  ('post', '/api/delete', {}, None, 404,
   "path='/api/delete': expected one of /api/{accept,auto,click,method,open,reset,skip,undo}"),
  ('get', '/api/click', None, None, 405, "method='GET': expected another method for this route"),
  ('get', '/static/../serve.py', None, None, 404, "path='/serve.py': expected / or a route under /api/"),
]  # fmt: skip


@pytest.mark.parametrize(
  'method,path,body,headers,status,message', BAD, ids=[b[-1][:30] for b in BAD]
)
def test_bad_requests(served, method, path, body, headers, status, message):
  client, app = served
  if isinstance(body, bytes):
    r = client.request(method.upper(), path, content=body, headers=headers)
  elif body is None:
    r = client.request(method.upper(), path)
  else:
    r = client.request(method.upper(), path, json=body)
  assert (r.status_code, r.json()['error']) == (status, message)
  assert 'Traceback' not in r.text
  state = client.get('/api/state').json()  # nothing changed
  assert state['current']['clicks'] == [] and state['busy'] is False


def test_click_before_an_image_is_open_busy_and_capacity(tmp_path):
  client, app = _serve(tmp_path, resume=False)  # nothing opened yet
  r = client.post('/api/click', json={'row': 1, 'col': 1, 'label': 1})
  assert (r.status_code, r.json()['error']) == (
    409,
    "click='no image open': expected an open image (POST /api/open first)",
  )
  client.post('/api/open', json={'index': 0})
  app.busy = True  # another client's request is running
  r = client.post('/api/click', json={'row': 1, 'col': 1, 'label': 1})
  assert (r.status_code, r.json()['error']) == (
    409,
    'busy=True: expected one request at a time (the model is adapting; retry)',
  )
  assert client.get('/api/state').json()['busy'] is True
  app.busy = False
  for i in range(5):
    _click(client, i, i, 0)
  r = client.post('/api/click', json={'row': 1, 'col': 1, 'label': 1})
  assert (r.status_code, r.json()['error']) == (
    409,
    'clicks=5: expected at most 5 per image (Accept or Undo)',
  )
  app.close()


def test_requests_go_before_queued_background_compilations(tmp_path):
  client, app = _serve(tmp_path)
  order, running, gate = [], threading.Event(), threading.Event()
  reset = app.annotator.reset
  app.annotator.reset = lambda **kw: (order.append('reset'), reset(**kw))[1]
  first = lambda: (running.set(), gate.wait(60), order.append('warm0'))
  app.warm([first, lambda: order.append('warm1'), lambda: order.append('warm2')])
  assert running.wait(60)  # the model's thread runs the first compilation, two are queued
  request = threading.Thread(target=lambda: client.post('/api/reset', json={}))
  request.start()
  for _ in range(6000):  # the request is queued behind the running compilation
    if app._queue.qsize() == 3:
      break
    time.sleep(0.01)
  gate.set()
  request.join(60)
  for _ in range(6000):  # the compilations left run after the request
    if app.warming == 0:
      break
    time.sleep(0.01)
  app.close()
  assert order == ['warm0', 'reset', 'warm1', 'warm2'] and app.warming == 0
