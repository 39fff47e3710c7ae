"""The HTTP routes of ``pretune serve`` (FastAPI, the ``serve`` extra, imported when ``create_app`` runs).

    POST /predict   {"text": "..."} or {"texts": [...]}, with "text_pair" / "text_pairs" for pairs
                    -> {"result": row} or {"results": [row, ...]}: the task's rows, as pretune predict writes them
    GET  /health    200 once the model is loaded and warmed up; 503 before (and if loading failed)
    GET  /metrics   Prometheus text format (``pretune.serve.metrics``)
    GET  /docs      the OpenAPI page (FastAPI's)

Every error is a one-line JSON object, ``{"error": "..."}``, with a 4xx status for a bad request (400 malformed
JSON, 401 no or wrong token, 404/405 no such route, 413 body too large, 415 not JSON, 422 a missing field, an
empty list, too many texts, an empty or refused text), 503 while loading, when --max-queue texts wait already or
while shutting down, and 500 for a bug
(logged with its traceback). No route loads a path or runs code named by a request: the model is fixed at start.

No ``from __future__ import annotations`` here: FastAPI reads the routes' annotations (``request: Request``), and
``Request`` is imported inside ``create_app`` so that importing this module needs no FastAPI.
"""

import asyncio
import hmac
import json
import logging
import time
from contextlib import asynccontextmanager
from typing import Callable, Optional

from ..errors import ModelError, PretuneError, require
from .batching import Batcher, BatcherClosed, BatcherFull
from .config import ServeConfig
from .metrics import CONTENT_TYPE, ServeMetrics
from .model import ServedModel, Target, load

log = logging.getLogger("pretune.serve")
ROUTES = ("/predict", "/health", "/metrics", "/docs", "/docs/oauth2-redirect", "/openapi.json", "/redoc")
OPEN = ("/health",)  # answered without the token: a load balancer's probe carries none
FIELDS = ("text", "texts", "text_pair", "text_pairs")
# A request body of this many bytes or fewer has its texts checked and counted on the event loop (a sentence takes
# about 0.1 ms); a larger one in the thread pool, so that it does not hold up the loop. The hop to the pool and back
# costs more than a few sentences' counting, and it is paid at every level of load.
INLINE_BYTES = 2048
PREDICT_BODY = {
    "type": "object", "additionalProperties": False,
    "properties": {
        "text": {"type": "string", "description": "one text"},
        "texts": {"type": "array", "items": {"type": "string"}, "minItems": 1, "description": "several texts"},
        "text_pair": {"type": "string", "description": "the second text of a pair (with text)"},
        "text_pairs": {"type": "array", "items": {"type": "string"},
                       "description": "the second texts of pairs (with texts, as many)"},
    },
    "examples": [{"text": "a charming and often affecting journey"},
                 {"texts": ["a gorgeous film", "a dull plot"]}],
}


