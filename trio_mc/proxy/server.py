"""The backend side of the proxy: twemproxy's server and server connection.

A :class:`Server` is one backend of a pool in one worker loop; it opens up to
``server_connections`` :class:`ServerConn` lazily and hands requests to them round-robin.
A server connection keeps twemproxy's two queues: ``imsg_q``, requests waiting to be sent,
and ``omsg_q``, requests sent and waiting for their reply, in send order.  Its sender
writes everything queued in one ``sendmsg`` (requests of many clients pipelined on one
connection); its receiver reads replies, pairs each with the head of ``omsg_q`` and wakes
the clients whose head request is now done, so a reply goes out to its client from the
receiving task itself, without another task hop.

Memory: a server connection holds at most :data:`SERVER_QUEUE_BOUND` bytes of requests the
kernel has not taken (``imsg_q`` and the batch being sent, each msg weighed
:data:`MSG_COST` more for its objects, so a flood of small ``noreply`` requests counts too).
:meth:`ServerConn.enqueue` says when a request fills it; the client then stops forwarding
(it is not read) until :meth:`ServerConn.drained`, so a backend that stops reading costs a
bounded queue however fast clients write.  A request handed to the kernel drops its pieces
(a set's value is the kernel's from then on), and ``omsg_q`` holds at most the clients'
in-flight windows.  Replies are always read, whatever the clients do: a client that does
not read bounds itself (see :mod:`.client`), never the connection it shares with others.
The reader holds one reply being read, whole (a multi-get's reply is as large as its
values).

Any error on a server connection (refused, reset, closed, a reply that cannot be framed,
a request not answered within the pool's ``timeout``) closes it and fails every request
queued on it with the error's text, as twemproxy does; the next request opens a new
connection.  Each such close is a failure of the server; with ``auto_eject_hosts`` the
pool ejects a server after ``server_failure_limit`` failures in a row (see :mod:`.pool`).

A reload that removes a server, or changes how its connections behave, *retires* them:
they take no new request, answer every one already queued, then close (no failure).
"""

from __future__ import annotations

import errno
import os
import socket
from collections import deque
from typing import Protocol

import trio

from trio_mc.net.transport import SocketTransport
from trio_mc.protocol.responses import BadResponse, ResponseReader
from trio_mc.proxy.config import ServerConfig
from trio_mc.proxy.msg import Msg, Owner
from trio_mc.proxy.stats import ServerStats

#: twemproxy's text for a connection closed without an errno (``strerror(0)``).
UNKNOWN = b"unknown"
#: A reply nobody asked for, or one that cannot be framed (twemproxy: EINVAL).
INVALID = os.strerror(errno.EINVAL).encode()
TIMED_OUT = os.strerror(errno.ETIMEDOUT).encode()
#: What a request gets while every server of its pool is ejected (twemproxy's text).
REFUSED = os.strerror(errno.ECONNREFUSED).encode()
#: Request bytes (with :data:`MSG_COST` per msg) a server connection holds for the kernel
#: before the clients that forward to it pause; each may add one request more.
SERVER_QUEUE_BOUND = 1 << 20
#: What a queued msg costs beyond its request bytes: its object, its pieces' list and
#: headers (about 300 bytes, measured with tracemalloc for a ``delete k noreply``).
MSG_COST = 320


def error_text(exc: OSError) -> bytes:
    """The errno text twemproxy writes after ``SERVER_ERROR``."""
    return os.strerror(exc.errno).encode() if exc.errno else UNKNOWN


class _Closed(Exception):
    """The server connection ends with this error text (``eof``: the backend closed)."""

    def __init__(self, text: bytes, eof: bool = False) -> None:
        super().__init__(text)
        self.text = text
        self.eof = eof


class Health(Protocol):
    """Who hears of a server's failures and successes (its pool: ejection)."""

    def server_failed(self, server: Server) -> None: ...

    def server_ok(self, server: Server) -> None: ...


async def connect(config: ServerConfig) -> SocketTransport:
    """A connected, non-blocking socket to the backend (TCP or unix)."""
    if config.is_unix:
        tsock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        address: object = config.host
    else:
        infos = await trio.socket.getaddrinfo(config.host, config.port, type=socket.SOCK_STREAM)
        family, type_, proto, _, address = infos[0]
        tsock = trio.socket.socket(family, type_, proto)
    try:
        await tsock.connect(address)
        if not config.is_unix:
            tsock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except BaseException:
        tsock.close()
        raise
    return SocketTransport(socket.socket(fileno=tsock.detach()))


