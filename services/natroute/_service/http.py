"""One error body for every natroute HTTP API, and the handlers that produce it.

Every non-2xx answer is ``{"error": {"code": "snake_case", "message": "..."}}``
(:class:`ErrorBody`). :func:`install_error_handlers` routes every exception
to that shape in one place: :class:`ApiError` carries its own status and
code, a service maps its domain errors with ``codes``, request validation
becomes 422 ``invalid_request`` (400 ``malformed_json`` for a body that is not
JSON), Starlette's own 404/405 keep their status, and anything unexpected is
a logged 500 ``internal`` whose message reveals nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Final

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

__all__ = [
    "ApiError",
    "ErrorBody",
    "ErrorDetail",
    "describe_validation",
    "error_response",
    "install_error_handlers",
]

_log = logging.getLogger(__name__)
_MAX_MESSAGE: Final = 500
_HTTP_CODES: Final = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "body_too_large",
    415: "unsupported_media_type",
}


class ErrorDetail(BaseModel):
    """Machine-readable ``code`` (snake_case) and a human ``message``."""

    code: str
    message: str


class ErrorBody(BaseModel):
    """Every non-2xx response: ``{"error": {"code": ..., "message": ...}}``."""

    error: ErrorDetail


class ApiError(Exception):
    """A refusal with a status code, a snake_case code and a message."""

    def __init__(
        self, status: int, code: str, message: str, headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = dict(headers or {})


def error_response(
    status: int, code: str, message: str, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    """The JSON error response (the message is cut at 500 characters)."""
    body = {"error": {"code": code, "message": message[:_MAX_MESSAGE]}}
    return JSONResponse(body, status_code=status, headers=dict(headers or {}))


def describe_validation(exc: RequestValidationError) -> tuple[int, str, str]:
    """``(status, code, message)`` of a request that failed validation.

    The message names the first three fields and why (``lan_addrs.1: ...``).
    """
    errors = list(exc.errors())
    if any(err.get("type") == "json_invalid" for err in errors):
        return 400, "malformed_json", "request body is not valid JSON"
    if any(tuple(err.get("loc", ())) == ("body",) for err in errors):
        message = "request body must be a JSON object (Content-Type: application/json)"
        return 422, "invalid_request", message
    parts = []
    for err in errors[:3]:
        loc = ".".join(str(p) for p in err.get("loc", ()) if p != "body") or "body"
        parts.append(f"{loc}: {err.get('msg', 'invalid')}")
    more = f" (+{len(errors) - 3} more)" if len(errors) > 3 else ""
    return 422, "invalid_request", "; ".join(parts) + more


def install_error_handlers(
    app: FastAPI,
    *,
    codes: Mapping[type[Exception], tuple[int, str]] | None = None,
    on_error: Callable[[str], None] | None = None,
    log_event: str = "request_failed",
) -> None:
    """Route every exception to the one error body shape.

    Args:
        app: the application.
        codes: domain exception class → ``(status, code)``; the exception's
            text is the message (the most specific class in its MRO wins).
        on_error: called with each error code (e.g. to count it in a metric).
        log_event: the log event of an unexpected exception (500).
    """
    mapped = dict(codes or {})
    count = on_error if on_error is not None else (lambda code: None)

    def respond(
        status: int, code: str, message: str, headers: Mapping[str, str] | None = None
    ) -> JSONResponse:
        count(code)
        return error_response(status, code, message, headers)

    async def on_api_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ApiError)
        return respond(exc.status, exc.code, exc.message, exc.headers)

    async def on_validation(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        return respond(*describe_validation(exc))

    async def on_http(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        code = _HTTP_CODES.get(exc.status_code, f"http_{exc.status_code}")
        message = exc.detail if isinstance(exc.detail, str) else code.replace("_", " ")
        return respond(exc.status_code, code, message, exc.headers)

    async def on_domain(request: Request, exc: Exception) -> JSONResponse:
        for kind in type(exc).__mro__:
            if kind in mapped:
                status, code = mapped[kind]
                return respond(status, code, str(exc))
        return await on_unexpected(request, exc)

    async def on_unexpected(request: Request, exc: Exception) -> JSONResponse:
        _log.error(log_event, exc_info=exc, extra={"path": request.url.path})
        return respond(500, "internal", "internal error")

    app.add_exception_handler(ApiError, on_api_error)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(StarletteHTTPException, on_http)
    for kind in mapped:
        app.add_exception_handler(kind, on_domain)
    app.add_exception_handler(Exception, on_unexpected)
