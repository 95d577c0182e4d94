"""The app's HTTP side: a Starlette ASGI app over one :class:`~yiplearn.app.annotator.Annotator`.

Routes (JSON in and out; images by index, never by path):

    GET  /                      the page (static/index.html; app.js and app.css under /static/)
    GET  /api/state             everything the page shows (never waits: ``busy`` says a request is running)
    GET  /api/image/{index}     the image as a PNG
    POST /api/open {index}      open an image
    POST /api/click {row, col, label}   NDJSON stream: {"stage": "first", pseudo-label} then
                                {"stage": "adapted", ...}; POST /api/auto {} the same with the simulated
                                user's click
    POST /api/undo | /api/reset | /api/accept | /api/skip {}     POST /api/method {method}

Every model call runs in one worker thread, so requests that change the session are serialised: while one
runs, another gets 409 (``busy=True``). Background compilations (:meth:`App.warm`) share that thread at a
lower priority: a request waits at most for the one compilation running when it arrives. A bad request gets a 4xx JSON ``{"error": "field=value: expected
...", "field": ...}``; an unexpected exception a 500 with a one-line message (the traceback goes to the
server's log only). Request bodies are bounded (``max_body_bytes``).
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import itertools
import json
import os
import queue
import threading
from collections.abc import Callable
from typing import Any

import numpy as np
from absl import logging
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from yiplearn.app import images as images_lib
from yiplearn.app.annotator import Annotator, AppError

__all__ = ['App', 'make_app', 'STATIC']

STATIC = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'static')
_STATIC_FILES = {'app.js': 'text/javascript', 'app.css': 'text/css'}
_FIELDS = {
  'open': {'index'},
  'click': {'row', 'col', 'label'},
  'auto': set(),
  'undo': set(),
  'reset': set(),
  'accept': set(),
  'skip': set(),
  'method': {'method'},
}


def _jsonable(obj: Any) -> Any:
  """Class maps become {"shape": [H, W], "data": base64 of the uint8 bytes, row-major}."""
  if isinstance(obj, np.ndarray):
    a = np.ascontiguousarray(obj, np.uint8)
    return {'shape': list(a.shape), 'data': base64.b64encode(a.tobytes()).decode('ascii')}
  if isinstance(obj, dict):
    return {k: _jsonable(v) for k, v in obj.items()}
  if isinstance(obj, (list, tuple)):
    return [_jsonable(v) for v in obj]
  if isinstance(obj, np.generic):
    return obj.item()
  return obj


def _error(status: int, message: str, field: str | None = None) -> JSONResponse:
  return JSONResponse({'error': message, 'field': field}, status_code=status)


class App:
  """The served session: ``annotator`` behind the routes, one worker thread for the model."""

  def __init__(self, annotator: Annotator, *, max_body_bytes: int = 4096):
    self.annotator = annotator
    self.max_body_bytes = int(max_body_bytes)
    self.busy = False
    self.warming = 0
    # One thread runs every model call: requests first, background compilations when none waits.
    self._queue: queue.PriorityQueue = queue.PriorityQueue()
    self._order = itertools.count()
    self._worker = threading.Thread(target=self._loop, name='yiplearn-app-model', daemon=True)
    self._worker.start()
    self._lock = threading.Lock()
    # What GET /api/state returns: made by the model's thread after every request (a state being
    # adapted there is donated to XLA and cannot be read from another thread meanwhile).
    self._status = annotator.status()

  # ---- the worker ----------------------------------------------------------------------------------------

  def _loop(self) -> None:
    while True:
      _, _, fn, future = self._queue.get()
      if fn is None:
        return
      if future.set_running_or_notify_cancel():
        try:
          future.set_result(fn())
        except BaseException as e:  # pylint: disable=broad-except
          future.set_exception(e)

  def _submit(self, fn: Callable[[], Any], priority: int) -> concurrent.futures.Future:
    if not self._worker.is_alive():
      raise RuntimeError('the model thread has stopped')
    future: concurrent.futures.Future = concurrent.futures.Future()
    self._queue.put((priority, next(self._order), fn, future))
    return future

  def warm(self, jobs: list[Callable[[], Any]]) -> None:
    """Queues compilations in the model's thread (a request arriving meanwhile waits its turn)."""
    self.warming += len(jobs)

    def run(job):
      try:
        job()
      except Exception:  # pylint: disable=broad-except
        logging.exception('background compilation failed (it will compile on first use)')
      finally:
        self.warming -= 1

    for job in jobs:
      self._submit(lambda job=job: run(job), 1)

  def _claim(self) -> None:
    with self._lock:
      if self.busy:
        raise AppError(409, 'busy', True, 'one request at a time (the model is adapting; retry)')
      self.busy = True

  def _release(self) -> None:
    with self._lock:
      self.busy = False

  def close(self) -> None:
    """Stops the model thread after the call it is running (queued compilations are dropped)."""
    self._queue.put((-1, -1, None, None))
    self._worker.join()
    if self.annotator.record is not None:
      self.annotator.record.close()

  # ---- requests ------------------------------------------------------------------------------------------

  async def _body(self, request: Request, action: str) -> dict[str, Any]:
    length = request.headers.get('content-length')
    if length is not None and (not length.isdigit() or int(length) > self.max_body_bytes):
      raise AppError(
        413, 'content-length', length, f'a body of at most {self.max_body_bytes} bytes'
      )
    raw = b''
    async for chunk in request.stream():
      raw += chunk
      if len(raw) > self.max_body_bytes:
        raise AppError(413, 'body', f'{len(raw)}+ bytes', f'at most {self.max_body_bytes} bytes')
    if not raw.strip():
      body: Any = {}
    else:
      ctype = request.headers.get('content-type', '').split(';')[0].strip()
      if ctype != 'application/json':
        raise AppError(415, 'content-type', ctype, 'application/json')
      try:
        body = json.loads(raw)
      except (json.JSONDecodeError, UnicodeDecodeError):
        text = raw[:40].decode('utf-8', 'replace')
        raise AppError(400, 'body', text, 'a JSON object') from None
    if not isinstance(body, dict):
      raise AppError(400, 'body', json.dumps(body)[:40], 'a JSON object')
    allowed = _FIELDS[action]
    for key in body:
      if key not in allowed:
        raise AppError(400, f'body.{key}', body[key], f'only the fields {sorted(allowed)}')
    for key in sorted(allowed):
      if key not in body:
        raise AppError(400, key, None, f'a value for {key!r}')
    return body

  async def _run(self, fn: Callable[[], Any]) -> Any:
    """``fn`` in the model's thread, with the session claimed (409 while another request runs)."""
    self._claim()

    def job():
      try:
        return fn()
      finally:
        self._status = self.annotator.status()

    try:
      future = self._submit(job, 0)
    except RuntimeError:
      self._release()
      raise AppError(503, 'server', 'shutting down', 'a running server') from None
    future.add_done_callback(lambda _: self._release())
    return await asyncio.wrap_future(future)

  async def action(self, request: Request) -> Response:
    name = request.path_params['action']
    if name not in _FIELDS:
      raise AppError(404, 'path', request.url.path, f'one of /api/{{{",".join(sorted(_FIELDS))}}}')
    body = await self._body(request, name)
    ann = self.annotator
    if name in ('click', 'auto'):
      return await self._click(name, body)
    calls = {
      'open': lambda: ann.open(body['index']),
      'undo': ann.undo,
      'reset': ann.reset,
      'accept': ann.accept,
      'skip': ann.skip,
      'method': lambda: ann.set_method(body['method']),
    }
    result = await self._run(calls[name])
    return JSONResponse(_jsonable({**result, 'busy': False, 'warming': self.warming}))

  async def _click(self, name: str, body: dict[str, Any]) -> Response:
    """Streams the pseudo-label prediction as soon as it exists, then the adapted one."""
    loop = asyncio.get_running_loop()
    first: asyncio.Future = loop.create_future()

    def on_first(result):
      loop.call_soon_threadsafe(lambda: first.done() or first.set_result(result))

    ann = self.annotator
    if name == 'auto':
      fn = lambda: ann.auto(on_first=on_first)
    else:
      fn = lambda: ann.click(body['row'], body['col'], body['label'], on_first=on_first)
    done = asyncio.ensure_future(self._run(fn))
    await asyncio.wait([first, done], return_when=asyncio.FIRST_COMPLETED)
    if not first.done():  # refused (or failed) before the first prediction: a plain error response
      first.cancel()
      await done  # raises the AppError
    head = json.dumps(_jsonable(first.result())) + '\n'

    async def lines():
      yield head
      try:
        result = await done
        yield json.dumps(_jsonable({**result, 'busy': False, 'warming': self.warming})) + '\n'
      except AppError as e:
        yield json.dumps({'stage': 'error', 'error': str(e), 'field': e.field}) + '\n'
      except Exception as e:  # pylint: disable=broad-except
        logging.exception('click failed after its first prediction')
        yield json.dumps({'stage': 'error', 'error': f'internal error: {type(e).__name__}'}) + '\n'

    return StreamingResponse(lines(), media_type='application/x-ndjson')

  async def state(self, request: Request) -> Response:
    status = self._status
    return JSONResponse(_jsonable({**status, 'busy': self.busy, 'warming': self.warming}))

  async def image(self, request: Request) -> Response:
    raw = request.path_params['index']
    index = int(raw) if raw.isdigit() else raw
    index = self.annotator._index(index)  # pylint: disable=protected-access
    png = images_lib.display_png(self.annotator.images.images[index])
    return Response(png, media_type='image/png', headers={'cache-control': 'no-store'})

  async def page(self, request: Request) -> Response:
    return FileResponse(os.path.join(STATIC, 'index.html'), media_type='text/html')

  async def static(self, request: Request) -> Response:
    name = request.path_params['name']
    if name not in _STATIC_FILES:
      raise AppError(404, 'path', request.url.path, f'one of /static/{{{",".join(_STATIC_FILES)}}}')
    return FileResponse(os.path.join(STATIC, name), media_type=_STATIC_FILES[name])


