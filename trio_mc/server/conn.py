"""One client connection: memcached's ``conn`` and its state machine, driven by one task.

The task loops through memcached's states: ``conn_waiting`` for input, ``conn_read``,
``conn_parse_cmd`` while every complete command of the read is parsed and executed,
``conn_nread``/``conn_swallow`` while a data block is still arriving, ``conn_mwrite`` while
the batch's replies go out in one send, and ``conn_closing`` at the end.  The current state
is kept on the connection because ``stats conns`` reports it.

The hot path does no per-command checkpoint, cancel scope or channel hop: one read, one
parse of everything in it, one send.  Reads and writes go straight to the non-blocking
socket and only park in Trio when the kernel says "would block" (a Trio socket call costs
about ten times a plain one).  A client that keeps the socket always readable is made to
yield every ``-R`` commands (``conn_yields``) and every few reads, so it cannot starve the
other connections of its worker.
"""

from __future__ import annotations

import socket
import sys
import time
from typing import TYPE_CHECKING, Any, Protocol

import trio

from trio_mc.protocol.parser import Parser
from trio_mc.server.commands import HANDLERS

if TYPE_CHECKING:
    from trio_mc.server.state import ServerState, ThreadStats

#: Bytes asked of the kernel per read: large enough for deep pipelines, below glibc's
#: mmap threshold (reads of 128 KiB and more cost an mmap/munmap each).
READ_SIZE = 65536
#: Consecutive reads that found data waiting before the connection parks in Trio anyway
#: (``wait_readable`` is a scheduling point), so a flooding client cannot starve others.
READS_BEFORE_YIELD = 8

_DISCONNECTED = (OSError, trio.BrokenResourceError, trio.ClosedResourceError)


class Transport(Protocol):
    """What a connection needs of its byte stream."""

    async def receive(self) -> bytes: ...  # b"" at end of stream

    async def send(self, data: bytes) -> None: ...

    async def aclose(self) -> None: ...


class SocketTransport:
    """Plain non-blocking socket calls; Trio is used only to wait for readiness.

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

    async def send(self, data: bytes) -> None:
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

    async def send(self, data: bytes) -> None:
        await self.stream.send_all(data)

    async def aclose(self) -> None:
        await trio.aclose_forcefully(self.stream)


class Conn:
    """A client connection and everything a command handler may need."""

    __slots__ = (
        "transport", "server", "store", "settings", "tstats", "parser", "fd", "addr",
        "listen_addr", "state", "last_cmd_time", "closing",
    )

    def __init__(
        self,
        transport: Transport,
        server: ServerState,
        tstats: ThreadStats,
        *,
        fd: int,
        addr: str,
        listen_addr: str,
    ) -> None:
        self.transport = transport
        self.server = server
        self.store = server.store
        self.settings = server.settings
        self.tstats = tstats
        self.parser = Parser(item_size_max=server.settings.item_size_max, use_cas=server.settings.use_cas)
        self.fd = fd
        self.addr = addr
        self.listen_addr = listen_addr
        self.state = "conn_new_cmd"
        self.last_cmd_time = time.monotonic()
        self.closing = False

    async def run(self) -> None:
        """Serve the connection until the client leaves, quits, or the server stops."""
        server = self.server
        server.conn_opened(self)
        if self.settings.verbose > 1:
            print(f"<{self.fd} new auto-negotiating client connection", file=sys.stderr)
        try:
            await self._loop()
        except _DISCONNECTED:
            pass
        except Exception as exc:  # a bug must cost one connection, not the worker
            print(f"<{self.fd} closing on internal error: {exc!r}", file=sys.stderr)
        finally:
            self.state = "conn_closing"
            server.conn_closed(self)
            await self.transport.aclose()
            if self.settings.verbose > 1:
                print(f"<{self.fd} connection closed.", file=sys.stderr)

    async def _loop(self) -> None:
        transport = self.transport
        parser = self.parser
        tstats = self.tstats
        handlers = HANDLERS
        first = True
        while not self.closing:
            self.state = parser.state
            data = await transport.receive()
            if not data:
                return
            if first:
                first = False
                if data[0] == 0x80:  # memcached's binary protocol: deprecated, not served
                    return
            tstats.bytes_read += len(data)
            self.state = "conn_parse_cmd"
            commands = parser.feed(data)
            if not commands:
                continue
            self.last_cmd_time = time.monotonic()
            out: list[Any] = []
            for command in commands:
                handlers[type(command)](command, self, out)
            if out:
                self.state = "conn_mwrite"
                payload = b"".join(out)
                await transport.send(payload)
                tstats.bytes_written += len(payload)
            if len(commands) > self.settings.reqs_per_event:
                tstats.conn_yields += 1
                await trio.lowlevel.checkpoint()
