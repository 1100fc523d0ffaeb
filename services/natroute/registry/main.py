"""``natroute-registry``: settings from env and flags, then uvicorn.

Flags override ``NATROUTE_REGISTRY_*`` environment variables. The listening
socket is bound and the database opened here, before uvicorn starts, so a
taken port or an unusable database ends the process at once with one line
naming the setting (status 2), and ``--listen 127.0.0.1:0`` works: the bound
address is logged (``registry_listening``) and, with ``--port-file PATH``,
the port number is written to ``PATH`` (atomically, via a temporary file and
rename) once the socket is listening.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import uvicorn
from pydantic import ValidationError

from natroute._service.logging import configure_logging
from natroute._service.run import bind_tcp, run

from .app import create_app
from .backends import open_store
from .postgres import redact_url
from .settings import ENV_PREFIX, Settings
from .store import StoreError

__all__ = ["build_settings", "main", "parse_args"]

_log = logging.getLogger(__name__)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse the command line; unset flags stay ``None`` so env values survive."""
    p = argparse.ArgumentParser(
        prog="natroute-registry",
        description=f"natroute registry service (env prefix {ENV_PREFIX})",
        argument_default=None,
    )
    p.add_argument("--listen", help="HOST:PORT to listen on (default 0.0.0.0:9000)")
    p.add_argument("--db", help="SQLite database path (default registry.db)")
    p.add_argument("--database-url", help="postgresql://... to use PostgreSQL instead of SQLite")
    p.add_argument("--database-pool-size", type=int, help="PostgreSQL connections (10)")
    p.add_argument("--key-cache-size", type=int, help="node keys kept in memory (131072)")
    p.add_argument("--token", help="operator bearer token (required unless --dev)")
    p.add_argument("--dev", action="store_const", const=True, help="dev mode: allow a weak token")
    p.add_argument(
        "--allow-local-endpoints",
        type=lambda v: v.lower() in ("1", "true", "yes", "on"),
        help="accept loopback/link-local node addresses: true|false (default: dev mode)",
    )
    p.add_argument("--beacon-addr", help="HOST:PORT handed out for relay_only nodes")
    p.add_argument("--node-ttl", type=float, help="seconds a node stays resolvable (90)")
    p.add_argument("--beacon-ttl", type=float, help="seconds a beacon stays listed (60)")
    p.add_argument("--retention", type=float, help="seconds before silent records are purged")
    p.add_argument("--signature-skew", type=float, help="accepted clock skew in seconds (60)")
    p.add_argument("--sqlite-synchronous", choices=["FULL", "NORMAL"], help="default FULL")
    p.add_argument("--max-body-bytes", type=int, help="request body limit (16384)")
    p.add_argument("--register-rate", type=float, help="registrations/s per client IP (0.5)")
    p.add_argument("--register-burst", type=int, help="registration burst per client IP (10)")
    p.add_argument("--rate-limit-clients", type=int, help="client IPs tracked (10000)")
    p.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    p.add_argument("--port-file", help="write the bound port here once listening")
    return p.parse_args(argv)


def build_settings(args: argparse.Namespace) -> Settings:
    """Environment first, then every flag that was given (flags win)."""
    overrides: dict[str, Any] = {k: v for k, v in vars(args).items() if v is not None}
    return Settings(**overrides)


def _write_port_file(path: Path, port: int) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(f"{port}\n")
    os.replace(tmp, path)


def _database(settings: Settings) -> str:
    url = settings.postgres_url()
    if url is not None:
        return f"{ENV_PREFIX}DATABASE_URL (--database-url) {redact_url(url)}"
    return f"{ENV_PREFIX}DB (--db) {settings.db}"


async def serve(settings: Settings) -> None:
    """Open the store, bind, and serve until SIGINT/SIGTERM.

    Raises:
        StoreError: the database cannot be opened (or is too new).
        OSError: the listen address cannot be bound.
    """
    store = await open_store(settings, clock=time.time)
    try:
        sock = bind_tcp(settings.listen)
    except OSError:
        await store.close()
        raise
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


def main(argv: Sequence[str] | None = None) -> int:
    """Run the registry until SIGINT/SIGTERM.

    Returns:
        0 on a clean stop, 2 on bad settings (a weak operator token included),
        a database that cannot be opened or a listen address that cannot be bound.
    """
    args = parse_args(argv)
    try:
        settings = build_settings(args)
    except ValidationError as exc:
        print(f"natroute-registry: invalid settings:\n{exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level)
    try:
        run(serve(settings))
    except StoreError as exc:
        _log.debug("registry_start_failed", exc_info=exc)
        print(
            f"natroute-registry: cannot open the database {_database(settings)}: {exc}",
            file=sys.stderr,
        )
        return 2
    except OSError as exc:
        _log.debug("registry_start_failed", exc_info=exc)
        print(
            f"natroute-registry: cannot listen on {ENV_PREFIX}LISTEN (--listen) "
            f"{settings.listen}: {exc.strerror or exc}",
            file=sys.stderr,
        )
        return 2
    _log.info("registry_stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