class ApiError(Exception):
    """A request the server refuses: its status and a one-line reason."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def parse_predict(body: bytes, content_type: Optional[str], max_texts: int) -> tuple[list[str], Optional[list],
                                                                                      bool]:
    """(texts, pairs or None, whether the request sent one ``text``) of a /predict body.

    Raises:
        ApiError: 415 not JSON; 400 malformed JSON; 422 a wrong shape, field, type or count.
    """
    media = (content_type or "").split(";")[0].strip().lower()
    if media != "application/json":
        raise ApiError(415, f"Content-Type must be application/json, got {content_type or 'none'!r}")
    try:
        data = json.loads(body)
    except (ValueError, RecursionError) as e:  # UnicodeDecodeError is a ValueError
        raise ApiError(400, f"the body is not valid JSON ({str(e).splitlines()[0][:120]})") from None
    if not isinstance(data, dict):
        raise ApiError(422, 'the body must be a JSON object: {"text": "..."} or {"texts": ["...", ...]}')
    unknown = [k for k in data if k not in FIELDS]
    if unknown:
        raise ApiError(422, f"unknown field {unknown[0][:40]!r}; the fields are {', '.join(FIELDS)}")
    single = "text" in data
    if single == ("texts" in data):
        raise ApiError(422, 'give either "text" (one string) or "texts" (a list of strings)')
    if ("text_pair" in data and not single) or ("text_pairs" in data and single):
        raise ApiError(422, '"text_pair" goes with "text", "text_pairs" with "texts"')
    texts = [data["text"]] if single else data["texts"]
    pairs = [data["text_pair"]] if "text_pair" in data else data.get("text_pairs")
    for name, values in (("texts", texts), ("text_pairs", pairs)):
        if values is None:
            continue
        if not isinstance(values, list):
            raise ApiError(422, f'"{name}" must be a list of strings, got {type(values).__name__}')
        bad = next((i for i, v in enumerate(values) if not isinstance(v, str)), None)
        if bad is not None:
            where = name[:-1] if single else f"{name}[{bad}]"
            raise ApiError(422, f'"{where}" must be a string, got {type(values[bad]).__name__}')
    if not texts:
        raise ApiError(422, '"texts" is empty; send at least one text')
    if len(texts) > max_texts:
        raise ApiError(422, f"{len(texts)} texts in one request; the limit is {max_texts} (--max-texts)")
    if pairs is not None and len(pairs) != len(texts):
        raise ApiError(422, f'{len(texts)} texts but {len(pairs)} text_pairs; give one pair per text')
    return texts, pairs, single


async def read_body(receive_stream, declared: Optional[str], limit: int) -> bytes:
    """The body, refused with 413 as soon as it is known to be over ``limit`` bytes (declared or received)."""
    if declared is not None and declared.strip().isdigit() and int(declared) > limit:
        raise ApiError(413, f"the body is {int(declared)} bytes; the limit is {limit} (--max-body-bytes)")
    chunks, size = [], 0
    async for chunk in receive_stream:
        size += len(chunk)
        if size > limit:
            raise ApiError(413, f"the body is over {limit} bytes (--max-body-bytes)")
        chunks.append(chunk)
    return b"".join(chunks)


class _State:
    """What the routes share: the settings, the model once loaded, the batcher and the metrics."""

    def __init__(self, cfg: ServeConfig, target: Target):
        self.cfg, self.target = cfg, target
        self.model: Optional[ServedModel] = None
        self.failed: Optional[str] = None
        self.batcher = Batcher(self._predict, max_batch_size=cfg.max_batch_size, max_wait_s=cfg.max_wait_ms / 1000,
                               max_queue=cfg.max_queue)
        self.metrics = ServeMetrics(target.info(), lambda: self.batcher.queue_depth)
        self.batcher.on_batch = self.metrics.batch_done

    def _predict(self, payloads):
        return self.model.predict(payloads)

    def info(self) -> dict:
        return self.model.info() if self.model is not None else self.target.info()


class _Guard:
    """ASGI middleware around every route: the bearer token (all but /health) and the request metrics."""

    def __init__(self, app, state: _State):
        self.app, self.state = app, state
        token = state.cfg.token
        self.expected = f"Bearer {token}".encode() if token else None

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope["path"]
        status = [500]

        async def send_and_note(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        metrics = self.state.metrics
        metrics.request_started()
        t0 = time.perf_counter()
        try:
            if self.expected is not None and path not in OPEN and not self._authorized(scope):
                await _send_error(send_and_note, 401, 'missing or wrong token; send the header '
                                  '"Authorization: Bearer TOKEN"', [(b"www-authenticate", b"Bearer")])
            else:
                await self.app(scope, receive, send_and_note)
        finally:
            metrics.request_done(path if path in ROUTES else "other", status[0], time.perf_counter() - t0)

    def _authorized(self, scope) -> bool:
        given = next((v for k, v in scope["headers"] if k == b"authorization"), b"")
        return hmac.compare_digest(given, self.expected)


async def _send_error(send, status: int, message: str, headers=()) -> None:
    body = json.dumps({"error": message}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            *headers]})
    await send({"type": "http.response.body", "body": body})


async def _until_disconnect(receive) -> None:
    """Returns when the client goes away (the body has been read: the next message is the disconnect)."""
    while (await receive())["type"] != "http.disconnect":
        pass


async def _submit_watching(request, batcher: Batcher, payloads, lengths) -> Optional[list]:
    """The rows of ``payloads``, or None if the client left first (its texts are then dropped from the queue)."""
    work = asyncio.ensure_future(batcher.submit(payloads, lengths))
    gone = asyncio.ensure_future(_until_disconnect(request.receive))
    try:
        await asyncio.wait({work, gone}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        gone.cancel()
    if not work.done():
        work.cancel()
        return None
    return work.result()


async def _load_model(state: _State, on_fatal) -> None:
    """Load and warm up the model in the model's thread; a failure goes to ``on_fatal`` (else the log)."""
    try:
        state.model = await state.batcher.run_in_model_thread(load, state.target, state.cfg)
        state.metrics.info = state.model.info()
    except Exception as e:  # a bad folder, a runtime that will not start: the server cannot serve
        log.debug("the model could not be loaded", exc_info=True)  # the traceback, with --verbose
        error = e if isinstance(e, PretuneError) else ModelError(
            f"{state.target.path}: the model could not be loaded ({type(e).__name__}: "
            f"{str(e).splitlines()[0][:200] if str(e) else ''})")
        state.failed = str(error)
        if on_fatal is not None:
            on_fatal(error)
        else:
            log.error("%s", error)


