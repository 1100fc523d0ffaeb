"""OpenAPI documentation pages that work offline.

FastAPI's own ``/docs`` and ``/redoc`` load Swagger UI and ReDoc from a CDN,
so they are blank on a machine without internet access (a lab, a cluster
with egress closed). :func:`mount_offline_docs` serves the same pages with
the JavaScript and CSS bundled by the ``fastapi-offline`` package (from PyPI,
no code of it is used, only its ``static/`` files), mounted under
``/static/docs``; every URL in the pages is relative to the app.

Create the app with ``docs_url=None, redoc_url=None`` and call this once::

    app = FastAPI(title=..., docs_url=None, redoc_url=None)
    mount_offline_docs(app)
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path
from typing import Final

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

__all__ = ["ASSETS", "STATIC_PATH", "mount_offline_docs"]

#: Where the bundled assets are served.
STATIC_PATH: Final = "/static/docs"
#: The asset files the pages load (all present in the bundle).
ASSETS: Final = ("swagger-ui-bundle.js", "swagger-ui.css", "redoc.standalone.js", "favicon.png")


def _asset_dir() -> Path:
    return Path(str(files("fastapi_offline") / "static"))


def mount_offline_docs(
    app: FastAPI, *, docs_url: str = "/docs", redoc_url: str | None = "/redoc"
) -> None:
    """Serve Swagger UI at ``docs_url`` and ReDoc at ``redoc_url`` from local assets.

    Raises:
        ValueError: the app still has FastAPI's CDN pages, or has no OpenAPI URL.
    """
    if app.docs_url is not None or app.redoc_url is not None:
        raise ValueError("create the app with docs_url=None and redoc_url=None")
    if app.openapi_url is None:
        raise ValueError("the app serves no OpenAPI schema")
    openapi_url = app.openapi_url
    app.mount(STATIC_PATH, StaticFiles(directory=_asset_dir()), name="docs-static")

    def static(request: Request, name: str) -> str:
        return f"{request.scope.get('root_path', '')}{STATIC_PATH}/{name}"

    @app.get(docs_url, include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=f"{request.scope.get('root_path', '')}{openapi_url}",
            title=f"{app.title} - API",
            swagger_js_url=static(request, "swagger-ui-bundle.js"),
            swagger_css_url=static(request, "swagger-ui.css"),
            swagger_favicon_url=static(request, "favicon.png"),
            oauth2_redirect_url=None,
            # No validator badge: Swagger UI would fetch it from validator.swagger.io.
            swagger_ui_parameters={"validatorUrl": None, **(app.swagger_ui_parameters or {})},
        )

    if redoc_url is not None:

        @app.get(redoc_url, include_in_schema=False)
        async def redoc(request: Request) -> HTMLResponse:
            return get_redoc_html(
                openapi_url=f"{request.scope.get('root_path', '')}{openapi_url}",
                title=f"{app.title} - ReDoc",
                redoc_js_url=static(request, "redoc.standalone.js"),
                redoc_favicon_url=static(request, "favicon.png"),
                with_google_fonts=False,
            )
