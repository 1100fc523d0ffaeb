"""The node's identity on disk: its keys, its node ID and its send epoch.

``identity.json`` (mode 0600, created on first start) holds the Ed25519
identity key (registry registration, beacon pick hash, signed discovers) and
the X25519 frame key. ``node.json`` beside it remembers the node ID the
registry allocated (so a cold start with the registry down keeps its ID) and
the last send epoch, so epochs strictly increase across restarts and a frame
key and nonce are never used twice. The beacon cache lives in the same
directory (docs/protocol.md, "Beacon cache").
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import tempfile
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)

__all__ = ["Identity", "IdentityError", "NodeState", "load_or_create_identity"]

_RAW = (Encoding.Raw, PublicFormat.Raw)


class IdentityError(Exception):
    """The identity or state file exists but cannot be used."""


def _write_private(path: str, data: bytes) -> None:
    """Atomically replace ``path`` with ``data``, mode 0600, fsynced."""
    directory = os.path.dirname(path) or "."
    fd, tmp = tempfile.mkstemp(prefix=".natroute.", suffix=".tmp", dir=directory)
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


@dataclass(frozen=True)
class Identity:
    """The node's key pair(s) and where they are stored."""

    path: str
    ed25519: Ed25519PrivateKey
    x25519: X25519PrivateKey

    @property
    def ed25519_public(self) -> bytes:
        """Raw 32-byte Ed25519 public key (the beacon pick hash key)."""
        return self.ed25519.public_key().public_bytes(*_RAW)

    @property
    def x25519_public(self) -> bytes:
        """Raw 32-byte X25519 public key (published in the registry)."""
        return self.x25519.public_key().public_bytes(*_RAW)


def _b64(key: Ed25519PrivateKey | X25519PrivateKey) -> str:
    raw = key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
    return base64.b64encode(raw).decode()


def load_or_create_identity(path: str) -> Identity:
    """Load the identity file, or create it (and its directory, 0700) on first start.

    Raises:
        IdentityError: the file exists but is not a valid identity.
    """
    try:
        with open(path, "rb") as f:
            obj: Any = json.loads(f.read())
        ed = Ed25519PrivateKey.from_private_bytes(base64.b64decode(obj["ed25519"], validate=True))
        x = X25519PrivateKey.from_private_bytes(base64.b64decode(obj["x25519"], validate=True))
    except FileNotFoundError:
        pass
    except (ValueError, KeyError, TypeError) as exc:
        raise IdentityError(f"invalid identity file {path}: {exc}") from exc
    else:
        return Identity(path, ed, x)
    directory = os.path.dirname(path)
    if directory:
        os.makedirs(directory, mode=0o700, exist_ok=True)
    identity = Identity(path, Ed25519PrivateKey.generate(), X25519PrivateKey.generate())
    body = {"version": 1, "ed25519": _b64(identity.ed25519), "x25519": _b64(identity.x25519)}
    _write_private(path, json.dumps(body).encode())
    return identity


class NodeState:
    """``node.json`` beside the identity: the registry's node ID and the last epoch."""

    def __init__(self, identity_path: str) -> None:
        self.path = os.path.join(os.path.dirname(identity_path) or ".", "node.json")
        self.node_id = 0
        self.epoch = 0
        try:
            with open(self.path, "rb") as f:
                obj: Any = json.loads(f.read())
            self.node_id = int(obj.get("node_id", 0))
            self.epoch = int(obj.get("epoch", 0))
        except FileNotFoundError:
            pass
        except (ValueError, TypeError, AttributeError) as exc:
            raise IdentityError(f"invalid node state file {self.path}: {exc}") from exc

    def _save(self) -> None:
        _write_private(
            self.path, json.dumps({"node_id": self.node_id, "epoch": self.epoch}).encode()
        )

    def next_epoch(self, now_ns: int) -> int:
        """A send epoch above every earlier one (wall-clock based, persisted first)."""
        self.epoch = max(now_ns, self.epoch + 1)
        self._save()
        return self.epoch

    def set_node_id(self, node_id: int) -> None:
        """Remember the node ID the registry gave us."""
        if node_id != self.node_id:
            self.node_id = node_id
            self._save()
