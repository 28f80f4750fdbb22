"""Running the endpoint under uvicorn."""

from __future__ import annotations

import logging

import uvicorn

from swinkit.serve.app import create_app
from swinkit.serve.settings import ServeSettings
from swinkit.serve.state import load_service

log = logging.getLogger(__name__)


def run_server(settings: ServeSettings) -> None:
    """Load the model, then serve it until SIGINT/SIGTERM; shutdown lets in-flight requests finish.

    Raises ValueError / FileNotFoundError before listening when the model cannot be loaded.
    """
    service = load_service(settings)
    app = create_app(settings, service=service)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        timeout_graceful_shutdown=settings.graceful_timeout_s,
        access_log=False,
        server_header=False,
    )
    uvicorn.Server(config).run()
