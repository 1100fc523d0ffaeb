"""Per-peer-pair frame encryption: round trips, tampering, replay window, epochs."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from natroute.sidecar.crypto import (
    FRAME_HEADER_LEN,
    FRAME_MAGIC,
    FRAME_OVERHEAD,
    REPLAY_WINDOW,
    AuthError,
    PeerCipher,
    ReplayWindow,
    frame_sender,
)

from .fakenet import public_key

A_ID, B_ID = 0x0A0A0A0A, 0x0B0B0B0B
A_KEY = X25519PrivateKey.from_private_bytes(b"\x11" * 32)
B_KEY = X25519PrivateKey.from_private_bytes(b"\x22" * 32)
C_KEY = X25519PrivateKey.from_private_bytes(b"\x33" * 32)


def pair(a_epoch: int = 1, b_epoch: int = 1) -> tuple[PeerCipher, PeerCipher]:
    """(a's cipher towards b, b's cipher towards a)."""
    return (
        PeerCipher(A_ID, A_KEY, B_ID, public_key(B_KEY), a_epoch),
        PeerCipher(B_ID, B_KEY, A_ID, public_key(A_KEY), b_epoch),
    )


def test_seal_open_round_trip_both_ways() -> None:
    a, b = pair()
    for payload in (b"", b"x", bytes(range(256)) * 10):
        frame = a.seal(payload)
        assert len(frame) == FRAME_OVERHEAD + len(payload)
        assert frame[:4] == FRAME_MAGIC
        assert frame_sender(frame) == A_ID
        assert b.open(frame) == payload
        assert a.open(b.seal(payload)) == payload


def test_frame_header_carries_sender_epoch_and_counter() -> None:
    a, _ = pair(a_epoch=7)
    first, second = a.seal(b"1"), a.seal(b"2")
    assert first[8:16] == (7).to_bytes(8, "big")
    assert first[16:24] == (0).to_bytes(8, "big")
    assert second[16:24] == (1).to_bytes(8, "big")


def test_every_tampered_byte_is_refused() -> None:
    a, b = pair()
    frame = a.seal(b"payload under test")
    for i in range(len(frame)):
        forged = bytearray(frame)
        forged[i] ^= 0x01
        with pytest.raises(AuthError):
            b.open(bytes(forged))
    assert b.open(frame) == b"payload under test"  # refusals left the window open


def test_truncated_frames_and_other_senders_are_refused() -> None:
    a, b = pair()
    frame = a.seal(b"abc")
    for cut in (0, 4, FRAME_HEADER_LEN, FRAME_OVERHEAD - 1):
        with pytest.raises(AuthError):
            b.open(frame[:cut])
    stranger = PeerCipher(0xC, C_KEY, B_ID, public_key(B_KEY), 1)
    with pytest.raises(AuthError, match="not a frame from this peer"):
        b.open(stranger.seal(b"hi"))
    # a third party holding a's ID but not a's key
    impostor = PeerCipher(A_ID, C_KEY, B_ID, public_key(B_KEY), 1)
    with pytest.raises(AuthError, match="did not authenticate"):
        b.open(impostor.seal(b"hi"))
    # a frame for someone else (receiver ID is authenticated data)
    to_c = PeerCipher(A_ID, A_KEY, 0xC, public_key(B_KEY), 1)
    with pytest.raises(AuthError):
        b.open(to_c.seal(b"hi"))
    assert frame_sender(b"PILT" + frame[4:]) is None
    assert frame_sender(frame[: FRAME_OVERHEAD - 1]) is None


def test_replay_window_accepts_each_counter_once() -> None:
    a, b = pair()
    frames = [a.seal(b"%d" % i) for i in range(REPLAY_WINDOW + 10)]
    assert b.open(frames[5]) == b"5"
    with pytest.raises(AuthError, match="replayed"):
        b.open(frames[5])
    # out of order within the window: accepted once each
    assert b.open(frames[3]) == b"3"
    assert b.open(frames[4]) == b"4"
    with pytest.raises(AuthError):
        b.open(frames[3])
    # the newest moves the window; counters too far behind are refused
    assert b.open(frames[REPLAY_WINDOW + 9]) == b"%d" % (REPLAY_WINDOW + 9)
    with pytest.raises(AuthError):
        b.open(frames[0])  # never seen, but fell out of the window
    assert b.open(frames[10]) == b"10"  # exactly inside the window edge


def test_replay_window_unit() -> None:
    w = ReplayWindow(size=8)
    assert w.highest == -1
    assert w.check(0)
    w.accept(0)
    assert not w.check(0)
    w.accept(100)  # a jump clears the old bits
    assert w.highest == 100
    assert w.check(99)
    assert not w.check(92)  # offset 8: outside a window of 8
    assert w.check(93)
    w.accept(93)
    assert not w.check(93)
    assert not w.check(100)


_COUNTERS = st.one_of(
    st.integers(0, 3000),  # near each other: shifts inside the window
    st.integers(0, 2**64 - 1),  # anywhere: jumps far beyond it
)


@given(st.lists(_COUNTERS, max_size=300), st.sampled_from([8, 64, REPLAY_WINDOW]))
def test_replay_window_model(counters: list[int], size: int) -> None:
    """Any counter sequence: accepted once at most, exactly when inside the window,
    and the window never holds more than ``size`` bits (memory and time stay bounded)."""
    window = ReplayWindow(size)
    seen: set[int] = set()
    highest = -1
    for counter in counters:
        fresh = counter not in seen and (counter > highest or highest - counter < size)
        assert window.check(counter) is fresh
        if fresh:
            window.accept(counter)
            seen.add(counter)
            highest = max(highest, counter)
        assert window.highest == highest
        assert window._bits.bit_length() <= size


def test_a_huge_counter_jump_is_one_reset() -> None:
    window = ReplayWindow()
    window.accept(5)
    window.accept(2**63)  # O(1): a fresh window, nothing shifted bit by bit
    assert window._bits == 1
    assert window.check(2**63 - 1)
    assert not window.check(5)


def test_old_epoch_is_refused_after_a_newer_one_authenticated() -> None:
    _, b = pair()
    old = PeerCipher(A_ID, A_KEY, B_ID, public_key(B_KEY), 3)
    new = PeerCipher(A_ID, A_KEY, B_ID, public_key(B_KEY), 4)
    early = old.seal(b"before restart")
    assert b.open(new.seal(b"after restart")) == b"after restart"
    with pytest.raises(AuthError, match="old epoch"):
        b.open(early)
    with pytest.raises(AuthError):
        b.open(old.seal(b"still old"))
    assert b.open(new.seal(b"more")) == b"more"


def test_forged_higher_epoch_does_not_move_the_receivers_epoch() -> None:
    a, b = pair(a_epoch=5)
    assert b.open(a.seal(b"one")) == b"one"
    forged = bytearray(a.seal(b"two"))
    forged[8:16] = (6).to_bytes(8, "big")
    with pytest.raises(AuthError):
        b.open(bytes(forged))
    assert b.open(a.seal(b"three")) == b"three"  # epoch 5 still accepted


def test_epochs_give_independent_keys_and_counters() -> None:
    a1, b = pair(a_epoch=1)
    a2 = PeerCipher(A_ID, A_KEY, B_ID, public_key(B_KEY), 2)
    f1, f2 = a1.seal(b"same"), a2.seal(b"same")
    assert f1[16:24] == f2[16:24]  # same counter 0 ...
    assert f1[FRAME_HEADER_LEN:] != f2[FRAME_HEADER_LEN:]  # ... different key
    assert b.open(f1) == b"same"
    assert b.open(f2) == b"same"


def test_bad_peer_keys_are_value_errors() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        PeerCipher(A_ID, A_KEY, B_ID, b"short", 1)
    with pytest.raises(ValueError, match="shared key"):
        PeerCipher(A_ID, A_KEY, B_ID, b"\0" * 32, 1)  # low-order point: no shared secret


_RECEIVER = pair()[1]
_VALID = pair()[0].seal(b"valid")


@settings(max_examples=300, deadline=None)
@given(
    st.one_of(
        st.binary(max_size=200),
        st.binary(max_size=120).map(lambda b: FRAME_MAGIC + A_ID.to_bytes(4, "big") + b),
        st.tuples(st.integers(0, len(_VALID) - 1), st.integers(1, 255)).map(
            lambda t: _VALID[: t[0]] + bytes([_VALID[t[0]] ^ t[1]]) + _VALID[t[0] + 1 :]
        ),
    )
)
def test_any_bytes_open_to_plaintext_or_auth_error(data: bytes) -> None:
    try:
        plaintext = _RECEIVER.open(data)
    except AuthError:
        return
    assert isinstance(plaintext, bytes)
