"""The public surface of ``natroute.routing`` is pinned (websockets test_exports.py style).

Adding or removing a public name must be a deliberate change to this file.
"""

from __future__ import annotations

import importlib
import pkgutil

import pytest

import natroute.routing as routing

CONSTANTS = {
    "BEACON_CACHE_FILENAME": "beacons.json",
    "BEACON_REFRESH_INTERVAL": 60.0,
    "BEACON_REFRESH_JITTER": 10.0,
    "BLACKHOLE_MISSES_REQUIRED": 3,
    "DIRECT_BLACKHOLE_THRESHOLD": 8.0,
    "DIRECT_CLEARS_REQUIRED": 3,
    "MAX_RELAY_PEERS": 4096,
    "SEND_ERR_THRESHOLD": 3,
}

TYPES = [
    "Addr",
    "BeaconCacheEntry",
    "BeaconLister",
    "BeaconSelectionState",
    "BeaconSource",
    "BlackholeCheck",
    "CounterTarget",
    "ListSource",
    "LocalNodeIDFn",
    "Manager",
    "ManagerConfig",
    "PeerRouting",
    "PickReason",
    "RefreshAction",
    "RefreshDecision",
    "RefreshOutcome",
    "RefreshStep",
    "RefreshTick",
    "RelayAdmission",
    "RttProber",
    "SendErrorCount",
    "SendOutcome",
    "SocketSender",
]

ERRORS = [
    "CacheError",
    "DiscoveryError",
    "NoAddressError",
    "RegistryError",
    "ResolveError",
    "RoutingError",
    "SocketNotSetError",
    "UsageError",
    "WireError",
]

#: Not a RoutingError: the socket's OSError, re-raised with the path taken.
OS_ERRORS = ["SendError"]

FUNCTIONS = [
    "beacon_cache_path",
    "clean_beacon_list",
    "compute_refresh_decision",
    "discover_endpoint",
    "fetch_beacon_list",
    "filter_unreachable",
    "first_beacon",
    "fnv1a32",
    "initial_jitter",
    "is_icmp_unreachable",
    "is_unreachable_beacon_host",
    "load_beacon_cache",
    "load_beacon_cache_entry",
    "lookup_target",
    "merge_beacon_lists",
    "parse_beacon_list",
    "parse_discover_reply",
    "pick_beacon",
    "pick_beacon_with_rtt",
    "pick_resolved",
    "probe_beacon_rtt",
    "refresh_tick",
    "resolve_udp_addr",
    "save_beacon_cache",
]

PUBLIC = [*CONSTANTS, *TYPES, *ERRORS, *OS_ERRORS, *FUNCTIONS]

MODULES = sorted(
    f"{routing.__name__}.{info.name}" for info in pkgutil.iter_modules(routing.__path__)
)


def test_all_is_the_pinned_surface() -> None:
    assert sorted(routing.__all__) == sorted(PUBLIC)
    assert len(routing.__all__) == len(set(routing.__all__))


@pytest.mark.parametrize("name", PUBLIC)
def test_every_name_importable(name: str) -> None:
    namespace: dict[str, object] = {}
    exec(f"from natroute.routing import {name}", namespace)
    assert namespace[name] is getattr(routing, name)


@pytest.mark.parametrize(("name", "value"), CONSTANTS.items())
def test_constant_values(name: str, value: object) -> None:
    constant = getattr(routing, name)
    assert constant == value
    assert type(constant) is type(value)


@pytest.mark.parametrize("name", ERRORS)
def test_errors_share_the_root(name: str) -> None:
    assert issubclass(getattr(routing, name), routing.RoutingError)


def test_send_error_is_an_os_error() -> None:
    assert issubclass(routing.SendError, OSError)
    assert not issubclass(routing.SendError, routing.RoutingError)


def test_value_errors() -> None:
    assert issubclass(routing.WireError, ValueError)
    assert issubclass(routing.UsageError, ValueError)


def test_modules_discovered() -> None:
    short = {m.rsplit(".", 1)[1] for m in MODULES}
    expected = {"addr", "cache", "config", "constants", "discover", "errors", "manager"}
    expected |= {"refresh", "resolve", "selection", "types", "wire"}
    assert short == expected


@pytest.mark.parametrize("module_name", MODULES)
def test_every_module_declares_all(module_name: str) -> None:
    module = importlib.import_module(module_name)
    names = getattr(module, "__all__", None)
    assert isinstance(names, list), f"{module_name} has no __all__ list"
    assert len(names) == len(set(names))
    for name in names:
        assert hasattr(module, name), f"{module_name}.__all__ lists missing {name!r}"
    assert module.__doc__, f"{module_name} has no docstring"


def test_package_reexports_come_from_submodules() -> None:
    owners: dict[str, str] = {}
    for module_name in MODULES:
        module = importlib.import_module(module_name)
        for name in module.__all__:
            owners.setdefault(name, module_name)
    for name in routing.__all__:
        assert name in owners, f"{name} is not declared in any submodule's __all__"
