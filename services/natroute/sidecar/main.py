"""``natroute-sidecar``: settings from env and flags, then the sidecar until a signal."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from collections.abc import Sequence

from pydantic import ValidationError

from natroute._service.logging import configure_logging
from natroute._service.run import EmbeddedHttpServer, run, wait_for_signal
from natroute._service.settings import describe_settings_error

from .admin import create_app
from .identity import IdentityError
from .service import Sidecar, SidecarError
from .settings import Settings, build_settings

__all__ = ["main", "serve"]

_log = logging.getLogger(__name__)


async def serve(settings: Settings) -> None:
    """Run a sidecar (and its admin API) until SIGINT or SIGTERM.

    Raises:
        SidecarError: start-up failed (the message names the setting to change).
    """
    try:
        sidecar = Sidecar(settings)
    except OSError as exc:  # the identity directory cannot be created or written
        raise SidecarError(
            f"cannot use the identity file {settings.identity}: {exc.strerror or exc} "
            "(set --identity / NATROUTE_SIDECAR_IDENTITY to a writable path)"
        ) from exc
    http: EmbeddedHttpServer | None = None
    try:
        if settings.admin_listen:
            # first, so /healthz answers (and /readyz says 503) during start-up
            http = EmbeddedHttpServer(create_app(sidecar))
            try:
                addr = await http.start(settings.admin_listen)
            except OSError as exc:
                http = None
                raise SidecarError(
                    f"cannot bind admin_listen {settings.admin_listen}: {exc.strerror or exc} "
                    "(set --admin-listen / NATROUTE_SIDECAR_ADMIN_LISTEN, or 'off')"
                ) from exc
            sidecar.self_addrs.add(addr)
            _log.info("admin_listening", extra={"addr": f"{addr[0]}:{addr[1]}"})
        starting = asyncio.ensure_future(sidecar.start())
        stop = asyncio.ensure_future(wait_for_signal())
        await asyncio.wait({starting, stop}, return_when=asyncio.FIRST_COMPLETED)
        if not stop.done():
            starting.result()  # start-up errors end the process
            await stop
        else:
            starting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await starting
    finally:
        if http is not None:
            await http.stop()
        await sidecar.stop()
        _log.info("sidecar_stopped")


def main(argv: Sequence[str] | None = None) -> int:
    """Console-script entry point; 2 for invalid settings or identity."""
    try:
        settings = build_settings(sys.argv[1:] if argv is None else argv)
    except ValidationError as exc:
        detail = describe_settings_error(exc, "NATROUTE_SIDECAR_")
        print(f"natroute-sidecar: invalid settings:\n{detail}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level, fmt=settings.log_format)
    try:
        # stdlib loop: libuv stops polling a socket with IP_RECVERR errors (see run())
        run(serve(settings), use_uvloop=False)
    except (SidecarError, IdentityError) as exc:
        _log.debug("start_failed", exc_info=True)
        print(f"natroute-sidecar: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
