"""The backend side of the proxy: twemproxy's server and server connection.

A :class:`Server` is one backend of a pool in one worker loop; it opens up to
``server_connections`` :class:`ServerConn` lazily and hands requests to them round-robin.
A server connection keeps twemproxy's two queues: ``imsg_q``, requests waiting to be sent,
and ``omsg_q``, requests sent and waiting for their reply, in send order.  Its sender
writes everything queued in one ``sendmsg`` (requests of many clients pipelined on one
connection); its receiver reads replies, pairs each with the head of ``omsg_q`` and wakes
the clients whose head request is now done, so a reply goes out to its client from the
receiving task itself, without another task hop.

Any error on a server connection (refused, reset, closed, a reply that cannot be framed)
closes it and fails every request queued on it with the error's text, as twemproxy does;
the next request opens a new connection.
"""

from __future__ import annotations

import errno
import os
import socket
from collections import deque

import trio

from trio_mc.net.transport import SocketTransport
from trio_mc.protocol.responses import BadResponse, ResponseReader
from trio_mc.proxy.config import ServerConfig
from trio_mc.proxy.msg import Msg, Owner

#: twemproxy's text for a connection closed without an errno (``strerror(0)``).
UNKNOWN = b"unknown"
#: A reply nobody asked for, or one that cannot be framed (twemproxy: EINVAL).
INVALID = os.strerror(errno.EINVAL).encode()


def error_text(exc: OSError) -> bytes:
    """The errno text twemproxy writes after ``SERVER_ERROR``."""
    return os.strerror(exc.errno).encode() if exc.errno else UNKNOWN


class _Closed(Exception):
    """The server connection ends with this error text."""

    def __init__(self, text: bytes) -> None:
        super().__init__(text)
        self.text = text


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

    __slots__ = ("server", "imsg_q", "omsg_q", "reader", "closed", "_wake")

    def __init__(self, server: Server) -> None:
        self.server = server
        self.imsg_q: deque[Msg] = deque()
        self.omsg_q: deque[Msg] = deque()
        self.reader = ResponseReader()
        self.closed = False
        self._wake = trio.Event()

    def enqueue(self, msg: Msg) -> None:
        """Queue a request for the sender (twemproxy's ``req_server_enqueue_imsgq``)."""
        self.imsg_q.append(msg)
        self._wake.set()

    async def run(self) -> None:
        """Connect, then send and receive until an error closes the connection."""
        error = UNKNOWN
        transport: SocketTransport | None = None
        try:
            transport = await connect(self.server.config)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._send_loop, transport)
                await self._receive_loop(transport)
        except _Closed as exc:
            error = exc.text
        except OSError as exc:
            error = error_text(exc)
        finally:
            self.closed = True
            self.server.conn_closed(self)
            _wake_all(self._fail_all(error))
            if transport is not None:
                await transport.aclose()

    async def _send_loop(self, transport: SocketTransport) -> None:
        reader = self.reader
        omsg_q = self.omsg_q
        while True:
            if not self.imsg_q:
                await self._wake.wait()
                self._wake = trio.Event()
                continue
            batch, self.imsg_q = self.imsg_q, deque()
            pieces: list[bytes | memoryview] = []
            for msg in batch:
                pieces += msg.request
                if msg.owner is not None or msg.parent is not None:  # noreply is not tracked
                    reader.expect(msg.kind)
                    omsg_q.append(msg)
            await transport.send_pieces(pieces, sum(map(len, pieces)))

    async def _receive_loop(self, transport: SocketTransport) -> None:
        reader = self.reader
        omsg_q = self.omsg_q
        while True:
            data = await transport.receive()
            if not data:
                raise _Closed(UNKNOWN)
            woken: set[Owner] = set()
            for response in reader.feed(data):
                if response.__class__ is BadResponse:
                    _wake_all(woken)
                    raise _Closed(INVALID)
                owner = omsg_q.popleft().complete(response)  # type: ignore[arg-type]
                if owner is not None:
                    woken.add(owner)
            _wake_all(woken)

    def _fail_all(self, error: bytes) -> set[Owner]:
        """Fail every request queued on the connection, sent or not."""
        woken: set[Owner] = set()
        for queue in (self.omsg_q, self.imsg_q):
            while queue:
                owner = queue.popleft().fail(error)
                if owner is not None:
                    woken.add(owner)
        return woken


def _wake_all(owners: set[Owner]) -> None:
    for owner in owners:
        owner.wake()


class Server:
    """One backend of a pool, in one worker loop: its connections, opened on demand."""

    __slots__ = ("config", "nursery", "max_conns", "conns", "_next")

    def __init__(self, config: ServerConfig, nursery: trio.Nursery, max_conns: int) -> None:
        self.config = config
        self.nursery = nursery
        self.max_conns = max_conns
        self.conns: list[ServerConn] = []
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
        if conn in self.conns:
            self.conns.remove(conn)
