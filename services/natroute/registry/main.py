"""``natroute-registry``: settings from flags, env and a config file, then uvicorn.

The shared layer (:mod:`natroute._service.cli`) builds the settings. The
listening socket is bound and the database opened here, before uvicorn
starts, so a taken port or an unusable database ends the process at once
with one line naming the setting (status 2), and ``--http-listen
127.0.0.1:0`` works: the bound address is logged (``registry_listening``)
and, with ``--port-file PATH``, the port number is written to ``PATH``
(atomically, via a temporary file and rename) once the socket is listening.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import uvicorn

from natroute._service.cli import StartupError, bind_failure, service_main, setting_failure
from natroute._service.run import bind_tcp

from .app import create_app
from .backends import open_store
from .postgres import redact_url
from .settings import DESCRIPTION, Settings
from .store import Store, StoreError

__all__ = ["main", "serve"]

_log = logging.getLogger(__name__)


def _write_port_file(path: Path, port: int) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(f"{port}\n")
    os.replace(tmp, path)


def _database_failure(settings: Settings, exc: StoreError) -> StartupError:
    # The driver's own reason when there is one (not our wrapper's repetition).
    reason = str(exc.__cause__ or exc) or type(exc).__name__
    url = settings.postgres_url()
    field, value = ("database_url", redact_url(url)) if url is not None else ("db", settings.db)
    if exc.__cause__ is None:  # a readable database that this code cannot use
        remedy = "run the natroute version that wrote it, or a newer one"
    elif url is not None:
        remedy = "check the URL, that the server runs and the credentials"
    else:
        remedy = "create its directory or choose a writable path"
    return setting_failure(
        Settings, field, value, "cannot open the database", f"{reason}; {remedy}"
    )


async def _open(settings: Settings) -> Store:
    try:
        return await open_store(settings, clock=time.time)
    except StoreError as exc:
        raise _database_failure(settings, exc) from exc


async def serve(settings: Settings) -> None:
    """Open the store, bind, and serve until SIGINT/SIGTERM.

    Raises:
        StartupError: the database cannot be opened (or is too new), or the
            listen address cannot be bound.
    """
    store = await _open(settings)
    try:
        sock = bind_tcp(settings.http_listen)
    except (OSError, ValueError) as exc:
        await store.close()
        error = exc if isinstance(exc, OSError) else OSError(str(exc))
        raise bind_failure(Settings, "http_listen", settings.http_listen, error) from exc
    try:
        host, _ = settings.listen_addr()
        bound_port = int(sock.getsockname()[1])
        app = create_app(settings, store=store, close_store=True)
        _log.info(
            "registry_listening",
            extra={
                "host": host,
                "port": bound_port,
                "backend": store.backend,
                "dev": settings.dev,
            },
        )
        if settings.port_file is not None:
            _write_port_file(settings.port_file, bound_port)
        # The lifespan closes the store: uvicorn re-raises SIGTERM right after
        # its shutdown, before this function could.
        config = uvicorn.Config(app, log_config=None, access_log=False, lifespan="on")
        await uvicorn.Server(config).serve(sockets=[sock])
    finally:
        sock.close()
        await store.close()
    _log.info("registry_stopped")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the registry until SIGINT/SIGTERM.

    Returns:
        0 on a clean stop, 2 on bad settings (a weak operator token included),
        a database that cannot be opened or a listen address that cannot be bound.
    """
    return service_main(
        Settings, argv, prog="natroute-registry", description=DESCRIPTION, serve=serve
    )


if __name__ == "__main__":
    sys.exit(main())
