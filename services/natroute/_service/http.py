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
    "ErrorRenderer",
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


class ErrorRenderer:
    """Every exception as the one error body, in one table.

    :class:`ApiError` carries its status and code; request validation becomes
    422 ``invalid_request`` (400 ``malformed_json``); Starlette's HTTP errors
    keep their status; a service's domain errors map through ``codes``;
    anything else is a logged 500 ``internal``.

    Args:
        codes: domain exception class → ``(status, code)``; the exception's
            text is the message (the most specific class in its MRO wins).
        on_error: called with each error code (e.g. to count it in a metric).
        log_event: the log event of an unexpected exception (500).
    """

    def __init__(
        self,
        codes: Mapping[type[Exception], tuple[int, str]] | None = None,
        on_error: Callable[[str], None] | None = None,
        log_event: str = "request_failed",
    ) -> None:
        self.codes = dict(codes or {})
        self._count = on_error if on_error is not None else (lambda code: None)
        self._log_event = log_event

    def response(self, exc: Exception, path: str) -> JSONResponse:
        """The answer to a request to ``path`` that failed with ``exc``."""
        if isinstance(exc, ApiError):
            return self._respond(exc.status, exc.code, exc.message, exc.headers)
        if isinstance(exc, RequestValidationError):
            return self._respond(*describe_validation(exc))
        if isinstance(exc, StarletteHTTPException):
            code = _HTTP_CODES.get(exc.status_code, f"http_{exc.status_code}")
            message = exc.detail if isinstance(exc.detail, str) else code.replace("_", " ")
            return self._respond(exc.status_code, code, message, exc.headers)
        for kind in type(exc).__mro__:
            if kind in self.codes:
                status, code = self.codes[kind]
                return self._respond(status, code, str(exc))
        _log.error(self._log_event, exc_info=exc, extra={"path": path})
        return self._respond(500, "internal", "internal error")

    def _respond(
        self, status: int, code: str, message: str, headers: Mapping[str, str] | None = None
    ) -> JSONResponse:
        self._count(code)
        return error_response(status, code, message, headers)


def install_error_handlers(
    app: FastAPI,
    *,
    codes: Mapping[type[Exception], tuple[int, str]] | None = None,
    on_error: Callable[[str], None] | None = None,
    log_event: str = "request_failed",
) -> ErrorRenderer:
    """Route every exception the app raises to the one error body shape.

    Args: those of :class:`ErrorRenderer`.

    Returns:
        The renderer, for code that answers beside the app's routes.
    """
    renderer = ErrorRenderer(codes, on_error, log_event)

    async def handle(request: Request, exc: Exception) -> JSONResponse:
        return renderer.response(exc, request.url.path)

    for kind in (ApiError, RequestValidationError, StarletteHTTPException, *renderer.codes):
        app.add_exception_handler(kind, handle)
    app.add_exception_handler(Exception, handle)
    return renderer
