"""One client connection: memcached's ``conn`` and its state machine, driven by one task.

The task loops through memcached's states: ``conn_waiting`` for input, ``conn_read``,
``conn_parse_cmd`` while every complete command of the read is parsed and executed,
``conn_nread``/``conn_swallow`` while a data block is still arriving, ``conn_mwrite`` while
replies go out, and ``conn_closing`` at the end.  The current state is kept on the
connection because ``stats conns`` reports it.

The connection knows the memcached wire protocols (it picks the text or binary parser) but
nothing of what commands do: its owner gives it a dispatch table from command type to
handler and an opaque *session* the handlers receive.  A handler appends reply pieces to
the batch's output and returns ``None`` or an effect (:data:`QUIT`, :data:`CLOSE`,
:data:`AUTHENTICATED`, or a :data:`Takeover` coroutine), so every change of connection
state happens here.

The hot path does no per-command checkpoint, cancel scope or channel hop: one read, one
parse of everything in it, the replies sent with as few system calls as the output bound
allows.  Output is bounded: once a batch's pending replies pass :data:`OUTPUT_BOUND`, they
are sent before the next command runs, and while the peer does not read, the connection
waits for the socket instead of executing more input (memcached: a conn that cannot write
does not read).  Other connections of the worker are served meanwhile.  A client that
keeps the socket always readable is made to yield every ``-R`` commands (``conn_yields``)
and every few reads, so it cannot starve the others.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, TypeAlias

import trio

from trio_mc.log import log
from trio_mc.net.transport import Piece, Transport
from trio_mc.protocol.binary import BinaryParser
from trio_mc.protocol.parser import Parser
from trio_mc.settings import response_budget

if TYPE_CHECKING:
    from trio_mc.settings import Settings
    from trio_mc.store.clock import Clock

#: Pending reply bytes after which a batch's output is sent before the next command runs:
#: a connection holds at most this plus one command's replies, whatever it pipelines.
OUTPUT_BOUND = 1 << 20
#: Pieces of output between two measurements of its size (a measurement is a C-level sum
#: over the pieces; doing it per command would cost more than the commands).
CHECK_EVERY = 64

#: Effects a handler may return.  QUIT: stop executing, send what is pending, close.
QUIT = 1
#: The same, closing on an error (``watch connevents`` reports ``reason=error``).
CLOSE = 2
#: The client authenticated (``-Y``): what it pipelined behind the attempt is parsed anew.
AUTHENTICATED = 3
#: Wait (the owner's ``before_read``) before executing the rest of the batch: the owner
#: has too much of this connection's work pending (the proxy's in-flight requests).
PAUSE = 4
#: After the pending replies are sent, the connection is handed to this coroutine (a
#: ``watch`` log stream) and closed when it returns.
Takeover: TypeAlias = Callable[[Transport], Awaitable[None]]
Effect: TypeAlias = "int | Takeover | None"
Out: TypeAlias = list[Piece]
#: ``handler(command, session, out) -> effect``; the session type is the owner's.
Handler: TypeAlias = Callable[[Any, Any, Out], Effect]

_DISCONNECTED = (OSError, trio.BrokenResourceError, trio.ClosedResourceError)


@dataclass(slots=True)
class ConnCounters:
    """The per-loop counters a connection keeps (memcached's ``thread_stats`` subset);
    owners that count more per loop extend it."""

    bytes_read: int = 0
    bytes_written: int = 0
    conn_yields: int = 0
    idle_kicks: int = 0
    response_obj_oom: int = 0


class ConnRegistry(Protocol):
    """Who keeps count of the connections (``curr_connections``, ``stats conns``)."""

    def conn_opened(self, conn: Conn) -> None: ...

    def conn_closed(self, conn: Conn) -> None: ...


class ConnGroup:
    """The connections one event loop serves: memcached's per-thread connection list.

    A worker thread has one group, and so does the main loop in ``threads=0`` mode.  The
    group closes idle connections (``-o idle_timeout``) and drains for a graceful shutdown.
    """

    def __init__(self, settings: Settings, clock: Clock, tstats: ConnCounters,
                 registry: ConnRegistry) -> None:
        self.settings = settings
        self.clock = clock
        self.tstats = tstats
        self.registry = registry
        #: The loop's connection nursery, set by whoever runs the loop: owners start tasks
        #: that outlive one connection there (the proxy's backend connections).
        self.nursery: trio.Nursery | None = None
        #: Per-loop state of the owner (the proxy keeps its server pools here).
        self.context: object = None
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
        while True:
            await trio.sleep(1)
            timeout = self.settings.idle_timeout
            if not timeout:
                continue
            now = self.clock.tick()
            for conn in list(self.conns):
                if conn.idle and now - conn.last_cmd_time > timeout:
                    self.tstats.idle_kicks += 1
                    conn.kick(b"idle_timeout")


class Conn:
    """A client connection: its transport, parser and state; commands run through
    ``handlers`` with ``session``."""

    __slots__ = (
        "transport", "group", "handlers", "session", "settings", "tstats", "clock", "parser",
        "fd", "addr", "listen_addr", "state", "last_cmd_time", "close_reason", "scope", "budget",
        "before_read",
    )

    def __init__(
        self,
        transport: Transport,
        group: ConnGroup,
        handlers: Mapping[type, Handler],
        session: object,
        *,
        fd: int,
        addr: str,
        listen_addr: str,
        before_read: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        settings = group.settings
        self.transport = transport
        self.group = group
        self.handlers = handlers
        self.session = session
        self.settings = settings
        self.tstats = group.tstats
        self.clock = group.clock
        self.parser: Parser | BinaryParser = Parser(
            item_size_max=settings.item_size_max, use_cas=settings.use_cas,
            require_auth=settings.auth_file is not None)
        self.budget = response_budget(settings)  # -o read_buf_mem_limit, 0 = none
        self.fd = fd
        self.addr = addr
        self.listen_addr = listen_addr
        self.state = "conn_new_cmd"
        self.last_cmd_time = self.clock.tick()
        self.close_reason = b"normal"  # as memcached's watch connevents reports it
        self.scope = trio.CancelScope()
        #: Awaited before each read and on a PAUSE effect: an owner whose replies complete
        #: later (the proxy) holds a client here while too many of its replies are pending.
        self.before_read = before_read

    @property
    def idle(self) -> bool:
        """Waiting for a new command, with nothing half-received."""
        return self.state == "conn_waiting" and not self.parser.buffered

    def kick(self, reason: bytes = b"shutdown") -> None:
        """Close the connection from outside its task (idle timeout, shutdown)."""
        self.close_reason = reason
        self.scope.cancel()

    async def run(self) -> None:
        """Serve the connection until the client leaves, quits, or the server stops."""
        registry = self.group.registry
        registry.conn_opened(self)
        self.group.add(self)
        try:
            with self.scope:
                await self._loop()
        except _DISCONNECTED:
            pass
        except Exception as exc:  # noqa: BLE001 (a bug must cost one connection, not the worker)
            log.exception("<%d closing on internal error: %r", self.fd, exc)
        finally:
            self.state = "conn_closing"
            registry.conn_closed(self)
            self.group.remove(self)
            await self.transport.aclose()

    def _negotiate(self, first: int) -> bool:
        """``-B``: a first byte of 0x80 (the request magic) means the binary protocol.
        False if the connection must close (``-B binary`` and a text client)."""
        settings = self.settings
        if first == 0x80 and settings.binding_protocol != "ascii":
            self.parser = BinaryParser(item_size_max=settings.item_size_max)
        elif settings.binary_only:
            self.close_reason = b"error"
            return False
        return True

    async def _loop(self) -> None:
        transport = self.transport
        tstats = self.tstats
        group = self.group
        clock = self.clock
        handlers = self.handlers
        session = self.session
        settings = self.settings
        first = True
        while True:
            self.state = self.parser.state
            if group.draining and self.idle:
                return
            if self.before_read is not None:
                await self.before_read()
            data = await transport.receive()
            if not data:
                return
            if first:
                first = False
                if not self._negotiate(data[0]):
                    return
            parser = self.parser
            tstats.bytes_read += len(data)
            self.state = "conn_parse_cmd"
            if settings.verbose > 1:
                _log_lines(f"<{self.fd} ", data)
            commands = parser.feed(data)
            if not commands:
                continue
            self.last_cmd_time = clock.tick()  # the store reads clock.current
            if self.budget and len(commands) > self.budget:
                tstats.response_obj_oom += 1  # too many replies to hold: memcached hangs up
                return
            out: Out = []
            check_at = CHECK_EVERY
            effect: Effect = None
            while True:
                for command in commands:
                    effect = handlers[command.__class__](command, session, out)
                    if effect is not None:
                        if effect != PAUSE or self.before_read is None:
                            break
                        effect = None
                        if out:
                            await self._flush(out, sum(map(len, out)))
                            out = []
                        await self.before_read()
                        continue
                    if len(out) >= check_at:
                        pending = sum(map(len, out))
                        if pending >= OUTPUT_BOUND:
                            await self._flush(out, pending)
                            out = []
                            check_at = CHECK_EVERY
                        else:
                            check_at = len(out) + CHECK_EVERY
                if effect != AUTHENTICATED:
                    break
                parser.require_auth = False  # type: ignore[union-attr]
                commands = parser.feed(b"")
                effect = None
            if out:
                await self._flush(out, sum(map(len, out)))
            if effect is not None:
                if effect == CLOSE:
                    self.close_reason = b"error"
                elif effect != QUIT:
                    await effect(transport)  # type: ignore[operator]
                return
            if len(commands) > settings.reqs_per_event:
                # memcached yields each time -R requests are used up within one read.
                tstats.conn_yields += (len(commands) - 1) // settings.reqs_per_event
                await trio.lowlevel.checkpoint()
            # Nothing of this read stays referenced while the client idles (a value of a
            # set would live on in its command until the next read).
            del data, commands, command, out

    async def _flush(self, out: Out, total: int) -> None:
        """Send a batch's replies (``conn_mwrite``); waits while the peer does not read."""
        self.state = "conn_mwrite"
        if self.settings.verbose > 1:
            _log_lines(f">{self.fd} ", b"".join(out))
        await self.transport.send_pieces(out, total)
        self.tstats.bytes_written += total


def _log_lines(prefix: str, data: bytes) -> None:
    """``-vv``: each protocol line on stderr, as memcached prints them."""
    for line in data.split(b"\n"):
        if line.strip():
            log.info("%s%s", prefix, line.rstrip(b"\r")[:200].decode("latin-1"))
