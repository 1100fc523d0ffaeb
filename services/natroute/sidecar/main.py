"""``natroute-sidecar``: settings (flags, env, a config file), then the sidecar until a signal."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from collections.abc import Sequence

from natroute._service.cli import bind_failure, service_main, setting_failure
from natroute._service.run import EmbeddedHttpServer, wait_for_signal

from .admin import create_app
from .identity import IdentityError
from .service import Sidecar, SidecarError
from .settings import DESCRIPTION, Settings

__all__ = ["main", "serve"]

_log = logging.getLogger(__name__)


async def serve(settings: Settings) -> None:
    """Run a sidecar (and its admin API) until SIGINT or SIGTERM.

    Raises:
        StartupError: an address cannot be bound or the identity file cannot be written.
        SidecarError: start-up failed (the message names the setting to change).
    """
    try:
        sidecar = Sidecar(settings)
    except OSError as exc:  # the identity directory cannot be created or written
        reason = exc.strerror or str(exc)
        raise setting_failure(
            Settings,
            "identity",
            settings.identity,
            "cannot use the identity file",
            f"{reason}; choose a writable path",
        ) from exc
    http: EmbeddedHttpServer | None = None
    try:
        if settings.http_listen:
            # first, so /healthz answers (and /readyz says 503) during start-up
            http = EmbeddedHttpServer(create_app(sidecar))
            try:
                addr = await http.start(settings.http_listen)
            except OSError as exc:
                http = None
                raise bind_failure(Settings, "http_listen", settings.http_listen, exc) from exc
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
    """Console-script entry point; 2 for settings that cannot be used."""
    # stdlib loop: libuv stops polling a socket with IP_RECVERR errors (see run())
    return service_main(
        Settings,
        argv,
        prog="natroute-sidecar",
        description=DESCRIPTION,
        serve=serve,
        use_uvloop=False,
        failures=(SidecarError, IdentityError),
    )


if __name__ == "__main__":
    sys.exit(main())
