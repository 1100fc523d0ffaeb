"""Per-peer-pair authenticated encryption of tunnel frames.

Keys: each node publishes an X25519 public key in the registry. The shared
secret of a pair is X25519(ours, theirs); each direction and sender epoch
gets its own ChaCha20-Poly1305 key from HKDF-SHA256 over it::

    key(sender → receiver, epoch) = HKDF(shared, salt="natroute/v1",
                                         info="natroute-frame" | sender | receiver | epoch)

Frame (first byte ``P``, so it never collides with beacon messages; docs/protocol.md,
"Tunnel frames")::

    "PILS" | sender u32 | epoch u64 | counter u64 | ciphertext | tag(16)

The nonce is the counter (zero-padded to 12 bytes); the 24-byte header and
the receiver's ID are the associated data. ``epoch`` is strictly increasing
across a node's restarts (the sidecar persists it), so a (key, nonce) pair is
never reused. Receivers keep a sliding replay window per peer for the newest
epoch and refuse older epochs, so captured frames cannot be replayed.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

__all__ = [
    "FRAME_HEADER_LEN",
    "FRAME_MAGIC",
    "FRAME_OVERHEAD",
    "REPLAY_WINDOW",
    "AuthError",
    "PeerCipher",
    "ReplayWindow",
    "frame_sender",
]

FRAME_MAGIC: Final = b"PILS"
_HEADER = struct.Struct(">4sIQQ")
FRAME_HEADER_LEN: Final = _HEADER.size  # 24
FRAME_OVERHEAD: Final = FRAME_HEADER_LEN + 16
REPLAY_WINDOW: Final = 1024
_SALT: Final = b"natroute/v1"
_MAX_COUNTER: Final = (1 << 64) - 1
_U32 = struct.Struct(">I")
_NONCE_PAD: Final = b"\0\0\0\0"


class AuthError(Exception):
    """A frame did not authenticate, was replayed or is from an old epoch."""


def frame_sender(frame: bytes) -> int | None:
    """The claimed sender of an encrypted frame, or None if it is not one."""
    if len(frame) < FRAME_OVERHEAD or frame[:4] != FRAME_MAGIC:
        return None
    return int(_U32.unpack_from(frame, 4)[0])


class ReplayWindow:
    """Sliding window over 64-bit counters: each counter is accepted once.

    Counters more than ``size`` behind the highest seen are refused. Every
    operation is O(size) at worst and the bitmap never holds more than
    ``size`` bits, whatever the counters: a jump of ``size`` or more starts
    a fresh window instead of shifting the old one out bit by bit.
    """

    __slots__ = ("_bits", "_mask", "_size", "highest")

    def __init__(self, size: int = REPLAY_WINDOW) -> None:
        self._size = size
        self._mask = (1 << size) - 1
        self._bits = 0
        self.highest = -1

    def check(self, counter: int) -> bool:
        """Would ``counter`` be accepted? (No state change.)"""
        if counter > self.highest:
            return True
        offset = self.highest - counter
        return offset < self._size and not (self._bits >> offset) & 1

    def accept(self, counter: int) -> None:
        """Mark ``counter`` as seen; call only after ``check`` and authentication."""
        if counter > self.highest:
            shift = counter - self.highest
            if shift >= self._size:
                self._bits = 1  # nothing of the old window is still inside the new one
            else:
                self._bits = ((self._bits << shift) | 1) & self._mask
            self.highest = counter
        else:
            self._bits |= 1 << (self.highest - counter)


def _derive(shared: bytes, sender: int, receiver: int, epoch: int) -> ChaCha20Poly1305:
    info = b"natroute-frame" + struct.pack(">IIQ", sender, receiver, epoch)
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=_SALT, info=info).derive(shared)
    return ChaCha20Poly1305(key)


@dataclass(slots=True)
class _RecvState:
    epoch: int
    aead: ChaCha20Poly1305
    window: ReplayWindow


class PeerCipher:
    """Seals frames to one peer and opens frames from it.

    Args:
        our_id: our node ID; ``peer_id``: theirs.
        our_key: our X25519 private key; ``peer_key``: their public key bytes.
        epoch: our send epoch (strictly increasing across our restarts).
        first_counter: the first send counter (0 for a new epoch).
    """

    __slots__ = (
        "_aad_tail",
        "_counter",
        "_epoch",
        "_our_id",
        "_peer_id",
        "_peer_tail",
        "_prefix",
        "_recv",
        "_send",
        "_shared",
    )

    def __init__(
        self,
        our_id: int,
        our_key: X25519PrivateKey,
        peer_id: int,
        peer_key: bytes,
        epoch: int,
        first_counter: int = 0,
    ) -> None:
        self._our_id = our_id
        self._peer_id = peer_id
        self._shared = our_key.exchange(X25519PublicKey.from_public_bytes(peer_key))
        self._epoch = epoch
        self._send = _derive(self._shared, our_id, peer_id, epoch)
        self._counter = first_counter
        self._recv: _RecvState | None = None
        self._aad_tail = _U32.pack(our_id)
        self._peer_tail = _U32.pack(peer_id)
        # The header up to the counter never changes for this sender epoch.
        self._prefix = _HEADER.pack(FRAME_MAGIC, our_id, epoch, 0)[:16]

    @property
    def next_counter(self) -> int:
        """The counter of the next sealed frame."""
        return self._counter

    def seal(self, plaintext: bytes) -> bytes:
        """An encrypted frame carrying ``plaintext`` to the peer."""
        counter = self._counter
        if counter >= _MAX_COUNTER:  # pragma: no cover - 2**64 frames
            raise AuthError("send counter exhausted")
        self._counter = counter + 1
        raw = counter.to_bytes(8, "big")
        header = self._prefix + raw
        return header + self._send.encrypt(_NONCE_PAD + raw, plaintext, header + self._peer_tail)

    def open(self, frame: bytes) -> bytes:
        """The plaintext of an authentic, fresh frame from the peer.

        Raises:
            AuthError: wrong magic/sender, bad tag, replayed counter or an
                epoch older than the newest one seen.
        """
        if len(frame) < FRAME_OVERHEAD:
            raise AuthError("frame too short")
        magic, sender, epoch, counter = _HEADER.unpack_from(frame)
        if magic != FRAME_MAGIC or sender != self._peer_id:
            raise AuthError("not a frame from this peer")
        recv = self._recv
        if recv is not None and epoch < recv.epoch:
            raise AuthError("frame from an old epoch")
        if recv is not None and epoch == recv.epoch:
            aead, window = recv.aead, recv.window
        else:
            aead, window = _derive(self._shared, sender, self._our_id, epoch), ReplayWindow()
        if not window.check(counter):
            raise AuthError("replayed frame")
        header = frame[:FRAME_HEADER_LEN]
        try:
            plaintext = aead.decrypt(
                _NONCE_PAD + frame[16:FRAME_HEADER_LEN],
                frame[FRAME_HEADER_LEN:],
                header + self._aad_tail,
            )
        except InvalidTag as exc:
            raise AuthError("frame did not authenticate") from exc
        window.accept(counter)
        if recv is None or epoch != recv.epoch:
            self._recv = _RecvState(epoch, aead, window)
        return plaintext
