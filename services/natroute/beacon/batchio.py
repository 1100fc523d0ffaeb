"""Batched UDP I/O: ``recvmmsg``/``sendmmsg`` with UDP GSO, through ``ctypes``.

The beacon's relay spends most of its time in system calls, one per datagram
received and one per datagram sent. :class:`BatchSocket` moves up to
``batch`` datagrams per call each way (Linux ``recvmmsg``/``sendmmsg``), and
sends a run of datagrams of one size to one destination as a single UDP GSO
message (``UDP_SEGMENT``): the kernel cuts it into datagrams late, so the
cost per datagram of the send path shrinks (beacon README "Performance").

Nothing is compiled: the C library is reached through the stdlib's ctypes,
so the same wheel runs everywhere. Where the calls are missing (not Linux,
no ``recvmmsg`` in the C library), :meth:`BatchSocket.create` returns None
and the beacon uses its plain asyncio datagram transport. A GSO send the
kernel or the device refuses is sent again without GSO (``EINVAL``, e.g. a
size above the path MTU) or turns GSO off for good (``EIO``: no checksum
offload), so GSO can never lose a datagram that plain sends would deliver.

Buffers are allocated once; received datagrams are copied out as ``bytes``
and source addresses are decoded once per source (a capped cache).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import socket
import struct
import sys
from collections.abc import Iterator, Sequence
from typing import Final

from natroute.routing.types import Addr

__all__ = ["DEFAULT_BATCH", "GSO_MAX_SEGMENT", "BatchSocket", "SendResult"]

#: Datagrams per system call.
DEFAULT_BATCH: Final = 64
#: Largest datagram sent with GSO: under a 1500-byte MTU with IPv6 and UDP
#: headers. Larger ones (and shorter paths) go out one by one.
GSO_MAX_SEGMENT: Final = 1400
_GSO_MAX_SEGMENTS: Final = 64
_GSO_MAX_BYTES: Final = 60_000
_BUF: Final = 65_536  # one receive buffer: the largest UDP payload fits
_SOL_UDP: Final = 17
_UDP_SEGMENT: Final = 103
_UDP_GRO: Final = 104
_MSG_DONTWAIT: Final = 0x40
_ADDR_CACHE: Final = 16_384

# struct mmsghdr (x86-64 / aarch64 layout, checked against ctypes below):
# msg_name P, msg_namelen I, msg_iov P, msg_iovlen N, msg_control P,
# msg_controllen N, msg_flags i, msg_len I.
_MMSG = struct.Struct("PI4xPNPNi4xI4x")
_IOV = struct.Struct("PN")
_CMSG = struct.Struct("NiiH6x")  # cmsghdr + u16 segment size, padded to CMSG_SPACE(2)
_GRO_CMSG = struct.Struct("Niii4x")  # cmsghdr + int segment size, padded to CMSG_SPACE(4)
_MMSG_SIZE: Final = 64
_NAME_LEN = 28  # sockaddr_in6, the larger of the two
_IN4 = struct.Struct(">H4s")  # sockaddr_in after the family: port, address
_IN6 = struct.Struct(">H4x16s")  # sockaddr_in6 after the family: port, flowinfo, address


def _gro_segment(ctl: bytes, i: int) -> int:
    """The segment size of message ``i``'s UDP_GRO control message (0 if none)."""
    _length, level, kind, segment = _GRO_CMSG.unpack_from(ctl, i * _GRO_CMSG.size)
    return int(segment) if level == _SOL_UDP and kind == _UDP_GRO else 0


class SendResult:
    """How one :meth:`BatchSocket.send` went.

    Attributes:
        sent: datagrams the kernel took.
        dropped: datagrams it could not take (or that could not be addressed).
        resent: GSO messages the kernel refused, sent again datagram by datagram.
    """

    __slots__ = ("dropped", "resent", "sent")

    def __init__(self) -> None:
        self.sent = 0
        self.dropped = 0
        self.resent = 0


