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
from typing import TYPE_CHECKING, Any, Protocol

import trio

from trio_mc.protocol.binary import BinaryParser
from trio_mc.protocol.parser import Parser
from trio_mc.settings import response_budget
from trio_mc.server.commands import HANDLERS
from trio_mc.server.logger import Watcher

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


class ConnGroup:
    """The connections one event loop serves: memcached's per-thread connection list.

    A worker thread has one group, and so does the main loop in ``threads=0`` mode.  The
    group closes idle connections (``-o idle_timeout``) and drains for a graceful shutdown.
    """

    def __init__(self, server: ServerState, tstats: ThreadStats) -> None:
        self.server = server
        self.tstats = tstats
        self.conns: set[Conn] = set()
        self.draining = False
        self.empty = trio.Event()
        self.empty.set()

    def add(self, conn: Conn) -> None:
        self.conns.add(conn)
        self.empty = trio.Event()

    def remove(self, conn: Conn) -> None:
        self.conns.discard(conn)
        if not self.conns:
            self.empty.set()

    def drain(self) -> None:
        """Graceful shutdown: idle connections close now, busy ones after their reply."""
        self.draining = True
        for conn in list(self.conns):
            if conn.idle:
                conn.kick()

    async def sweep_idle(self) -> None:
        """Close connections idle for longer than ``-o idle_timeout`` (``idle_kicks``)."""
        settings = self.server.settings
        clock = self.server.store.clock
        while True:
            await trio.sleep(1)
            timeout = settings.idle_timeout
            if not timeout:
                continue
            now = clock.tick()
            for conn in list(self.conns):
                if conn.idle and now - conn.last_cmd_time > timeout:
                    self.tstats.idle_kicks += 1
                    conn.kick(b"idle_timeout")


class Conn:
    """A client connection and everything a command handler may need."""

    __slots__ = (
        "transport", "server", "store", "settings", "group", "tstats", "parser", "fd", "addr",
        "listen_addr", "state", "last_cmd_time", "closing", "close_reason", "scope", "watcher",
        "reparse", "budget",
    )

    def __init__(
        self,
        transport: Transport,
        group: ConnGroup,
        *,
        fd: int,
        addr: str,
        listen_addr: str,
    ) -> None:
        server = group.server
        self.transport = transport
        self.server = server
        self.store = server.store
        self.settings = server.settings
        self.group = group
        self.tstats = group.tstats
        self.parser = Parser(item_size_max=server.settings.item_size_max, use_cas=server.settings.use_cas,
                             require_auth=server.settings.auth_file is not None)
        self.reparse = False  # set after authenticating: parse what was buffered behind it
        self.budget = response_budget(server.settings)  # -o read_buf_mem_limit, 0 = none
        self.fd = fd
        self.addr = addr
        self.listen_addr = listen_addr
        self.state = "conn_new_cmd"
        self.last_cmd_time = server.store.clock.tick()
        self.closing = False
        self.close_reason = b"normal"  # as memcached's watch connevents reports it
        self.scope = trio.CancelScope()
        self.watcher: Watcher | None = None  # set by `watch`: the connection becomes a log stream

    @property
    def idle(self) -> bool:
        """Waiting for a new command, with nothing half-received."""
        return self.state == "conn_waiting" and not self.parser.buffered

    def kick(self, reason: bytes = b"shutdown") -> None:
        """Close the connection from outside its task (idle timeout, shutdown)."""
        self.close_reason = reason
        self.scope.cancel()

    def _log_conn(self, event: bytes) -> None:
        """``watch connevents``: conn_new / conn_close lines."""
        if self.addr.startswith("unix:"):
            rip, rport, transport = b"unix", b"0", b"local"
        else:
            host, _, port = self.addr[4:].rpartition(":")
            rip, rport, transport = host.strip("[]").encode(), port.encode(), b"tcp"
        line = b"type=%b rip=%b rport=%b transport=%b " % (event, rip, rport, transport)
        if event == b"conn_close":
            line += b"reason=%b " % self.close_reason
        self.server.logger.log(b"connevents", line + b"cfd=%d" % self.fd)

    async def run(self) -> None:
        """Serve the connection until the client leaves, quits, or the server stops."""
        server = self.server
        server.conn_opened(self)
        self.group.add(self)
        if b"connevents" in server.logger.kinds:
            self._log_conn(b"conn_new")
        if self.settings.verbose > 1:
            print(f"<{self.fd} new auto-negotiating client connection", file=sys.stderr)
        try:
            with self.scope:
                await self._loop()
        except _DISCONNECTED:
            pass
        except Exception as exc:  # a bug must cost one connection, not the worker
            print(f"<{self.fd} closing on internal error: {exc!r}", file=sys.stderr)
        finally:
            self.state = "conn_closing"
            if b"connevents" in server.logger.kinds:
                self._log_conn(b"conn_close")
            server.conn_closed(self)
            self.group.remove(self)
            await self.transport.aclose()
            if self.settings.verbose > 1:
                print(f"<{self.fd} connection closed.", file=sys.stderr)

    async def _loop(self) -> None:
        transport = self.transport
        parser = self.parser
        tstats = self.tstats
        group = self.group
        clock = self.store.clock
        handlers = HANDLERS
        first = True
        while not self.closing:
            self.state = parser.state
            if group.draining and self.idle:
                return
            data = await transport.receive()
            if not data:
                return
            if first:
                first = False
                # -B auto: a first byte of 0x80 (the request magic) means the binary protocol.
                if data[0] == 0x80 and self.settings.binding_protocol != "ascii":
                    parser = self.parser = BinaryParser(item_size_max=self.settings.item_size_max)  # type: ignore[assignment]
                elif self.settings.binary_only:
                    self.close_reason = b"error"
                    return
            tstats.bytes_read += len(data)
            self.state = "conn_parse_cmd"
            if self.settings.verbose > 1:
                _log_lines(f"<{self.fd} ", data)
            commands = parser.feed(data)
            if not commands:
                continue
            self.last_cmd_time = clock.tick()  # the store reads clock.current
            if self.budget and len(commands) > self.budget:
                tstats.response_obj_oom += 1  # too many replies to hold: memcached hangs up
                return
            out: list[Any] = []
            for command in commands:
                handlers[type(command)](command, self, out)
            if self.reparse:
                self.reparse = False
                for command in parser.feed(b""):
                    handlers[type(command)](command, self, out)
            if out:
                self.state = "conn_mwrite"
                payload = b"".join(out)
                await transport.send(payload)
                tstats.bytes_written += len(payload)
                if self.settings.verbose > 1:
                    _log_lines(f">{self.fd} ", payload)
            if self.watcher is not None:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(_cancel_at_eof, transport, nursery.cancel_scope)
                    await self.server.logger.stream(self.watcher, transport.send)
                return
            if len(commands) > self.settings.reqs_per_event:
                # memcached yields each time -R requests are used up within one read.
                tstats.conn_yields += (len(commands) - 1) // self.settings.reqs_per_event
                await trio.lowlevel.checkpoint()


async def _cancel_at_eof(transport: Transport, scope: trio.CancelScope) -> None:
    """A watcher only listens: when its client hangs up, stop streaming to it."""
    while await transport.receive():
        pass
    scope.cancel()


def _log_lines(prefix: str, data: bytes) -> None:
    """``-vv``: each protocol line on stderr, as memcached prints them."""
    for line in data.split(b"\n"):
        if line.strip():
            print(prefix + line.rstrip(b"\r")[:200].decode("latin-1"), file=sys.stderr)
