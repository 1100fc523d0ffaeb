"""A missing tool or service: a skip on a developer's machine, a failure in CI.

CI (``CI=true``, ``.ci/run``) installs and starts everything the suite needs,
so there a missing piece is a broken set-up, never a reason to skip.
"""

from __future__ import annotations

import os
from typing import NoReturn

import pytest

__all__ = ["missing"]


def missing(reason: str) -> NoReturn:
    """Skip the running test with ``reason``; under ``CI=true`` fail it instead."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true: {reason}")
    pytest.skip(reason)