def _libc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.recvmmsg.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int]
        libc.recvmmsg.argtypes.append(ctypes.c_void_p)
        libc.sendmmsg.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int]
    except (OSError, AttributeError):
        return None
    return libc


class _Buffer:
    """A bytearray pinned for C (its address is stable while this object lives)."""

    __slots__ = ("_pin", "address", "data")

    def __init__(self, size: int) -> None:
        self.data = bytearray(size)
        self._pin = (ctypes.c_char * size).from_buffer(self.data)
        self.address: int = ctypes.addressof(self._pin)


class BatchSocket:
    """Batched receive and send on one non-blocking UDP socket (IPv4 or IPv6)."""

    @classmethod
    def create(
        cls,
        sock: socket.socket,
        *,
        batch: int = DEFAULT_BATCH,
        gso: bool = True,
        gso_segments: int = _GSO_MAX_SEGMENTS,
        gro: bool = False,
    ) -> BatchSocket | None:
        """A batched view of ``sock``, or None where batching is not available.

        Args:
            sock: a non-blocking UDP socket (IPv4, or IPv6 dual-stack).
            batch: datagrams per system call.
            gso: send runs with UDP GSO.
            gso_segments: most datagrams in one GSO message (the kernel takes 64).
            gro: receive with UDP GRO where the kernel offers it: a run of
                datagrams of one size from one source may arrive as one
                buffer, which :meth:`received` cuts up again.
        """
        if sock.family not in (socket.AF_INET, socket.AF_INET6) or sock.type != socket.SOCK_DGRAM:
            return None
        libc = _libc()
        if libc is None or struct.calcsize("PI4xPNPNi4xI4x") != 64:
            return None
        if gro:
            try:
                sock.setsockopt(_SOL_UDP, _UDP_GRO, 1)
            except OSError:  # an older kernel: datagrams arrive one by one
                gro = False
        return cls(sock, libc, batch, gso, gso_segments, gro)

    def __init__(
        self,
        sock: socket.socket,
        libc: ctypes.CDLL,
        batch: int,
        gso: bool,
        gso_segments: int,
        gro: bool = False,
    ) -> None:
        self._sock = sock
        self._fd = sock.fileno()
        self._recvmmsg = libc.recvmmsg
        self._sendmmsg = libc.sendmmsg
        self.size = batch
        self.ipv6 = sock.family == socket.AF_INET6
        #: False once the kernel refused GSO for good (or when asked off).
        self.gso = gso
        self._gso_works = True
        self._gso_segments = gso_segments
        self._key_len = 24 if self.ipv6 else 8
        # Receive side: one big buffer per datagram, names, iovecs, headers.
        self._rdata = _Buffer(batch * _BUF)
        self._rnames = _Buffer(batch * _NAME_LEN)
        self._riov = _Buffer(batch * _IOV.size)
        self._rmsgs = _Buffer(batch * _MMSG.size)
        #: True when received buffers may hold several datagrams (UDP GRO).
        self.gro = gro
        self._rctl = _Buffer(batch * _GRO_CMSG.size)
        for i in range(batch):
            _IOV.pack_into(self._riov.data, i * _IOV.size, self._rdata.address + i * _BUF, _BUF)
            _MMSG.pack_into(
                self._rmsgs.data,
                i * _MMSG.size,
                self._rnames.address + i * _NAME_LEN,
                _NAME_LEN,
                self._riov.address + i * _IOV.size,
                1,
                self._rctl.address + i * _GRO_CMSG.size if gro else 0,
                _GRO_CMSG.size if gro else 0,
                0,
                0,
            )
        # Send side: datagrams are copied back to back into one buffer.
        self._sdata = _Buffer(batch * _BUF)
        self._snames = _Buffer(batch * _NAME_LEN)
        self._siov = _Buffer(batch * _IOV.size)
        self._scmsg = _Buffer(batch * _CMSG.size)
        self._smsgs = _Buffer(batch * _MMSG.size)
        for i in range(batch):
            cmsg_len = _CMSG.size - 6  # CMSG_LEN(2)
            _CMSG.pack_into(self._scmsg.data, i * _CMSG.size, cmsg_len, _SOL_UDP, _UDP_SEGMENT, 0)
        self._rmsgs_template = bytes(self._rmsgs.data)
        self._rdata_view = memoryview(self._rdata.data)
        self._addr_of: dict[bytes, Addr] = {}
        self._name_of: dict[Addr, bytes] = {}

    # -- receive -----------------------------------------------------------------

    def recv(self) -> int:
        """Receive up to ``size`` datagrams without blocking.

        Returns:
            How many arrived (0 when none is waiting).

        Raises:
            OSError: any error other than "nothing to read".
        """
        msgs = self._rmsgs
        n: int = self._recvmmsg(self._fd, msgs.address, self.size, _MSG_DONTWAIT, None)
        if n < 0:
            err = ctypes.get_errno()
            if err in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EINTR):
                return 0
            raise OSError(err, f"recvmmsg: {errno.errorcode.get(err, err)}")
        return n

    def received(self, n: int) -> Iterator[tuple[bytes, Addr]]:
        """The ``n`` datagrams of the last :meth:`recv` with their sources."""
        view, msgs = self._rdata_view, self._rmsgs.data
        names = bytes(self._rnames.data[: n * _NAME_LEN])  # one copy for the batch
        lengths = _MMSG.iter_unpack(msgs[: n * _MMSG_SIZE])
        # msg_namelen is in/out: put every header back as it was for the next call.
        msgs[: n * _MMSG_SIZE] = self._rmsgs_template[: n * _MMSG_SIZE]
        addr_of, key_len = self._addr_of, self._key_len
        ctl = bytes(self._rctl.data[: n * _GRO_CMSG.size]) if self.gro else b""
        off = start = 0
        for i, fields in enumerate(lengths):
            key = names[off : off + key_len]
            addr = addr_of.get(key)
            if addr is None:
                addr = self._decode_name(key)
            length = fields[-1]
            segment = _gro_segment(ctl, i) if fields[5] else 0
            if 0 < segment < length:  # several datagrams, back to back
                for first in range(start, start + length, segment):
                    yield bytes(view[first : min(first + segment, start + length)]), addr
            else:
                yield bytes(view[start : start + length]), addr
            off += _NAME_LEN
            start += _BUF

    def _decode_name(self, key: bytes) -> Addr:
        if self.ipv6:
            port, raw = _IN6.unpack_from(key, 2)
            host = socket.inet_ntop(socket.AF_INET6, raw)
        else:
            port, raw = _IN4.unpack_from(key, 2)
            host = socket.inet_ntoa(raw)
        if len(self._addr_of) >= _ADDR_CACHE:
            self._addr_of.clear()
        addr = self._addr_of[key] = (host, port)
        return addr

    # -- send --------------------------------------------------------------------

    def send(self, out: Sequence[tuple[bytes, Addr]]) -> SendResult:
        """Send datagrams, in order, without blocking.

        Consecutive datagrams of one size (at most :data:`GSO_MAX_SEGMENT`
        bytes) to one destination go out as one GSO message. Datagrams the
        kernel cannot take now (a full socket buffer), cannot address, or
        refuses are dropped and counted in the result.
        """
        result = SendResult()
        start = 0
        while start < len(out):
            runs, start = self._pack(out, start, result)
            for first, end in self._flush(runs, result):
                # GSO refused for this run: send it again datagram by datagram.
                result.resent += 1
                gso, self.gso = self.gso, False
                try:
                    again = self.send(out[first:end])
                finally:
                    self.gso = gso and self._gso_works
                result.sent += again.sent
                result.dropped += again.dropped
        return result

    def _pack(
        self, out: Sequence[tuple[bytes, Addr]], start: int, result: SendResult
    ) -> tuple[list[tuple[int, int]], int]:
        """Fill the send buffers from ``out[start:]``; returns the runs and the next index."""
        sdata, siov, smsgs = self._sdata.data, self._siov.data, self._smsgs.data
        gso, name_of, n = self.gso, self._name_of, len(out)
        runs: list[tuple[int, int]] = []
        pos = 0
        i = start
        while i < n and len(runs) < self.size:
            data, dst = out[i]
            size = len(data)
            end = i + 1
            if gso and size <= GSO_MAX_SEGMENT:
                limit = min(n, i + self._gso_segments, i + _GSO_MAX_BYTES // max(size, 1))
                while end < limit and out[end][1] == dst and len(out[end][0]) == size:
                    end += 1
            total = size * (end - i)
            name = name_of.get(dst)
            if name is None:
                name = self._encode_name(dst)
            if name is None or pos + total > len(sdata):
                if name is None:
                    result.dropped += end - i
                    i = end
                    continue
                break  # the buffer is full: the rest goes in the next call
            for k in range(i, end):
                sdata[pos : pos + size] = out[k][0]
                pos += size
            m = len(runs)
            self._snames.data[m * _NAME_LEN : m * _NAME_LEN + len(name)] = name
            _IOV.pack_into(siov, m * _IOV.size, self._sdata.address + pos - total, total)
            segmented = end - i > 1
            if segmented:
                struct.pack_into("H", self._scmsg.data, m * _CMSG.size + 16, size)
            _MMSG.pack_into(
                smsgs,
                m * _MMSG.size,
                self._snames.address + m * _NAME_LEN,
                len(name),
                self._siov.address + m * _IOV.size,
                1,
                self._scmsg.address + m * _CMSG.size if segmented else 0,
                _CMSG.size if segmented else 0,
                0,
                0,
            )
            runs.append((i, end))
            i = end
        return runs, i

    def _flush(self, runs: list[tuple[int, int]], result: SendResult) -> list[tuple[int, int]]:
        """Send the packed runs; returns the GSO runs the kernel refused."""
        retry: list[tuple[int, int]] = []
        done = 0
        while done < len(runs):
            count = len(runs) - done
            sent: int = self._sendmmsg(self._fd, self._smsgs.address + done * _MMSG_SIZE, count, 0)
            if sent > 0:
                result.sent += sum(end - i for i, end in runs[done : done + sent])
                done += sent
                continue
            err = ctypes.get_errno()
            first, end = runs[done]
            if end - first > 1 and err in (errno.EIO, errno.EINVAL):
                # EIO: the device cannot segment (GSO off for good); EINVAL: not
                # for this size or path (e.g. above the MTU).
                if err == errno.EIO:
                    self._gso_works = self.gso = False
                retry.append((first, end))
            elif err in (errno.EAGAIN, errno.EWOULDBLOCK, errno.ENOBUFS):
                result.dropped += sum(end - i for i, end in runs[done:])
                break
            else:  # this message cannot be sent (e.g. unreachable): skip it
                result.dropped += end - first
            done += 1
        return retry

    def _encode_name(self, dst: Addr) -> bytes | None:
        host, port = dst
        try:
            if self.ipv6:
                if ":" not in host:
                    host = "::ffff:" + host
                raw = socket.inet_pton(socket.AF_INET6, host)
                name = struct.pack("=H", socket.AF_INET6) + struct.pack(">H4x16s4x", port, raw)
            else:
                if ":" in host:
                    return None
                raw = socket.inet_pton(socket.AF_INET, host)
                name = struct.pack("=H", socket.AF_INET) + struct.pack(">H4s8x", port, raw)
        except (OSError, struct.error):
            return None
        if len(self._name_of) >= _ADDR_CACHE:
            self._name_of.clear()
        self._name_of[dst] = name
        return name
