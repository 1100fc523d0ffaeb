"""Proof of key possession for registry requests: one signing scheme, shared.

The client and the server build the signed bytes with the same function
(:func:`signing_payload`), so the two sides cannot drift apart.

Scheme (timestamped payload, no server round trip):

* the signed bytes are ``b"natroute-registry/v1 " + action + b"\\n"`` followed
  by the canonical JSON (sorted keys, no spaces, ASCII) of every field present
  in the request body except ``signature`` (absent optional fields are not
  signed; adding or dropping a field breaks the signature); ``action`` is
  ``register`` or ``heartbeat`` so a signature for one endpoint never
  verifies on the other, and a heartbeat signs the node ID it is for;
* ``timestamp_us`` is the signer's wall clock in integer microseconds; the
  server accepts it only within ``±signature_skew`` of its own clock **and**
  only when it is strictly greater than the last timestamp accepted for the
  same key. The last accepted timestamp is stored with the node (durably, in
  the same transaction as the update), so a captured request can never be
  replayed, not even across a restart; a request older than the skew window
  is refused outright, so purging a node cannot re-open the window either.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from typing import Any, Final

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

# X25519 public keys are 32 raw bytes too (KEY_LEN).
from natroute._service.ed25519 import KEY_LEN, SIGNATURE_LEN, verify_signature

__all__ = [
    "ACTION_HEARTBEAT",
    "ACTION_REGISTER",
    "KEY_LEN",
    "SIGNATURE_LEN",
    "b64decode_exact",
    "b64encode",
    "public_key_bytes",
    "sign",
    "signing_payload",
    "verify",
]

ACTION_REGISTER: Final = "register"
ACTION_HEARTBEAT: Final = "heartbeat"
_DOMAIN: Final = b"natroute-registry/v1 "


def b64encode(data: bytes) -> str:
    """Standard base64 (with padding) as ASCII text."""
    return base64.b64encode(data).decode("ascii")


def b64decode_exact(text: str, length: int) -> bytes:
    """Decode strict standard base64 that must yield exactly ``length`` bytes.

    Raises:
        ValueError: not valid base64, or the wrong number of bytes.
    """
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError) as exc:
        raise ValueError("not valid base64") from exc
    if len(raw) != length:
        raise ValueError(f"must decode to {length} bytes, got {len(raw)}")
    return raw


def public_key_bytes(key: Ed25519PrivateKey) -> bytes:
    """The raw 32-byte public key of an Ed25519 private key."""
    return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def signing_payload(action: str, fields: Mapping[str, Any]) -> bytes:
    """The exact bytes a request signature covers.

    Args:
        action: ``register`` or ``heartbeat``.
        fields: every field present in the request body except ``signature``
            (a heartbeat adds its ``node_id``), with the values as sent.

    Returns:
        Domain prefix, action, newline, canonical JSON of ``fields``.
    """
    body = json.dumps(dict(fields), sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return _DOMAIN + action.encode("ascii") + b"\n" + body.encode("ascii")


def sign(key: Ed25519PrivateKey, action: str, fields: Mapping[str, Any]) -> str:
    """Sign ``fields`` for ``action``; returns the base64 signature."""
    return b64encode(key.sign(signing_payload(action, fields)))


def verify(public_key: bytes, signature: bytes, action: str, fields: Mapping[str, Any]) -> bool:
    """True when ``signature`` is ``public_key``'s signature over the payload.

    Never raises for bad keys or signatures: those are simply ``False``.
    """
    return verify_signature(public_key, signature, signing_payload(action, fields))
