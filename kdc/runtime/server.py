"""``kdc serve``: exported models behind the KServe v2 / Open Inference Protocol REST API (FastAPI + uvicorn).

Routes: ``/v2``, ``/v2/health/live``, ``/v2/health/ready``, ``/v2/models/{name}[/versions/1]`` (metadata),
``.../ready``, ``.../config`` (Triton's model config) and ``.../infer``. An infer request's ``parameters.normalise``
(else the server's ``normalise`` default) scales k-space at scanner scale into the training range and the image back,
as ``Reconstructor.run(normalise=True)`` does; the runtime's warnings (k-space with phase, a mask without DC) are
logged and returned in the response's ``parameters.kdc_warnings``. Bodies above ``max_body_bytes`` are refused
with 413 before they are parsed (declared length first, then counted while streaming). Decoding, inference and
encoding run on a bounded thread pool (reconstructors are thread-safe), so the event loop only moves bytes.
uvicorn caps concurrent connections (503 beyond) and shuts down gracefully on SIGINT/SIGTERM, finishing
in-flight requests.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Mapping
from concurrent.futures import ThreadPoolExecutor

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException

from kdc.runtime.protocol import (
    HEADER_LENGTH,
    MODEL_VERSION,
    SERVER_METADATA,
    ProtocolError,
    decode_request,
    encode_response,
    model_metadata,
)
from kdc.runtime.session import Reconstructor
from kdc.runtime.triton import triton_config

log = logging.getLogger("uvicorn.error")  # configured by uvicorn: our lines join its log


def error(message: str, status: int) -> JSONResponse:
    """A KServe error body: ``{"error": message}``."""
    return JSONResponse({"error": message}, status_code=status)


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 as soon as it is known to exceed ``limit`` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > limit):
        raise ProtocolError(f"request body of {declared} bytes exceeds the limit of {limit} bytes", 413)
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise ProtocolError(f"request body exceeds the limit of {limit} bytes", 413)
    return bytes(body)


def create_app(models: Mapping[str, Reconstructor], *, max_body_bytes: int = 64 << 20, workers: int = 2,
               normalise: bool = False) -> FastAPI:
    """The FastAPI app serving ``models`` (name -> reconstructor)."""
    executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="kdc-infer")
    state = {"ready": True}

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        state["ready"] = False
        executor.shutdown(wait=True)
        log.info("inference pool stopped")

    app = FastAPI(title="kdc", version=SERVER_METADATA["version"], lifespan=lifespan, docs_url=None, redoc_url=None)

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

    def infer_sync(name: str, model: Reconstructor, body: bytes, header_length: str | None) -> Response:
        request = decode_request(body, header_length, model)
        results, notes = model.run_with_notes(
            request.feeds, normalise=normalise if request.normalise is None else request.normalise)
        for note in notes:
            log.warning("model %s: %s", name, note)
        content, headers = encode_response(name, request, results, notes)
        return Response(content, headers=headers)

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
        body = await read_body(request, max_body_bytes)
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(
                executor, infer_sync, name, model, body, request.headers.get(HEADER_LENGTH))
        except ProtocolError:
            raise
        except Exception as err:  # a runtime failure: log it, answer 500 with one line
            log.exception("inference failed on model %s", name)
            return error(f"inference failed: {type(err).__name__}: {err}", 500)

    return app


def run_server(models: Mapping[str, Reconstructor], *, host: str = "127.0.0.1", port: int = 8000,
               max_body_bytes: int = 64 << 20, workers: int = 2, max_connections: int = 64,
               graceful_timeout: float = 30.0, log_level: str = "info", normalise: bool = False) -> None:
    """Serve until SIGINT/SIGTERM; then stop accepting, finish in-flight requests (up to ``graceful_timeout`` s)."""
    import uvicorn

    app = create_app(models, max_body_bytes=max_body_bytes, workers=workers, normalise=normalise)
    config = uvicorn.Config(app, host=host, port=port, log_level=log_level, limit_concurrency=max_connections,
                            timeout_graceful_shutdown=graceful_timeout)
    uvicorn.Server(config).run()
