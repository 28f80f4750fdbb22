"""``create_app(settings)``: the FastAPI application of ``swinkit serve``.

Routes: ``POST /score`` (Azure ML schema, see ``swinkit.serve.schemas``), ``GET /health`` (the process
answers), ``GET /ready`` (model loaded and warmed up), ``GET /metrics`` (Prometheus), ``GET /info`` (model,
labels, preprocessing); OpenAPI at ``/openapi.json``, browsable at ``/docs`` (Swagger UI) and ``/redoc``,
whose scripts and styles ``fastapi-offline`` ships and ``/docs-assets`` serves, so they work offline. The
lifespan loads the model in the background (``swinkit.serve.state``) and, at its end, drains the batcher, so
uvicorn's graceful shutdown lets in-flight requests finish.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from typing import Any

from fastapi import FastAPI, Request
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, PlainTextResponse
from fastapi_offline import FastAPIOffline
from pydantic import BaseModel, TypeAdapter

from swinkit import __version__
from swinkit.serve.errors import ServeError, install_error_handlers
from swinkit.serve.fetch import Resolver, system_resolver
from swinkit.serve.metrics import (
    ACCESS_LOGGER,
    CONTENT_TYPE,
    AccessLogMiddleware,
    MetricsMiddleware,
    ServeMetrics,
)
from swinkit.serve.schemas import ErrorResponse, InfoResponse, ScoreRequest, ScoreResult
from swinkit.serve.scoring import RAW_IMAGE_TYPES
from swinkit.serve.service import ScoringService
from swinkit.serve.settings import ServeSettings
from swinkit.serve.state import FailureHandler, ServeState

DOCS_ASSETS = "/docs-assets"  # Swagger UI and ReDoc scripts, styles and icon
_ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorResponse, "description": text}
    for status, text in {
        400: "malformed JSON or an unusable image (index names it)",
        408: "the body did not arrive in time",
        413: "body, image count or download over its limit",
        415: "the body is neither JSON nor one of the image types",
        422: "the body does not follow the schema",
        503: "overloaded or shutting down (see Retry-After)",
    }.items()
}
_RAW_IMAGE = {"schema": {"type": "string", "format": "binary"}}
_REQUEST_BODY = {
    "requestBody": {
        "required": True,
        "description": "the Azure ML JSON body, or one encoded image as the raw body",
        "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/ScoreRequest"}},
            **{media: _RAW_IMAGE for media in RAW_IMAGE_TYPES},
        },
    }
}


def _state(request: Request) -> ServeState:
    state = getattr(request.app.state, "serve", None)
    if state is None:  # the lifespan has not run
        raise ServeError(503, "not_ready", "the server has not started", retry_after=1)
    return state


def _add_routes(app: FastAPI, metrics: ServeMetrics) -> None:
    @app.post("/score", responses={200: {"model": list[ScoreResult]}, **_ERRORS}, openapi_extra=_REQUEST_BODY)
    async def score(request: Request) -> JSONResponse:
        """Score images: one result per image, in input order."""
        return JSONResponse(await _state(request).check_ready().score(request))

    @app.get("/health", responses={503: {"model": ErrorResponse}})
    async def health(request: Request) -> dict[str, str]:
        """Liveness: the process answers (also while the model loads); 503 if the model failed to load."""
        _state(request).check_alive()
        return {"status": "ok"}

    @app.get("/ready", responses={503: {"model": ErrorResponse}})
    async def ready(request: Request) -> dict[str, str]:
        """Readiness: the model is loaded and warmed up, and the server is not shutting down."""
        _state(request).check_ready()
        return {"status": "ready"}

    @app.get("/metrics", response_class=PlainTextResponse)
    async def prometheus() -> PlainTextResponse:
        """Prometheus metrics (text exposition format)."""
        return PlainTextResponse(metrics.render(), media_type=CONTENT_TYPE)

    @app.get("/info", response_model=InfoResponse)
    async def info(request: Request) -> dict[str, Any]:
        """The served model: task, labels, preprocessing, limits."""
        return _state(request).info()


def _served_task_results(schema: dict[str, Any], result: type[BaseModel]) -> None:
    """Make ``/score``'s 200 answer a list of ``result``, the served task's response model."""
    results = TypeAdapter(list[result]).json_schema(ref_template="#/components/schemas/{model}")
    schema["components"]["schemas"].update(results.pop("$defs", {}))
    answer = schema["paths"]["/score"]["post"]["responses"]["200"]["content"]["application/json"]
    answer["schema"] = {**results, "title": f"{result.__name__} per image, in input order"}


def _openapi(app: FastAPI, service: ScoringService | None) -> dict[str, Any]:
    """FastAPI's schema plus the ``/score`` request body (read by hand, to bound its size) and, once the
    model is known, the served task's result as the ``/score`` answer (every task's shape until then)."""
    if app.openapi_schema is not None:
        return app.openapi_schema
    schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
    body = ScoreRequest.model_json_schema(ref_template="#/components/schemas/{model}")
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    components.update(body.pop("$defs", {}))
    components["ScoreRequest"] = body
    state = getattr(app.state, "serve", None)
    service = service or getattr(state, "service", None)
    result = getattr(service, "response_model", None)  # a hand-made ScoringService may not declare one
    if result is not None:
        _served_task_results(schema, result)
    if service is not None:
        app.openapi_schema = schema
    return schema


def _log_level(name: str) -> int:
    """The ``logging`` level of a uvicorn level name (uvicorn's ``trace`` is below DEBUG)."""
    return logging.getLevelNamesMapping().get(name.upper(), logging.DEBUG)


def _register_gauges(app: FastAPI, metrics: ServeMetrics) -> None:
    def reader(name: str) -> Callable[[], float]:
        return lambda: app.state.serve.gauges()[name] if hasattr(app.state, "serve") else 0.0

    metrics.add_gauge("swinkit_queue_depth", "Images waiting for a batch.", reader("queue"))
    metrics.add_gauge("swinkit_requests_in_progress", "Scoring requests being handled.", reader("active"))
    metrics.add_gauge("swinkit_ready", "1 when the model is loaded and warmed up.", reader("ready"))
    metrics.add_info(
        "swinkit_model_info",
        "The served model's runtime and precision (value 1).",
        lambda: app.state.serve.runtime_labels() if hasattr(app.state, "serve") else None,
    )


def create_app(
    settings: ServeSettings,
    *,
    service: ScoringService | None = None,
    resolver: Resolver = system_resolver,
    on_failure: FailureHandler | None = None,
) -> FastAPI:
    """The endpoint for ``settings``. ``service`` replaces loading ``settings.model``, ``resolver`` resolves
    URL hosts, ``on_failure(error)`` is called if the model cannot be loaded."""
    metrics = ServeMetrics(settings.max_batch_size)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        logging.getLogger(ACCESS_LOGGER).setLevel(_log_level(settings.log_level))
        state = app.state.serve = ServeState(settings, metrics)
        loading = asyncio.create_task(state.load(service, resolver, on_failure))
        try:
            yield
        finally:
            loading.cancel()
            with suppress(asyncio.CancelledError):
                await loading
            await state.stop()

    app = FastAPIOffline(
        static_url=DOCS_ASSETS,
        title="swinkit",
        version=__version__,
        description="Swin Transformer real-time endpoint (Azure ML scoring schema).",
        lifespan=lifespan,
    )
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    app.add_middleware(AccessLogMiddleware)
    install_error_handlers(app)
    _add_routes(app, metrics)
    _register_gauges(app, metrics)
    app.openapi = lambda: _openapi(app, service)  # type: ignore[method-assign]
    return app
