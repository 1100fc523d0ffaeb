"""``natroute-beacon``: build Settings (env + flags), configure logging, run.

Uses uvloop when it is installed. SIGINT/SIGTERM stop the service cleanly
(exit status 0).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from pydantic import ValidationError

from natroute._service.logging import configure_logging
from natroute._service.run import run, wait_for_signal

from .service import BeaconService
from .settings import Settings, build_settings

__all__ = ["main", "serve"]


async def serve(settings: Settings) -> None:
    """Run a beacon until SIGINT or SIGTERM."""
    async with BeaconService(settings):
        await wait_for_signal()


def main(argv: Sequence[str] | None = None) -> int:
    """Console-script entry point.

    Returns:
        0 after a clean stop, 2 for invalid settings.
    """
    try:
        settings = build_settings(argv)
    except ValidationError as exc:
        print(f"natroute-beacon: invalid settings:\n{exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level)
    run(serve(settings))  # uvloop when installed
    return 0


if __name__ == "__main__":
    sys.exit(main())