class ServerConn:
    """One connection to a backend, run by one task in its worker's loop."""

    __slots__ = ("server", "imsg_q", "omsg_q", "reader", "closed", "retiring", "pending", "_wake",
                 "_timed", "_drained", "_scope")

    def __init__(self, server: Server) -> None:
        self.server = server
        self.imsg_q: deque[Msg] = deque()
        self.omsg_q: deque[Msg] = deque()
        self.reader = ResponseReader()
        self.closed = False
        self.retiring = False  # see retire()
        self.pending = 0  # bytes not yet taken by the kernel, MSG_COST per msg included
        self._wake = trio.Event()
        self._timed = trio.Event()  # set when the first timed request is queued
        self._drained: trio.Event | None = None  # made by the first client that waits
        self._scope: trio.CancelScope | None = None  # the running connection's

    def retire(self) -> None:
        """Take no new request (the server forgets this connection); close once every
        queued one is answered."""
        self.retiring = True
        self._close_if_retired()

    def _close_if_retired(self) -> None:
        if self.retiring and not self.imsg_q and not self.omsg_q and self._scope is not None:
            self._scope.cancel()

    def enqueue(self, msg: Msg) -> bool:
        """Queue a request for the sender (twemproxy's ``req_server_enqueue_imsgq``); its
        timeout, if the pool has one, runs from now.  True when the queue is now full: the
        caller stops forwarding until :meth:`drained`."""
        size = msg.size = sum(map(len, msg.request))
        stats = self.server.stats
        stats.requests += 1
        stats.request_bytes += size
        timeout = self.server.timeout
        if timeout is not None and (msg.owner is not None or msg.parent is not None):
            msg.deadline = trio.current_time() + timeout
            self._timed.set()
        self.imsg_q.append(msg)
        self._wake.set()
        pending = self.pending = self.pending + size + MSG_COST
        return pending >= SERVER_QUEUE_BOUND

    @property
    def full(self) -> bool:
        """Whether clients must wait before queueing more (a closed connection never is)."""
        return self.pending >= SERVER_QUEUE_BOUND and not self.closed

    async def drained(self) -> None:
        """Wait until the kernel has taken enough that the queue is below its bound, or
        the connection has closed."""
        if self._drained is None:
            self._drained = trio.Event()
        await self._drained.wait()

    def _release(self) -> None:
        drained = self._drained
        if drained is not None and not self.full:
            self._drained = None
            drained.set()

    async def run(self) -> None:
        """Connect, then send and receive until an error closes the connection."""
        error = UNKNOWN
        server = self.server
        transport: SocketTransport | None = None
        try:
            transport = await connect(server.config)
            async with trio.open_nursery() as nursery:
                self._scope = nursery.cancel_scope
                self._close_if_retired()
                nursery.start_soon(self._send_loop, transport)
                if server.timeout is not None:
                    nursery.start_soon(self._watch_deadlines)
                await self._receive_loop(transport)
        except* (_Closed, OSError) as group:
            # The first error ends the connection (the nursery groups what its tasks raise).
            exc = _first(group)
            if isinstance(exc, _Closed):
                error = exc.text
                if exc.eof:
                    server.stats.server_eof += 1
                elif exc.text is TIMED_OUT:
                    server.stats.server_timedout += 1
                else:
                    server.stats.server_err += 1
            else:
                error = error_text(exc)  # type: ignore[arg-type]
                server.stats.server_err += 1
        finally:
            self.closed = True
            self._release()
            server.conn_closed(self)
            _wake_all(self._fail_all(error))
            if transport is not None:
                await transport.aclose()

    async def _watch_deadlines(self) -> None:
        """twemproxy's timeout: the oldest request not answered in time closes the whole
        connection (every request behind it fails too)."""
        await self._timed.wait()
        while True:
            head = self.omsg_q[0] if self.omsg_q else (self.imsg_q[0] if self.imsg_q else None)
            if head is None:
                self._timed = trio.Event()
                await self._timed.wait()
                continue
            await trio.sleep_until(head.deadline)
            if (self.omsg_q and self.omsg_q[0] is head) or (self.imsg_q and self.imsg_q[0] is head):
                raise _Closed(TIMED_OUT)

    async def _send_loop(self, transport: SocketTransport) -> None:
        while True:
            if not self.imsg_q:
                await self._wake.wait()
                self._wake = trio.Event()
                continue
            await self._send_batch(transport)

    async def _send_batch(self, transport: SocketTransport) -> None:
        """Everything queued, in one ``sendmsg`` where it fits (a method of its own so
        that nothing of the batch stays referenced while the loop waits for more)."""
        reader = self.reader
        omsg_q = self.omsg_q
        batch, self.imsg_q = self.imsg_q, deque()
        pieces: list[bytes | memoryview] = []
        for msg in batch:
            pieces += msg.request
            msg.request = _SENT
            if msg.owner is not None or msg.parent is not None:  # noreply is not tracked
                reader.expect(msg.kind)
                omsg_q.append(msg)
        total = sum(map(len, pieces))
        await transport.send_pieces(pieces, total)
        self.pending -= total + MSG_COST * len(batch)
        self._release()

    async def _receive_loop(self, transport: SocketTransport) -> None:
        while True:
            data = await transport.receive()
            if not data:
                raise _Closed(UNKNOWN, eof=True)
            self._received(data)

    def _received(self, data: bytes) -> None:
        """Pair the responses completed by one read with their requests, wake their
        clients (a method of its own: no response stays referenced between reads)."""
        omsg_q = self.omsg_q
        woken: set[Owner] = set()
        responses = self.reader.feed(data)
        for response in responses:
            if response.__class__ is BadResponse:
                _wake_all(woken)
                raise _Closed(INVALID)
            owner = omsg_q.popleft().complete(response)  # type: ignore[arg-type]
            if owner is not None:
                woken.add(owner)
        if responses:
            stats = self.server.stats
            stats.responses += len(responses)
            stats.response_bytes += len(data)
            self.server.health.server_ok(self.server)
        _wake_all(woken)
        if self.retiring:
            self._close_if_retired()

    def _fail_all(self, error: bytes) -> set[Owner]:
        """Fail every request queued on the connection, sent or not."""
        woken: set[Owner] = set()
        for queue in (self.omsg_q, self.imsg_q):
            while queue:
                owner = queue.popleft().fail(error)
                if owner is not None:
                    woken.add(owner)
        return woken


