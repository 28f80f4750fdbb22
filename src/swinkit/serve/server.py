"""Running the endpoint under uvicorn."""

from __future__ import annotations

import uvicorn

from swinkit.serve.app import create_app
from swinkit.serve.settings import ServeSettings


def run_server(settings: ServeSettings) -> None:
    """Serve ``settings.model`` until SIGINT/SIGTERM; shutdown lets in-flight requests finish.

    The port opens at once and the model loads in the background; if it cannot be loaded the server stops
    and a ValueError says why.
    """
    failures: list[BaseException] = []

    def stop_on_failure(error: BaseException) -> None:
        failures.append(error)
        server.should_exit = True

    app = create_app(settings, on_failure=stop_on_failure)
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
