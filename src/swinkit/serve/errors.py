"""The endpoint's errors: every refusal is a JSON ``{"error": {"message", "index", "code"}}`` with a 4xx/5xx.

``index`` is the position (from 0) of the offending image in the request's ``data`` list, or null when the
fault is the request as a whole.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

log = logging.getLogger(__name__)

_HTTP_CODES = {404: "not_found", 405: "method_not_allowed"}


class ServeError(Exception):
    """A request the endpoint refuses: HTTP ``status``, machine-readable ``code``, offending item ``index``."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        index: int | None = None,
        retry_after: int | None = None,
        close: bool = False,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.index = index
        self.retry_after = retry_after
        self.close = close  # close the connection after answering (the rest of the body is not read)

    def response(self) -> JSONResponse:
        """The JSON error answer; 503 answers carry ``Retry-After``."""
        headers = {"Retry-After": str(self.retry_after)} if self.retry_after is not None else {}
        if self.close:
            headers["Connection"] = "close"
        body = {"error": {"message": self.message, "index": self.index, "code": self.code}}
        return JSONResponse(body, status_code=self.status, headers=headers)


async def _serve_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ServeError)
    return exc.response()


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    code = _HTTP_CODES.get(exc.status_code, "http_error")
    message = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
    response = ServeError(exc.status_code, code, message).response()
    response.headers.update(exc.headers or {})
    return response


async def _unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    log.error("unexpected error answering %s %s", request.method, request.url.path, exc_info=exc)
    return ServeError(500, "internal_error", "the server failed to answer this request").response()


def install_error_handlers(app: FastAPI) -> None:
    """Answer ServeError, routing errors (404/405) and anything unexpected (500) in the JSON error format."""
    app.add_exception_handler(ServeError, _serve_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected_error)
