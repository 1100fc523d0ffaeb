"""``natroute-registry``: settings from env and flags, then uvicorn.

Flags override ``NATROUTE_REGISTRY_*`` environment variables. The listening
socket is bound here, before uvicorn starts, so ``--listen 127.0.0.1:0`` works:
the bound address is logged (``registry_listening``) and, with
``--port-file PATH``, the port number is written to ``PATH`` (atomically,
via a temporary file and rename) once the socket is listening.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import uvicorn
from pydantic import ValidationError

from natroute._service.logging import configure_logging
from natroute._service.run import bind_tcp, run

from .app import create_app
from .settings import ENV_PREFIX, Settings

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
    p.add_argument("--token", help="operator bearer token (required unless --dev)")
    p.add_argument("--dev", action="store_const", const=True, help="dev mode: allow a weak token")
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


def main(argv: Sequence[str] | None = None) -> int:
    """Run the registry until SIGINT/SIGTERM.

    Returns:
        0 on a clean stop, 2 on bad settings (a weak operator token included).
    """
    args = parse_args(argv)
    try:
        settings = build_settings(args)
    except ValidationError as exc:
        print(f"natroute-registry: invalid settings:\n{exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level)
    app = create_app(settings)
    host, _ = settings.listen_addr()
    sock = bind_tcp(settings.listen)
    bound_port = int(sock.getsockname()[1])
    _log.info(
        "registry_listening",
        extra={"host": host, "port": bound_port, "db": str(settings.db), "dev": settings.dev},
    )
    if settings.port_file is not None:
        _write_port_file(settings.port_file, bound_port)
    config = uvicorn.Config(app, log_config=None, access_log=False, lifespan="on")
    server = uvicorn.Server(config)
    try:
        run(server.serve(sockets=[sock]))
    finally:
        sock.close()
    _log.info("registry_stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
