"""The blocking client is generated from the async one and must stay so."""

from __future__ import annotations

import inspect
import subprocess
import sys
from pathlib import Path

from natroute.registry.client import AsyncRegistryClient, RegistryClient

ROOT = Path(__file__).resolve().parents[2]


def test_sync_client_is_up_to_date() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / ".ci" / "unasync"), "--check"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stderr


def test_both_clients_have_the_same_methods() -> None:
    def api(cls: type) -> dict[str, list[str]]:
        return {
            name: list(inspect.signature(fn).parameters)
            for name, fn in vars(cls).items()
            if callable(fn) and not name.startswith("_")
        }

    async_api = api(AsyncRegistryClient)
    sync_api = api(RegistryClient)
    async_api["close"] = async_api.pop("aclose")
    assert sync_api == async_api
    for name in sync_api:
        assert not inspect.iscoroutinefunction(getattr(RegistryClient, name)), name
        if name != "close":
            assert inspect.iscoroutinefunction(getattr(AsyncRegistryClient, name)), name