def make_app(annotator: Annotator, *, max_body_bytes: int = 4096) -> tuple[Starlette, App]:
  """The ASGI app and its :class:`App` (close it after serving)."""
  app = App(annotator, max_body_bytes=max_body_bytes)

  async def app_error(request: Request, e: AppError) -> Response:
    return _error(e.status, str(e), e.field)

  async def http_error(request: Request, e: HTTPException) -> Response:
    if e.status_code == 404:
      return _error(404, f"path='{request.url.path}': expected / or a route under /api/", 'path')
    if e.status_code == 405:
      return _error(
        405, f"method='{request.method}': expected another method for this route", 'method'
      )
    return _error(e.status_code, str(e.detail))

  async def internal(request: Request, e: Exception) -> Response:
    logging.exception('internal error on %s %s', request.method, request.url.path)
    return _error(500, f'internal error ({type(e).__name__}); see the server log')

  routes = [
    Route('/', app.page, methods=['GET']),
    Route('/static/{name}', app.static, methods=['GET']),
    Route('/api/state', app.state, methods=['GET']),
    Route('/api/image/{index}', app.image, methods=['GET']),
    Route('/api/{action}', app.action, methods=['POST']),
  ]
  handlers = {AppError: app_error, HTTPException: http_error, Exception: internal}
  return Starlette(routes=routes, exception_handlers=handlers), app
