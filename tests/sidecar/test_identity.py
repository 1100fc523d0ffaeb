"""The node's identity on disk: keys (mode 0600), node ID and strictly increasing epochs."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from natroute.sidecar.identity import IdentityError, NodeState, load_or_create_identity


def mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_identity_is_created_private_and_reloaded_identical(tmp_path: Path) -> None:
    path = tmp_path / "state" / "identity.json"
    first = load_or_create_identity(str(path))
    assert mode(path) == 0o600
    assert mode(path.parent) == 0o700
    assert len(first.ed25519_public) == 32
    assert len(first.x25519_public) == 32
    again = load_or_create_identity(str(path))
    assert again.ed25519_public == first.ed25519_public
    assert again.x25519_public == first.x25519_public
    assert again.path == str(path)
    assert [p.name for p in path.parent.iterdir()] == ["identity.json"]  # no temp file left


def test_identity_in_the_working_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    ident = load_or_create_identity("identity.json")
    assert mode(tmp_path / "identity.json") == 0o600
    assert load_or_create_identity("identity.json").x25519_public == ident.x25519_public
    state = NodeState("identity.json")
    assert state.path == os.path.join(".", "node.json")
    state.set_node_id(7)
    assert NodeState("identity.json").node_id == 7


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"\xff\xfe",
        b"[]",
        b"{}",
        b'{"ed25519": "!!!", "x25519": "AAAA"}',
        b'{"ed25519": "AAAA", "x25519": "AAAA"}',
        b'{"ed25519": 1, "x25519": 2}',
    ],
)
def test_invalid_identity_file_is_an_identity_error(tmp_path: Path, body: bytes) -> None:
    path = tmp_path / "identity.json"
    path.write_bytes(body)
    with pytest.raises(IdentityError, match="invalid identity file"):
        load_or_create_identity(str(path))
    assert path.read_bytes() == body  # never overwritten


def test_failed_write_leaves_no_temp_file(tmp_path: Path) -> None:
    # "dir/" reads as missing, but a file cannot be renamed onto a directory path
    with pytest.raises(OSError):  # noqa: PT011 - whatever errno the kernel picks
        load_or_create_identity(str(tmp_path / "dir") + "/")
    assert list((tmp_path / "dir").iterdir()) == []


def test_epochs_strictly_increase_even_when_the_clock_goes_back(tmp_path: Path) -> None:
    ident = str(tmp_path / "identity.json")
    state = NodeState(ident)
    assert (state.node_id, state.epoch) == (0, 0)
    e1 = state.next_epoch(1_000)
    e2 = state.next_epoch(500)  # wall clock went backwards
    e3 = state.next_epoch(500)
    assert e1 == 1_000
    assert e1 < e2 < e3
    assert mode(tmp_path / "node.json") == 0o600
    restarted = NodeState(ident)
    assert restarted.epoch == e3
    assert restarted.next_epoch(0) == e3 + 1
    assert restarted.next_epoch(10**12) == 10**12


def test_node_id_is_persisted_only_when_it_changes(tmp_path: Path) -> None:
    ident = str(tmp_path / "identity.json")
    state = NodeState(ident)
    state.set_node_id(0)
    assert not (tmp_path / "node.json").exists()
    state.set_node_id(0x1234)
    reloaded = NodeState(ident)
    assert reloaded.node_id == 0x1234
    written = (tmp_path / "node.json").stat().st_mtime_ns
    reloaded.set_node_id(0x1234)
    assert (tmp_path / "node.json").stat().st_mtime_ns == written
    assert json.loads((tmp_path / "node.json").read_text()) == {"node_id": 0x1234, "epoch": 0}


@pytest.mark.parametrize(
    "body", [b"nope", b"[1]", b'"text"', b'{"node_id": "x"}', b'{"epoch": null}']
)
def test_invalid_node_state_is_an_identity_error(tmp_path: Path, body: bytes) -> None:
    (tmp_path / "node.json").write_bytes(body)
    with pytest.raises(IdentityError, match="invalid node state file"):
        NodeState(str(tmp_path / "identity.json"))


def test_node_state_defaults_for_missing_fields(tmp_path: Path) -> None:
    (tmp_path / "node.json").write_text("{}")
    state = NodeState(str(tmp_path / "identity.json"))
    assert (state.node_id, state.epoch) == (0, 0)
