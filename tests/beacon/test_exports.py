"""Every beacon module declares ``__all__``; the package surface is pinned."""

from __future__ import annotations

import importlib
import pkgutil

import pytest

import natroute.beacon as beacon

MODULES = sorted(m.name for m in pkgutil.iter_modules(beacon.__path__, "natroute.beacon."))


@pytest.mark.parametrize("name", MODULES)
def test_module_declares_all_and_names_exist(name: str) -> None:
    module = importlib.import_module(name)
    assert module.__doc__
    assert isinstance(module.__all__, list)
    for export in module.__all__:
        assert hasattr(module, export), f"{name}.{export}"


def test_package_surface() -> None:
    assert sorted(beacon.__all__) == [
        "BeaconConfig",
        "BeaconCore",
        "BeaconSnapshot",
        "DiscoverAuthError",
        "DropReason",
        "Outgoing",
        "RateLimit",
        "SignedDiscover",
        "sign_discover",
        "verify_discover",
    ]
    assert "natroute.beacon.testing" in MODULES
