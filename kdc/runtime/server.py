"""``kdc serve``: exported models behind the KServe v2 / Open Inference Protocol REST API (FastAPI + uvicorn).

Routes: ``/v2``, ``/v2/health/live``, ``/v2/health/ready``, ``/v2/models/{name}[/versions/1]`` (metadata),
``.../ready``, ``.../config`` (Triton's model config) and ``.../infer``. An infer request's ``parameters.normalise``
(else the server's ``normalise`` default) scales k-space at scanner scale into the training range and the image back,
as ``Reconstructor.run(normalise=True)`` does; the runtime's warnings (k-space with phase, a mask without DC) are
logged and returned in the response's ``parameters.kdc_warnings``. Bodies above ``max_body_bytes`` are refused
with 413 before they are parsed (declared length first, then counted while streaming). Decoding, inference and
encoding run on a bounded thread pool (reconstructors are thread-safe), so the event loop only moves bytes.

Memory is bounded by limits that slow clients cannot exhaust: request bodies held at once (received or waiting for
inference) share a byte budget (503 beyond it), counted as their bytes arrive, so a client trickling bytes holds
only what it sent, and bodies that stall (below ``min_body_rate``) are dropped when others need the room; headers
must arrive within ``header_timeout`` and a body within ``body_timeout`` (408, then the connection is closed); a
batch is capped per model and JSON by its count of values before it is parsed (413). Liveness and metadata never
wait for inference.
uvicorn shuts down gracefully on SIGINT/SIGTERM, finishing in-flight requests.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import functools
import json
import logging
import math
from collections.abc import AsyncIterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException
from starlette.background import BackgroundTask
from starlette.requests import ClientDisconnect
from uvicorn.protocols.http.h11_impl import H11Protocol

from kdc.runtime.protocol import (
    HEADER_LENGTH,
    MODEL_VERSION,
    SERVER_METADATA,
    ProtocolError,
    decode_request,
    encode_response,
    model_metadata,
    parse_length,
)
from kdc.runtime.session import Reconstructor
from kdc.runtime.tensors import RuntimeModelError
from kdc.runtime.triton import triton_config

log = logging.getLogger("uvicorn.error")  # configured by uvicorn: our lines join its log


@dataclass(frozen=True)
class Limits:
    """What one client may cost the server (see the module docstring and docs/runtime.md)."""

    max_body_bytes: int = 64 << 20  # one request body (413 above)
    max_buffer_bytes: int = 256 << 20  # request bodies held at once, received or waiting for inference (503 above)
    header_timeout: float = 10.0  # seconds to send the request line and headers (408, connection closed)
    body_timeout: float = 60.0  # seconds to send the whole body (408, connection closed)
    inference_memory: int = 1 << 30  # working memory of one inference, which sets the default batch cap
    # A body arriving slower than this (bytes/s) is dropped (408) when another request needs its memory; 0: never.
    min_body_rate: float = 1 << 20
    # JSON values one request may hold (413 above, counted before parsing: a parsed value costs 32-70 bytes).
    max_json_values: int = 1 << 22


#: Seconds over which a body's arrival rate is measured against ``Limits.min_body_rate``.
RATE_WINDOW = 1.0


#: Requests with a body above this size give freed memory back to the system when they are done.
RELEASE_AFTER_BYTES = 1 << 20
#: Status codes answered before the body was read to its end: the connection is closed after them.
CLOSING_STATUSES = (408, 413, 503)


def error(message: str, status: int) -> JSONResponse:
    """A KServe error body: ``{"error": message}``; the connection closes after a 408, 413 or 503."""
    headers = {"connection": "close"} if status in CLOSING_STATUSES else None
    return JSONResponse({"error": message}, status_code=status, headers=headers)


@dataclass(eq=False)
class Upload:
    """A request body being received: the bytes it holds and the last time it was keeping up the minimum rate."""

    mark: float  # loop time when it last had received ``min_rate * RATE_WINDOW`` bytes since the previous mark
    since_mark: int = 0
    held: int = 0
    dropped: bool = False
    task: asyncio.Task[None] = field(init=False)


class BodyBudget:
    """Bytes of request bodies held at once. Used from the event loop only, so it needs no lock.

    When a chunk does not fit, bodies still arriving slower than ``min_rate`` bytes/s (over the last
    :data:`RATE_WINDOW` seconds) are dropped, most bytes first, to make room: stalled uploads cannot starve the
    clients that send. Only bodies that keep up (or that wait for inference) make others wait (503)."""

    def __init__(self, limit: int, min_rate: float) -> None:
        self.limit = limit
        self.min_rate = min_rate
        self.held = 0
        self.uploads: set[Upload] = set()

    @contextlib.asynccontextmanager
    async def receive(self, request: Request, max_bytes: int, timeout: float) -> AsyncIterator[bytearray]:
        """The request body, counted against the budget as it arrives and until the block ends.

        413 above ``max_bytes``, 503 when the budget is spent, 408 after ``timeout`` seconds or when dropped as
        stalled, 400 if the client goes away (logged as one line)."""
        declared = request.headers.get("content-length")
        if declared is not None and (parse_length(declared) is None or parse_length(declared) > max_bytes):
            raise ProtocolError(f"request body of {declared} bytes exceeds the limit of {max_bytes} bytes", 413)
        body = bytearray()
        loop = asyncio.get_running_loop()
        upload = Upload(loop.time())
        upload.task = loop.create_task(self._collect(request, body, max_bytes, upload))
        self.uploads.add(upload)
        try:
            try:
                await asyncio.wait({upload.task}, timeout=timeout)
            finally:
                self.uploads.discard(upload)
                upload.task.cancel()  # nothing when it is done
            if upload.dropped:
                raise ProtocolError(f"request body dropped after {len(body)} bytes: it arrived slower than "
                                    f"{self.min_rate / 2**20:g} MiB/s while other requests needed the memory", 408)
            if not upload.task.done():
                raise ProtocolError(f"request body not received within {timeout:g} s "
                                    f"({len(body)} bytes arrived)", 408)
            try:
                upload.task.result()
            except ClientDisconnect:
                log.info("client %s disconnected after %d bytes of its request body", _client(request), len(body))
                raise ProtocolError("client disconnected before the end of its request body") from None
            yield body
        finally:
            self.held -= upload.held

    async def _collect(self, request: Request, body: bytearray, max_bytes: int, upload: Upload) -> None:
        try:
            async for chunk in request.stream():
                if len(body) + len(chunk) > max_bytes:
                    raise ProtocolError(f"request body exceeds the limit of {max_bytes} bytes", 413)
                if self.held + len(chunk) > self.limit:
                    self._drop_stalled(self.held + len(chunk) - self.limit, upload)
                if self.held + len(chunk) > self.limit:
                    raise ProtocolError(f"server busy: request bodies in memory would exceed {self.limit} bytes; "
                                        "retry later", 503)
                body += chunk  # a bytearray grows in place: no copy of the body at the end
                self.held += len(chunk)
                upload.held += len(chunk)
                upload.since_mark += len(chunk)
                if upload.since_mark >= self.min_rate * RATE_WINDOW:
                    upload.mark, upload.since_mark = asyncio.get_running_loop().time(), 0
        except BaseException:  # a refused or abandoned body gives its bytes back at once, for the next chunk
            self.held -= upload.held
            upload.held = 0
            raise

    def _drop_stalled(self, needed: int, keep: Upload) -> None:
        """Drop uploads that fell below the minimum rate, most bytes first, until ``needed`` bytes are free."""
        if self.min_rate <= 0:
            return
        now = asyncio.get_running_loop().time()
        stalled = [u for u in self.uploads
                   if u is not keep and not u.task.done() and now - u.mark >= RATE_WINDOW and u.held]
        for upload in sorted(stalled, key=lambda u: u.held, reverse=True):
            if needed <= 0:
                return
            upload.dropped = True
            upload.task.cancel()
            self.held -= upload.held
            needed -= upload.held
            upload.held = 0


def _client(request: Request) -> str:
    return f"{request.client.host}:{request.client.port}" if request.client else "unknown"


def release_memory() -> None:
    """Give freed heap pages back to the system (glibc's ``malloc_trim``), so that RSS falls after a big request."""
    libc_name = ctypes.util.find_library("c")
    trim = getattr(ctypes.CDLL(libc_name), "malloc_trim", None) if libc_name else None
    if trim is not None:
        trim(0)


def slice_memory(model: Reconstructor) -> int:
    """Upper estimate of the bytes one slice of a batch costs during inference: its float32 inputs and outputs
    plus four feature maps of the model's width (:attr:`~kdc.runtime.contract.ModelInfo.width`) at the contract's image
    size. Measured peaks are 70-80 % of it (docs/results/server_stress.md)."""
    height, width = model.image_size
    channels = model.contract.model.width
    per_slice = sum(math.prod(d for d in spec.shape[1:] if isinstance(d, int))
                    for spec in (*model.inputs, *model.outputs) if spec.shape and isinstance(spec.shape[0], str))
    return 4 * (per_slice + 4 * channels * height * width)


def default_max_batch(model: Reconstructor, inference_memory: int) -> int:
    """Slices per request whose :func:`slice_memory` fits ``inference_memory`` bytes (at least 1)."""
    return max(1, inference_memory // slice_memory(model))


def create_app(models: Mapping[str, Reconstructor], *, limits: Limits = Limits(), workers: int = 2,
               max_batch: int | None = None, production: bool = False, normalise: bool = False) -> FastAPI:
    """The FastAPI app serving ``models`` (name -> reconstructor).

    ``max_batch`` caps the slices of a request (default: :func:`default_max_batch` of each model).
    ``production`` hides exception details from 500 bodies (the log keeps them) and does not serve /openapi.json.
    """
    executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="kdc-infer")
    state = {"ready": True}
    budget = BodyBudget(limits.max_buffer_bytes, limits.min_body_rate)
    batch_caps = {name: max_batch or default_max_batch(model, limits.inference_memory)
                  for name, model in models.items()}

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        for name, cap in batch_caps.items():
            log.info("model %s: at most %d slices per request", name, cap)
        yield
        state["ready"] = False
        executor.shutdown(wait=True)
        log.info("inference pool stopped")

    app = FastAPI(title="kdc", version=SERVER_METADATA["version"], lifespan=lifespan, docs_url=None, redoc_url=None,
                  openapi_url=None if production else "/openapi.json")

    @app.exception_handler(ProtocolError)
    async def protocol_error(request: Request, err: ProtocolError) -> JSONResponse:
        return error(str(err), err.status)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, err: HTTPException) -> JSONResponse:
        return error(str(err.detail), err.status_code)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, err: RequestValidationError) -> JSONResponse:
        return error(f"invalid request: {err.errors()}", 400)

    def lookup(name: str, version: str | None) -> Reconstructor:
        if name not in models:
            raise ProtocolError(f"unknown model {name!r}: serving {sorted(models)}", 404)
        if version not in (None, MODEL_VERSION):
            raise ProtocolError(f"model {name!r} has no version {version!r}: versions [{MODEL_VERSION!r}]", 404)
        return models[name]

    def infer_sync(name: str, model: Reconstructor, body: bytearray, header_length: str | None) -> Response:
        request = decode_request(body, header_length, model, batch_caps[name], limits.max_json_values)
        try:
            results, notes = model.run_with_notes(
                request.feeds, normalise=normalise if request.normalise is None else request.normalise)
        except RuntimeModelError as err:  # valid JSON the model cannot answer, e.g. outputs with NaN: never NaN JSON
            raise ProtocolError(str(err), 422) from None
        for note in notes:
            log.warning("model %s: %s", name, note)
        content, headers = encode_response(name, request, results, notes)
        # After a big request, hand freed heap back to the system once the answer is sent.
        cleanup = BackgroundTask(release_memory) if len(body) > RELEASE_AFTER_BYTES else None
        return Response(content, headers=headers, background=cleanup)

    @app.get("/v2")
    async def server_metadata() -> dict[str, object]:
        return SERVER_METADATA

    @app.get("/v2/health/live")
    async def live() -> dict[str, bool]:
        return {"live": True}

    @app.get("/v2/health/ready")
    async def ready() -> JSONResponse:
        return JSONResponse({"ready": state["ready"]}, status_code=200 if state["ready"] else 503)

    @app.get("/v2/models/{name}")
    @app.get("/v2/models/{name}/versions/{version}")
    async def metadata(name: str, version: str | None = None) -> dict[str, object]:
        return model_metadata(name, lookup(name, version))

    @app.get("/v2/models/{name}/ready")
    @app.get("/v2/models/{name}/versions/{version}/ready")
    async def model_ready(name: str, version: str | None = None) -> JSONResponse:
        lookup(name, version)
        return JSONResponse({"name": name, "ready": state["ready"]}, status_code=200 if state["ready"] else 503)

    @app.get("/v2/models/{name}/config")
    @app.get("/v2/models/{name}/versions/{version}/config")
    async def config(name: str, version: str | None = None) -> dict[str, object]:
        return triton_config(lookup(name, version), name)

    @app.post("/v2/models/{name}/infer")
    @app.post("/v2/models/{name}/versions/{version}/infer")
    async def infer(name: str, request: Request, version: str | None = None) -> Response:
        model = lookup(name, version)
        async with budget.receive(request, limits.max_body_bytes, limits.body_timeout) as body:
            try:
                return await asyncio.get_running_loop().run_in_executor(
                    executor, infer_sync, name, model, body, request.headers.get(HEADER_LENGTH))
            except ProtocolError:
                raise
            except Exception as err:  # a runtime failure: log it, answer 500 with one line
                log.exception("inference failed on model %s", name)
                detail = "see the server log" if production else f"{type(err).__name__}: {err}"
                return error(f"inference failed: {detail}", 500)

    return app


class TimedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol that closes a connection whose request line and headers take longer than
    ``header_timeout`` seconds, counted from the connection or from the end of the previous response.

    uvicorn has no such timeout: a client trickling header bytes would hold its connection forever. A request
    that had begun gets a 408; an idle keep-alive connection (no byte sent) is closed silently."""

    def __init__(self, *args: Any, header_timeout: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.header_timeout = header_timeout
        self.header_timer: asyncio.TimerHandle | None = None
        self.request_begun = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_header_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_header_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        cycle = self.cycle
        self.request_begun = self.request_begun or self.header_timer is not None
        super().data_received(data)
        if self.cycle is not cycle:  # the headers of a new request are complete
            self._disarm_header_timer()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm_header_timer()

    def _arm_header_timer(self) -> None:
        self._disarm_header_timer()
        self.request_begun = False
        self.header_timer = self.loop.call_later(self.header_timeout, self._headers_timed_out)

    def _disarm_header_timer(self) -> None:
        if self.header_timer is not None:
            self.header_timer.cancel()
            self.header_timer = None

    def _headers_timed_out(self) -> None:
        self.header_timer = None
        if self.request_begun and not self.transport.is_closing():
            body = json.dumps({"error": f"request headers not received within {self.header_timeout:g} s"}).encode()
            self.transport.write(b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
                                 b"connection: close\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body))
        self.transport.close()


def run_server(models: Mapping[str, Reconstructor], *, host: str = "127.0.0.1", port: int = 8000,
               limits: Limits = Limits(), workers: int = 2, max_batch: int | None = None, production: bool = False,
               graceful_timeout: float = 30.0, log_level: str = "info", normalise: bool = False) -> None:
    """Serve until SIGINT/SIGTERM; then stop accepting, finish in-flight requests (up to ``graceful_timeout`` s)."""
    import uvicorn

    app = create_app(models, limits=limits, workers=workers, max_batch=max_batch, production=production,
                     normalise=normalise)
    protocol = functools.partial(TimedH11Protocol, header_timeout=limits.header_timeout)
    config = uvicorn.Config(app, host=host, port=port, log_level=log_level, http=protocol,  # type: ignore[arg-type]
                            timeout_graceful_shutdown=graceful_timeout)
    uvicorn.Server(config).run()
