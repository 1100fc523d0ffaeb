"""``natroute-beacon``: answer UDP at once, then build Settings, configure logging, run.

Start-up order (beacon README "Start-up"): the UDP listen address is bound
and an :class:`~natroute.beacon.early.EarlyResponder` answers discovers
before anything heavy is imported; then the settings (flags, env, config
file: :mod:`natroute._service.cli`) are built, logging is configured and the
service takes the socket over. Uses
uvloop when it is installed. SIGINT/SIGTERM stop the service cleanly (exit
status 0).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Coroutine, Sequence
from typing import TYPE_CHECKING, Any

from .early import EarlyResponder

if TYPE_CHECKING:
    from .settings import Settings

__all__ = ["main", "serve"]


async def serve(settings: Settings, early: EarlyResponder | None = None) -> None:
    """Run a beacon until SIGINT or SIGTERM."""
    from natroute._service.run import wait_for_signal

    from .service import BeaconService

    async with BeaconService(settings, early=early):
        await wait_for_signal()


def main(argv: Sequence[str] | None = None) -> int:
    """Console-script entry point.

    Returns:
        0 after a clean stop, 2 for settings that cannot be used (one line on stderr).
    """
    args = list(sys.argv[1:] if argv is None else argv)
    early = EarlyResponder.start(args, os.environ)
    try:
        from natroute._service.cli import service_main

        from .settings import DESCRIPTION, Settings

        def start(settings: Settings) -> Coroutine[Any, Any, None]:
            nonlocal early
            handed, early = early, None
            return serve(settings, handed)

        # uvloop when installed
        return service_main(
            Settings, args, prog="natroute-beacon", description=DESCRIPTION, serve=start
        )
    finally:
        if early is not None:
            early.close()


if __name__ == "__main__":
    sys.exit(main())
