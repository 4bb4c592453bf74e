"""The client side of the proxy: what each parsed request does, and the client's omsg_q.

A client connection is the network layer's :class:`~trio_mc.net.conn.Conn` (the same
memcached parser and state machine as the cache server) with this module's dispatch table.
A handler turns a request into a :class:`~trio_mc.proxy.msg.Msg`, queues it on the server
connection its key maps to and appends it to the client's ``omsg_q``; requests the proxy
answers itself (errors, ``mn``) are msgs done at once, so every reply keeps its place.

Replies leave in request order: whenever a msg completes, the client writes every done msg
at the head of its queue, from whichever task completed it, with a non-blocking send; what
the kernel does not take is flushed by a short-lived task that waits for the socket.

Memory per client is bounded, whatever it does, without ever stalling a server connection
it shares with other clients (those are always read; see :mod:`.server`).  A client is not
read (the :data:`~trio_mc.net.conn.PAUSE` effect, then :meth:`ClientSession.wait_room`)
while any of these holds:

* its *window* of requests forwarded and not yet answered is full.  The window opens by
  one per reply up to :data:`MAX_IN_FLIGHT`, starting at :data:`INITIAL_WINDOW`, and closes
  at once to ``REPLY_BOUND // size`` (at least 1) on a reply of ``size`` bytes, so the
  replies a client has in flight stay near :data:`REPLY_BOUND` bytes: 10 gets of 100 KB
  values, 128 of small ones.  Only the first window's replies are of unknown size;
* :data:`OUTPUT_BOUND` bytes of its replies are not yet taken by the kernel (a client that
  does not read: the replies of its window still arrive, and are held, so it holds at most
  about OUTPUT_BOUND + REPLY_BOUND + one reply);
* the server connection its last request went to holds its bound of requests the kernel
  has not taken (a backend that does not read; ``noreply`` requests count there until
  they are sent).

The choice for a client that does not read: its in-flight requests are what bounds its held
replies, so those are answered and held (dropping them would break the stream, stalling the
server connection would stall every client on it), and it is sent nothing more.  A client
that reads gets its window back one reply at a time.  What the window cannot bound is a
single reply: a multi-get of many large values is held whole, as its request asked for it.

Deliberate difference from twemproxy, which closes a client silently on a command it does
not forward (losing the replies to earlier pipelined requests): trio-mc answers memcached's
own ``ERROR``/``CLIENT_ERROR`` line in its place and keeps the connection.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

import trio

from trio_mc.net.conn import CLOSE, PAUSE, Conn, ConnGroup, Effect, Out
from trio_mc.net.transport import Transport
from trio_mc.protocol import commands as cmd
from trio_mc.protocol import replies
from trio_mc.protocol import requests as rq
from trio_mc.protocol.responses import ARITH, DELETE, META, QUIET, RETRIEVAL, STORAGE, TOUCH, VERSION
from trio_mc.proxy.config import PoolConfig
from trio_mc.proxy.msg import Fragment, Msg, MultiGet, Piece, local
from trio_mc.proxy.pool import VERSION_KEY, Pool, Pools
from trio_mc.proxy.server import REFUSED, ServerConn

#: The largest window: requests of one client forwarded and not yet answered.
MAX_IN_FLIGHT = 128
#: The window of a new client, whose replies' size is not known yet.
INITIAL_WINDOW = 8
#: Reply bytes a client's window is sized to have in flight (``window x reply size``).
REPLY_BOUND = 1 << 20
#: Reply bytes waiting for a client that does not read before it stops being read.
OUTPUT_BOUND = 1 << 20


class ClientSession:
    """One client as the proxy's handlers see it: its pool and its ordered replies."""

    __slots__ = ("pool", "transport", "omsg_q", "window", "blocked", "out", "out_bytes",
                 "flushing", "closed", "nursery", "_room")

    def __init__(self, pool: Pool, transport: Transport, nursery: trio.Nursery) -> None:
        self.pool = pool
        self.transport = transport
        self.omsg_q: deque[Msg] = deque()
        self.window = INITIAL_WINDOW  # requests in flight before the client is paused
        self.blocked: ServerConn | None = None  # a full server connection it waits for
        self.out: list[Piece] = []  # replies written but not yet taken by the kernel
        self.out_bytes = 0  # their bytes, and those of the batch _flush is sending
        self.flushing = False
        self.closed = False
        self.nursery = nursery
        self._room = trio.Event()

    # -- requests ---------------------------------------------------------------------------

    def forward(self, key: bytes, request: list[Piece], kind: int, noreply: bool = False) -> Effect:
        """Send a request to the server that holds ``key``; its reply keeps its place.
        Returns PAUSE once the client's window is full or the server connection is."""
        msg = Msg(None if noreply else self, request, kind)
        conn = self.pool.conn_for(key)
        if conn is None:  # every server ejected
            if noreply:
                return None
            self.omsg_q.append(msg)
            msg.fail(REFUSED)
            self.wake()
        elif conn.enqueue(msg):
            self.blocked = conn
            if not noreply:
                self.omsg_q.append(msg)
            return PAUSE
        elif noreply:
            return None
        else:
            self.omsg_q.append(msg)
        return PAUSE if len(self.omsg_q) >= self.window else None

    def forward_multiget(self, keys: list[bytes], with_cas: bool, exptime: int | None) -> Effect:
        """One fragment per server, in key order; merged as twemproxy merges them (also
        with one fragment: its reply must then be VALUE blocks and END, as twemproxy's)."""
        pool = self.pool
        only = pool.only_index()
        if only is not None:  # one server: one fragment, without a lookup per key
            by_server = {only: 0}
            frag_keys = [keys]
            key_frags = [0] * len(keys)
        else:
            by_server = {}  # server index -> fragment index
            frag_keys = []
            key_frags = []
            for key in keys:
                server = pool.index_for(key)
                if server is None:  # every server ejected
                    return self.forward(key, [], RETRIEVAL)
                index = by_server.get(server)
                if index is None:
                    index = by_server[server] = len(frag_keys)
                    frag_keys.append([])
                frag_keys[index].append(key)
                key_frags.append(index)
        frags = [Fragment([rq.retrieval(part, with_cas, exptime)]) for part in frag_keys]
        parent = MultiGet(self, frags, key_frags)
        for server, index in by_server.items():
            conn = pool.servers[server].conn()
            if conn.enqueue(frags[index]):
                self.blocked = conn
        self.omsg_q.append(parent)
        return PAUSE if len(self.omsg_q) >= self.window or self.blocked else None

    def answer(self, reply: bytes) -> Effect:
        """A reply of the proxy's own, after the replies to earlier requests."""
        self.omsg_q.append(local(self, reply))
        self.wake()
        return PAUSE if len(self.omsg_q) >= self.window else None

    # -- replies ----------------------------------------------------------------------------

    def wake(self) -> None:
        """Write every done reply at the head of the queue (twemproxy's ``rsp_send_next``)."""
        if self.closed:
            return
        queue = self.omsg_q
        out = self.out
        window = self.window
        added = 0
        while queue and queue[0].done:
            msg = queue.popleft()
            if msg.failed:
                self.pool.stats.forward_error += 1
            reply = msg.render()
            out.append(reply)
            size = len(reply)
            added += size
            if size * window > REPLY_BOUND:
                window = REPLY_BOUND // size or 1
            elif window < MAX_IN_FLIGHT:
                window += 1
        self.window = window
        self.out_bytes += added
        if out and not self.flushing:
            data = out[0] if len(out) == 1 else b"".join(out)
            try:
                sent = self.transport.send_nowait(data)
            except OSError:
                self.close()
                return
            if sent == len(data):
                out.clear()
                self.out_bytes = 0
            else:
                self.out[:] = [memoryview(data)[sent:]]
                self.out_bytes = len(data) - sent
                self.flushing = True
                self.nursery.start_soon(self._flush)
        if len(queue) < window and self.out_bytes < OUTPUT_BOUND:
            self._room.set()

    async def _flush(self) -> None:
        """What the kernel did not take at once, as soon as the socket takes it (pieces
        handed to ``sendmsg`` as they are: no copy of a large reply is made)."""
        try:
            while self.out and not self.closed:
                pieces, self.out = self.out, []
                total = self.out_bytes
                await self.transport.send_pieces(pieces, total)
                del pieces  # sent: nothing holds the replies while the next batch waits
                if not self.closed:
                    self.out_bytes -= total
        except (OSError, trio.BrokenResourceError, trio.ClosedResourceError):
            self.close()
        finally:
            self.flushing = False
        if not self.closed:
            self.wake()

    async def wait_room(self) -> None:
        """Before each read: wait while the client may not add work (backpressure)."""
        while True:
            blocked = self.blocked
            if blocked is not None:
                if blocked.full:
                    await blocked.drained()
                    continue
                self.blocked = None
            if len(self.omsg_q) < self.window and self.out_bytes < OUTPUT_BOUND:
                return
            self._room = trio.Event()
            await self._room.wait()

    async def drained(self, transport: Transport) -> None:
        """``quit``: close once every earlier request is answered."""
        while (self.omsg_q or self.out or self.flushing) and not self.closed:
            self._room = trio.Event()
            await self._room.wait()

    def close(self) -> None:
        """The client is gone: its pending replies are dropped as they arrive."""
        self.closed = True
        self.omsg_q.clear()
        self.out.clear()
        self.out_bytes = 0
        self._room.set()


