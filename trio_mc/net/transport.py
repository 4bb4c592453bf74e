"""A connection's byte stream: plain non-blocking socket calls, or any Trio stream.

A Trio socket call costs about ten times a plain one (a checkpoint on each side), so the
server calls the socket directly and parks in Trio only when the kernel says "would block".
Replies go out as a list of pieces: small batches are joined and sent at once, large ones
are handed to the kernel with ``sendmsg`` straight from the stored values, never copied
into one buffer.
"""

from __future__ import annotations

import socket
from typing import Protocol

import trio

#: Bytes asked of the kernel per read: large enough for deep pipelines, below glibc's
#: mmap threshold (reads of 128 KiB and more cost an mmap/munmap each).
READ_SIZE = 65536
#: Consecutive reads that found data waiting before the connection parks in Trio anyway
#: (``wait_readable`` is a scheduling point), so a flooding client cannot starve others.
READS_BEFORE_YIELD = 8
#: Up to this many bytes, pieces are joined into one ``send``; beyond, ``sendmsg`` takes
#: them as they are (a copy of a small batch is cheaper than an iovec per piece).
JOIN_LIMIT = 16384
#: Pieces per ``sendmsg`` call (the kernel's IOV_MAX).
IOV_MAX = 1024

Piece = bytes | memoryview


class Transport(Protocol):
    """What a connection needs of its byte stream."""

    async def receive(self) -> bytes: ...  # b"" at end of stream

    async def send(self, data: bytes | memoryview) -> None: ...

    def send_nowait(self, data: bytes | memoryview) -> int:
        """Send what the kernel takes now, without waiting; returns the bytes sent."""

    async def send_pieces(self, pieces: list[Piece], total: int) -> None:
        """Send ``pieces`` (``total`` bytes in all) in order; returns once all are out."""

    async def aclose(self) -> None: ...


class SocketTransport:
    """A non-blocking socket; Trio is used only to wait for readiness.

    A read is tried before waiting only when the previous read filled the buffer (more is
    probably queued): after a short read the client is almost always waiting for our reply,
    and a read that fails costs a system call and an exception.
    """

    __slots__ = ("sock", "_more", "_ready_reads")

    def __init__(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        self.sock = sock
        self._more = True
        self._ready_reads = 0

    async def receive(self) -> bytes:
        sock = self.sock
        if self._more and self._ready_reads < READS_BEFORE_YIELD:
            try:
                data = sock.recv(READ_SIZE)
                self._ready_reads += 1
                self._more = len(data) == READ_SIZE
                return data
            except BlockingIOError:
                pass
        self._ready_reads = 0
        while True:
            await trio.lowlevel.wait_readable(sock)
            try:
                data = sock.recv(READ_SIZE)
            except BlockingIOError:
                continue
            self._more = len(data) == READ_SIZE
            return data

    async def send(self, data: bytes | memoryview) -> None:
        sock = self.sock
        try:
            sent = sock.send(data)
        except BlockingIOError:
            sent = 0
        if sent == len(data):
            return
        view = memoryview(data)
        while sent < len(data):
            await trio.lowlevel.wait_writable(sock)
            try:
                sent += sock.send(view[sent:])
            except BlockingIOError:
                continue

    def send_nowait(self, data: bytes | memoryview) -> int:
        try:
            return self.sock.send(data)
        except BlockingIOError:
            return 0

    async def send_pieces(self, pieces: list[Piece], total: int) -> None:
        if total <= JOIN_LIMIT:
            await self.send(pieces[0] if len(pieces) == 1 else b"".join(pieces))
            return
        sock = self.sock
        start = 0
        while start < len(pieces):
            batch = pieces[start:start + IOV_MAX]
            try:
                sent = sock.sendmsg(batch)
            except BlockingIOError:
                await trio.lowlevel.wait_writable(sock)
                continue
            # Skip what went out; a piece sent in part is resumed from where it stopped.
            end = start + len(batch)
            while start < end and sent >= len(pieces[start]):
                sent -= len(pieces[start])
                start += 1
            if start < end:  # the kernel took less than offered: its buffer is full
                if sent:
                    pieces[start] = memoryview(pieces[start])[sent:]
                await trio.lowlevel.wait_writable(sock)

    async def aclose(self) -> None:
        trio.lowlevel.notify_closing(self.sock)
        self.sock.close()


class StreamTransport:
    """Any :class:`trio.abc.Stream` (tests drive connections over memory streams)."""

    __slots__ = ("stream",)

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream

    async def receive(self) -> bytes:
        return bytes(await self.stream.receive_some(READ_SIZE))

    async def send(self, data: bytes | memoryview) -> None:
        await self.stream.send_all(data)

    def send_nowait(self, data: bytes | memoryview) -> int:
        return 0  # a stream has no non-blocking send: everything goes through send()

    async def send_pieces(self, pieces: list[Piece], total: int) -> None:
        await self.stream.send_all(b"".join(pieces))

    async def aclose(self) -> None:
        await trio.aclose_forcefully(self.stream)
