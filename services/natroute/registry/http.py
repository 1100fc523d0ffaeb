"""HTTP plumbing of the registry app: the request body limit.

Errors are answered by the shared handlers of :mod:`natroute._service.http`
(one body shape, ``{"error": {"code", "message"}}``); request timing by
:class:`natroute._service.metrics.RouteTimer`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from natroute._service.http import error_response

__all__ = ["BodyLimitMiddleware"]

_BODY_HEADERS: Final = frozenset({b"content-length", b"transfer-encoding"})


class BodyLimitMiddleware:
    """Refuse request bodies over ``max_bytes`` with 413 before the app reads them.

    The body is buffered (it is small by construction) so the limit holds for
    chunked uploads without ``Content-Length`` too. A request that announces
    no body (no ``Content-Length``, no ``Transfer-Encoding``: every plain GET)
    passes straight through.
    """

    def __init__(
        self, app: ASGIApp, *, max_bytes: int, on_error: Callable[[str], None] | None = None
    ) -> None:
        self._app = app
        self._max = max_bytes
        self._on_error = on_error

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        has_body = False
        for name, value in scope.get("headers", ()):
            if name == b"content-length" and (not value.isdigit() or int(value) > self._max):
                await self._refuse(scope, receive, send)
                return
            if name in _BODY_HEADERS:
                has_body = True
        if not has_body:
            await self._app(scope, receive, send)
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break  # client went away; let the app see a disconnect
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self._max:
                await self._refuse(scope, receive, send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self._app(scope, replay, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self._on_error is not None:
            self._on_error("body_too_large")
        response = error_response(413, "body_too_large", f"request body exceeds {self._max} bytes")
        await response(scope, receive, send)
