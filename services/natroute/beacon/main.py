"""``natroute-beacon``: answer UDP at once, then build Settings, configure logging, run.

Start-up order (beacon README "Start-up"): the UDP listen address is bound
and an :class:`~natroute.beacon.early.EarlyResponder` answers discovers
before anything heavy is imported; then the settings (env + flags) are
built, logging is configured and the service takes the socket over. Uses
uvloop when it is installed. SIGINT/SIGTERM stop the service cleanly (exit
status 0).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

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
        0 after a clean stop, 2 for invalid settings.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    early = EarlyResponder.start(args, os.environ)
    try:
        from pydantic import ValidationError

        from .settings import build_settings

        try:
            settings = build_settings(args)
        except ValidationError as exc:
            print(f"natroute-beacon: invalid settings:\n{exc}", file=sys.stderr)
            return 2
        from natroute._service.logging import configure_logging
        from natroute._service.run import run

        configure_logging(settings.log_level)
        handed, early = early, None
        run(serve(settings, handed))  # uvloop when installed
    finally:
        if early is not None:
            early.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
