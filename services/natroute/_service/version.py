"""``natroute <version>``: what every console script's ``--version`` prints.

Its own module so the ``natroute`` command line does not load the daemons'
settings layer to answer ``--version``.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

__all__ = ["natroute_version"]


def natroute_version() -> str:
    """``natroute`` and the installed distribution's version, e.g. ``natroute 0.1.0``."""
    try:
        return f"natroute {version('natroute')}"
    except PackageNotFoundError:  # pragma: no cover - a source tree without metadata
        from natroute import __version__

        return f"natroute {__version__}"