# -- handlers: one per command type, ``handler(command, session, out) -> effect`` ------------

def _get_key(key: cmd.GetKey, s: ClientSession, out: Out) -> Effect:
    return s.forward(key, [b"get " + key + b"\r\n"], RETRIEVAL)


def _get(c: cmd.Get, s: ClientSession, out: Out) -> Effect:
    if not c.keys:
        return s.answer(replies.END)  # gat with no key: memcached answers END
    if len(c.keys) == 1:
        return s.forward(c.keys[0], [rq.retrieval(c.keys, c.with_cas, c.exptime)], RETRIEVAL)
    return s.forward_multiget(c.keys, c.with_cas, c.exptime)


def _store(c: cmd.Store, s: ClientSession, out: Out) -> Effect:
    line = rq.storage_line(c.mode, c.key, c.flags, c.exptime, len(c.data) - 2, c.cas, c.noreply)
    return s.forward(c.key, [line, c.data], STORAGE, c.noreply)


def _too_large(c: cmd.TooLarge, s: ClientSession, out: Out) -> Effect:
    return None if c.noreply else s.answer(replies.SERVER_ERROR_TOO_LARGE)


def _arith(c: cmd.Arith, s: ClientSession, out: Out) -> Effect:
    return s.forward(c.key, [rq.arith(c.key, c.incr, c.delta, c.noreply)], ARITH, c.noreply)