def _lifespan(state: _State, on_fatal, load_first: bool):
    @asynccontextmanager
    async def lifespan(app):
        state.batcher.start()
        loading = asyncio.ensure_future(_load_model(state, on_fatal))
        if load_first:
            await loading
        yield
        await loading
        await state.batcher.close()  # uvicorn waits for requests in flight first; any texts left run now

    return lifespan


async def _predict(state: _State, request) -> tuple[int, Optional[dict], dict]:
    """(status, JSON body or None, headers) of a /predict request."""
    from starlette.concurrency import run_in_threadpool
    from starlette.requests import ClientDisconnect

    cfg = state.cfg
    if state.model is None:
        return 503, {"error": "the model could not be loaded" if state.failed else
                     "the model is loading; retry once GET /health answers 200"}, {}
    try:
        with state.batcher.on_the_way():  # the batcher waits for these texts rather than run a batch without them
            body = await read_body(request.stream(), request.headers.get("content-length"), cfg.max_body_bytes)
            texts, pairs, single = parse_predict(body, request.headers.get("content-type"), cfg.max_texts)
            if len(body) <= INLINE_BYTES:
                lengths = state.model.prepare(texts, pairs, on_loop=True)
            else:
                lengths = await run_in_threadpool(state.model.prepare, texts, pairs)
        rows = await _submit_watching(request, state.batcher, list(zip(texts, pairs or [None] * len(texts))),
                                      lengths)
    except ApiError as e:
        return e.status, {"error": str(e)}, {}
    except PretuneError as e:  # the task's checks of the texts
        return 422, {"error": str(e)}, {}
    except (BatcherClosed, BatcherFull) as e:
        return 503, {"error": str(e)}, {"Retry-After": "1"}
    except ClientDisconnect:  # gone before its body arrived
        rows = None
    if rows is None:
        return 499, None, {}  # the client left; nobody reads this (nginx's "client closed request")
    variant = state.target.located.variant
    return 200, ({"result": rows[0]} if single else {"results": rows}) | {"variant": variant}, {}


def _add_error_handlers(app) -> None:
    """Framework errors (404, 405, 500) as one-line JSON too."""
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    from starlette.exceptions import HTTPException

    @app.exception_handler(HTTPException)
    async def http_error(request, exc: HTTPException):
        return JSONResponse({"error": f"{request.method} {request.url.path}: {exc.detail}"},
                            status_code=exc.status_code)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request, exc: RequestValidationError):
        first = (exc.errors() or [{}])[0]
        where = ".".join(map(str, first.get("loc", ())))
        return JSONResponse({"error": f"{where}: {first.get('msg', 'invalid request')}"}, status_code=422)

    @app.exception_handler(Exception)
    async def bug(request, exc: Exception):  # the server logs it with its traceback
        return JSONResponse({"error": f"internal error ({type(exc).__name__}); the server log has the details"},
                            status_code=500)


def create_app(cfg: ServeConfig, target: Target, on_fatal: Optional[Callable[[PretuneError], None]] = None,
               load_first: bool = False):
    """The FastAPI application serving ``target``.

    Args:
        cfg: the server settings (batching, limits, token, threads).
        target: what to load (``pretune.serve.model.inspect``).
        on_fatal: called with a ``PretuneError`` if the model cannot be loaded (the caller reports it and stops the
            server); without, the error is logged and the routes answer 503.
        load_first: load the model before the server takes connections (a worker among several: the others answer
            meanwhile); by default it loads in the background and /health answers 503 until it is ready.

    Raises:
        MissingExtra: FastAPI is not installed (the ``serve`` extra).
    """
    require("fastapi", "serve", "pretune serve")
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse, Response

    from .. import __version__

    state = _State(cfg, target)
    app = FastAPI(title="pretune serve", version=__version__, lifespan=_lifespan(state, on_fatal, load_first),
                  description=f"Predictions of `{target.path}` (variant {target.located.variant}, "
                              f"{target.spec.task}) with dynamic batching.")
    _add_error_handlers(app)

    @app.get("/health", summary="200 once the model is loaded and warmed up, 503 before")
    async def health():
        status = "ok" if state.model is not None else "failed" if state.failed else "loading"
        body = {"status": status, **state.info(), **({"error": state.failed} if state.failed else {})}
        return JSONResponse(body, status_code=200 if status == "ok" else 503)

    @app.get("/metrics", summary="Prometheus metrics of this process")
    async def metrics():
        return Response(state.metrics.render(), media_type=CONTENT_TYPE)

    @app.post("/predict", summary="The task's prediction row for each text",
              openapi_extra={"requestBody": {"required": True,
                                             "content": {"application/json": {"schema": PREDICT_BODY}}}})
    async def predict(request: Request):
        status, body, headers = await _predict(state, request)
        if body is None:
            return Response(status_code=status)
        return JSONResponse(body, status_code=status, headers=headers)

    app.add_middleware(_Guard, state=state)
    app.state.serve = state  # for tests and tools
    return app
