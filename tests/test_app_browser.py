"""The page in a real browser: headless Chromium (Debian's, driven by Playwright) clicks on the canvas at
ground-truth pixels of two images and accepts both; the workdir then holds their masks and events and the
served model has adapted. The screenshot goes to $YIPLEARN_SCREENSHOT when set (docs/annotate.png)."""

import json
import os
import shutil
import socket
import threading
import time

import numpy as np
import pytest
from PIL import Image

from tests import app_toys
from yiplearn.app.annotator import Annotator
from yiplearn.app.record import Record
from yiplearn.app.server import make_app

CHROMIUM = shutil.which('chromium') or shutil.which('chromium-browser')
FLAGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--no-first-run',
]


@pytest.fixture
def server(tmp_path):
  uvicorn = pytest.importorskip('uvicorn')
  ann = Annotator(
    app_toys.toy_engine(),
    app_toys.toy_images(),
    Record(str(tmp_path)),
    method='pi_mi',
    class_names=('background', 'lesion'),
  )
  ann.resume()
  asgi, app = make_app(ann)
  sock = socket.socket()
  sock.bind(('127.0.0.1', 0))
  sock.listen(16)
  uv = uvicorn.Server(uvicorn.Config(asgi, log_level='warning', access_log=False, lifespan='off'))
  thread = threading.Thread(target=uv.run, kwargs={'sockets': [sock]}, daemon=True)
  thread.start()
  for _ in range(200):
    if uv.started:
      break
    time.sleep(0.05)
  yield f'http://127.0.0.1:{sock.getsockname()[1]}/', app, tmp_path
  uv.should_exit = True
  thread.join(10)
  app.close()


@pytest.mark.skipif(CHROMIUM is None, reason='Chromium not installed (apt-get install chromium)')
def test_click_and_accept_two_images_in_chromium(server):
  sync_api = pytest.importorskip('playwright.sync_api')
  url, app, workdir = server
  before = dict(app.annotator.checksums)
  with sync_api.sync_playwright() as p:
    browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
    page = browser.new_page(viewport={'width': 1100, 'height': 720})
    errors = []
    page.on('pageerror', lambda e: errors.append(str(e)))
    page.goto(url)
    canvas = page.locator('#canvas')
    for index in (0, 1):
      page.wait_for_function(f'document.getElementById("canvas").dataset.index === "{index}"')
      scale = int(canvas.get_attribute('data-scale'))
      gt = app.annotator.images.gts[index]
      row, col = app_toys.gt_pixel(gt)
      page.keyboard.press('2')  # class 2 of the buttons = lesion
      canvas.click(position={'x': (col + 0.5) * scale, 'y': (row + 0.5) * scale})
      page.wait_for_function('document.getElementById("canvas").dataset.clicks === "1"')
      page.wait_for_function('document.body.dataset.busy === "0"')
      bg = np.argwhere(gt == 0)[0]  # a background correction with the right button
      canvas.click(
        position={'x': (bg[1] + 0.5) * scale, 'y': (bg[0] + 0.5) * scale}, button='right'
      )
      page.wait_for_function('document.getElementById("canvas").dataset.clicks === "2"')
      page.wait_for_function('document.body.dataset.busy === "0"')
      if index == 1 and os.environ.get('YIPLEARN_SCREENSHOT'):
        page.screenshot(path=os.environ['YIPLEARN_SCREENSHOT'])
      page.screenshot(path=str(workdir / f'page{index}.png'))
      page.click('#accept')
    page.wait_for_function('document.getElementById("canvas").dataset.index === "2"')
    weights = json.loads(page.locator('#weights').get_attribute('data-weights'))
    rows = page.locator('#rows tbody tr').count()
    browser.close()
  assert errors == []
  assert rows == 2
  for index in (0, 1):
    mask = np.asarray(Image.open(workdir / 'masks' / f'img{index}.png'))
    assert mask.shape == (32, 32) and set(np.unique(mask)) <= {0, 1}
  events = [json.loads(line) for line in open(workdir / 'events.jsonl')]
  clicks = [e for e in events if e['event'] == 'click']
  assert [(e['image'], e['label']) for e in clicks] == [(0, 1), (0, 0), (1, 1), (1, 0)]
  for e in clicks[::2]:
    assert app.annotator.images.gts[e['image']][e['row'], e['col']] == 1  # clicked on the lesion
  assert [e['image'] for e in events if e['event'] == 'accept'] == [0, 1]
  # adapted: one MI step per image (click 2), PI's stage 1 (+ stage 2 where P_1 != P_final) per image
  served = app.annotator.status()['weights']
  assert weights == served and 4 <= weights['pi_mi']['updates'] <= 6
  assert weights['frozen']['updates'] == 0
  assert app.annotator.checksums['pi_mi'] != before['pi_mi']
  assert app.annotator.checksums['frozen'] == before['frozen']