def _delete(c: cmd.Delete, s: ClientSession, out: Out) -> Effect:
    return s.forward(c.key, [rq.delete(c.key, c.noreply)], DELETE, c.noreply)


def _touch(c: cmd.Touch, s: ClientSession, out: Out) -> Effect:
    return s.forward(c.key, [rq.touch(c.key, c.exptime, c.noreply)], TOUCH, c.noreply)


def _version(c: cmd.Version, s: ClientSession, out: Out) -> Effect:
    return s.forward(VERSION_KEY, [rq.VERSION], VERSION)


def _meta(c: cmd.MetaGet | cmd.MetaSet | cmd.MetaDelete | cmd.MetaArith, s: ClientSession,
          out: Out) -> Effect:
    """mg/ms/md/ma by key (a base64 key is hashed decoded).  A quiet one is fenced with
    ``mn``: its reply, if the backend sends one, is whatever comes before the MN."""
    request = rq.write(c)
    if c.quiet:
        return s.forward(c.key, [*request, rq.MN], QUIET)
    return s.forward(c.key, request, META)


def _meta_debug(c: cmd.MetaDebug, s: ClientSession, out: Out) -> Effect:
    return s.forward(c.key, [b"me " + c.key + b"\r\n"], META)


def _meta_swallow(c: cmd.MetaSwallow, s: ClientSession, out: Out) -> Effect:
    return s.answer(c.reply)


def _reply(c: cmd.Reply, s: ClientSession, out: Out) -> Effect:
    return s.answer(c.data)


def _unsupported(c: object, s: ClientSession, out: Out) -> Effect:
    """A command a proxy does not forward (stats, flush_all, watch...): memcached's ERROR."""
    return s.answer(replies.ERROR)


def _quit(c: cmd.Quit, s: ClientSession, out: Out) -> Effect:
    return s.drained


def _close(c: cmd.Close, s: ClientSession, out: Out) -> Effect:
    return CLOSE


HANDLERS: dict[type, Callable[[Any, ClientSession, Out], Effect]] = {
    bytes: _get_key, cmd.Get: _get, cmd.Store: _store, cmd.TooLarge: _too_large,
    cmd.Arith: _arith, cmd.Delete: _delete, cmd.Touch: _touch, cmd.Version: _version,
    cmd.MetaGet: _meta, cmd.MetaSet: _meta, cmd.MetaDelete: _meta, cmd.MetaArith: _meta,
    cmd.MetaDebug: _meta_debug, cmd.MetaSwallow: _meta_swallow, cmd.Reply: _reply,
    cmd.Quit: _quit, cmd.Close: _close,
    **{t: _unsupported for t in (cmd.FlushAll, cmd.Verbosity, cmd.MemLimit, cmd.Shutdown,
                                 cmd.Stats, cmd.Watch, cmd.Admin, cmd.Auth, cmd.Binary)},
}


def open_client(configs: Mapping[str, PoolConfig], name: str, transport: Transport, group: ConnGroup, *,
                fd: int, addr: str, listen_addr: str) -> Conn:
    """A client connection of the pool ``name`` (its current config in ``configs``, which a
    reload updates), served by this worker loop's backends."""
    assert group.nursery is not None
    pools = group.context
    if not isinstance(pools, Pools):
        pools = group.context = Pools(group.nursery)
    session = ClientSession(pools.get(configs[name]), transport, group.nursery)
    return Conn(transport, group, HANDLERS, session, fd=fd, addr=addr, listen_addr=listen_addr,
                before_read=session.wait_room)

