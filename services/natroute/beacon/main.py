"""``natroute-beacon``: build Settings (env + flags), configure logging, run.

Uses uvloop when it is installed. SIGINT/SIGTERM stop the service cleanly
(exit status 0).
"""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from pydantic import ValidationError

from natroute._service.logging import configure_logging

from .service import BeaconService
from .settings import Settings, build_settings

__all__ = ["main", "serve"]


async def serve(settings: Settings) -> None:
    """Run a beacon until SIGINT or SIGTERM."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        async with BeaconService(settings):
            await stop.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


def _runner() -> Callable[[Coroutine[Any, Any, None]], None]:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        return asyncio.run

    def run(coro: Coroutine[Any, Any, None]) -> None:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(coro)

    return run


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
    _runner()(serve(settings))
    return 0


if __name__ == "__main__":
    sys.exit(main())
