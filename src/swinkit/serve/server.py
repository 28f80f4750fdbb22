"""Running the endpoint under uvicorn."""

from __future__ import annotations

import uvicorn

from swinkit.serve.app import create_app
from swinkit.serve.service import ScoringService
from swinkit.serve.settings import ServeSettings
from swinkit.serve.state import load_service


def load_model(settings: ServeSettings) -> ScoringService:
    """The service for ``settings.model``; a source that cannot be loaded is one ValueError saying why."""
    try:
        return load_service(settings)
    except (ValueError, FileNotFoundError, TypeError) as e:
        raise ValueError(f"could not load {settings.model}: {e}") from None


def run_server(settings: ServeSettings, service: ScoringService | None = None) -> None:
    """Serve ``service`` (default: ``load_model(settings)``) until SIGINT/SIGTERM; shutdown lets in-flight
    requests finish.

    The model is loaded before the port opens, so a bad source fails before any server output; the warm-up
    batch runs in the background (``GET /ready`` answers 200 after it); if it fails the server stops and a
    ValueError says why.
    """
    service = service if service is not None else load_model(settings)
    failures: list[BaseException] = []

    def stop_on_failure(error: BaseException) -> None:
        failures.append(error)
        server.should_exit = True

    app = create_app(settings, service=service, on_failure=stop_on_failure)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        timeout_graceful_shutdown=settings.graceful_timeout_s,
        access_log=False,
        server_header=False,
    )
    server = uvicorn.Server(config)
    server.run()
    if failures:
        raise ValueError(f"could not load {settings.model}: {failures[0]}") from failures[0]