#: A sent msg's request: the kernel has its bytes.
_SENT: list[bytes | memoryview] = []


def _first(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The first leaf of a (nested) exception group."""
    exc: BaseException = group
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    return exc


def _wake_all(owners: set[Owner]) -> None:
    for owner in owners:
        owner.wake()


class Server:
    """One backend of a pool, in one worker loop: its connections, opened on demand, its
    counters and its health (failures in a row, when it may rejoin after an ejection)."""

    __slots__ = ("config", "nursery", "max_conns", "timeout", "health", "conns", "stats",
                 "failures", "next_retry", "_next")

    def __init__(self, config: ServerConfig, nursery: trio.Nursery, max_conns: int,
                 timeout: float | None, health: Health) -> None:
        self.config = config
        self.nursery = nursery
        self.max_conns = max_conns
        self.timeout = timeout  # seconds; None waits forever
        self.health = health
        self.conns: list[ServerConn] = []
        self.stats = ServerStats()
        self.failures = 0  # connection failures since the last reply
        self.next_retry = 0.0  # while ejected: when it may rejoin (the loop's clock)
        self._next = 0

    def conn(self) -> ServerConn:
        """A connection for the next request: a new one while fewer than
        ``server_connections`` are open, else the next in turn."""
        conns = self.conns
        if len(conns) < self.max_conns:
            conn = ServerConn(self)
            conns.append(conn)
            self.nursery.start_soon(conn.run)
            return conn
        self._next = (self._next + 1) % len(conns)
        return conns[self._next]

    def conn_closed(self, conn: ServerConn) -> None:
        """A connection ended on an error: one failure of this server (a retired one
        ended because it was done)."""
        if conn.retiring:
            return
        if conn in self.conns:
            self.conns.remove(conn)
        self.health.server_failed(self)

    def retire(self) -> None:
        """A reload dropped this server or changed its settings: its connections finish
        what they have and close; requests from now on open new ones."""
        conns, self.conns = self.conns, []
        for conn in conns:
            conn.retire()
