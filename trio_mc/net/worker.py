"""Worker threads: each hosts its own ``trio.run``, as each memcached worker has its own
libevent base.

The acceptor hands a worker an accepted socket with :meth:`Worker.dispatch`, together with
the :class:`Endpoint` it was accepted on (memcached's ``CQ_ITEM`` carries the listener's
transport and initial state the same way).  The socket travels through an unbounded memory
channel (memcached's per-thread CQ) and
``TrioToken.run_sync_soon`` wakes the worker's loop (memcached's notify pipe; the token's
entry queue is exactly a locked queue plus a wake-up write).  ``trio.from_thread`` cannot
be used: it refuses to run from a thread that itself runs Trio.

Each worker thread is supervised by a task in the main nursery (:meth:`Worker.supervise`):
it starts the thread, reports it ready, waits for it to end, and always joins it.  If the
main loop is cancelled, the worker is told to stop through its token; if a worker dies,
its exception propagates and the whole server stops instead of limping on.
"""

from __future__ import annotations

import math
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass

import trio

from trio_mc.net.conn import Conn, ConnGroup
from trio_mc.net.transport import SocketTransport, Transport

#: Builds the connection for an accepted socket: ``open_conn(transport, group, *, fd, addr,
#: listen_addr)``.  What the connection does is the owner's.
ConnFactory = Callable[..., Conn]


@dataclass(frozen=True, slots=True)
class Endpoint:
    """A listening socket as its connections see it: its address and their factory."""

    addr: str  # memcached's form, e.g. "tcp:127.0.0.1:11211"
    open_conn: ConnFactory


def describe(sock: socket.socket, peer: bool) -> str:
    """memcached's ``stats conns`` address form: ``tcp:ip:port`` or ``unix:path``."""
    try:
        addr = sock.getpeername() if peer else sock.getsockname()
    except OSError:
        return "unknown"
    if sock.family == socket.AF_UNIX:
        return f"unix:{addr or ''}"
    host, port = addr[0], addr[1]
    kind = "udp" if sock.type == socket.SOCK_DGRAM else "tcp"
    return f"{kind}:[{host}]:{port}" if sock.family == socket.AF_INET6 else f"{kind}:{host}:{port}"


async def serve_socket(sock: socket.socket, endpoint: Endpoint, group: ConnGroup) -> None:
    """Run one accepted client socket to completion (in whichever loop calls it)."""
    if sock.family != socket.AF_UNIX:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    transport: Transport = SocketTransport(sock)
    conn = endpoint.open_conn(transport, group, fd=sock.fileno(), addr=describe(sock, peer=True),
                              listen_addr=endpoint.addr)
    await conn.run()


class Worker:
    """One worker thread and its loop."""

    def __init__(self, index: int, group: ConnGroup) -> None:
        self.index = index
        self.group = group
        self._token: trio.lowlevel.TrioToken | None = None
        self._intake: trio.MemorySendChannel[tuple[socket.socket, Endpoint]] | None = None
        self._scope: trio.CancelScope | None = None
        self._lock = threading.Lock()
        self._stop_requested = False
        self.stopped = trio.Event()  # set in the main loop once the thread is joined

    # -- called from the acceptor's loop --------------------------------------------------

    def dispatch(self, sock: socket.socket, endpoint: Endpoint) -> None:
        """Hand an accepted socket to this worker; if the worker is gone, close it."""
        token = self._token
        if token is None:
            sock.close()
            return
        try:
            token.run_sync_soon(self._deliver, sock, endpoint)
        except trio.RunFinishedError:
            sock.close()

    def drain(self) -> None:
        """Graceful stop (any thread): take no new sockets, finish the current ones."""
        token = self._token
        if token is not None:
            try:
                token.run_sync_soon(self._drain)
            except trio.RunFinishedError:
                pass

    def call_soon(self, fn: Callable[[ConnGroup], None]) -> None:
        """Run ``fn(group)`` in the worker's loop soon (any thread); nothing if it is gone."""
        token = self._token
        if token is not None:
            try:
                token.run_sync_soon(fn, self.group)
            except trio.RunFinishedError:
                pass

    def stop(self) -> None:
        """Cancel everything in the worker (any thread, any time)."""
        with self._lock:
            self._stop_requested = True
            if self._scope is not None and self._token is not None:
                try:
                    self._token.run_sync_soon(self._scope.cancel)
                except trio.RunFinishedError:
                    pass

    # -- inside the worker's loop ---------------------------------------------------------

    def _drain(self) -> None:
        if self._intake is not None:
            self._intake.close()
        self.group.drain()

    def _deliver(self, sock: socket.socket, endpoint: Endpoint) -> None:
        # Runs as a run_sync_soon callback: an exception here would kill the worker loop.
        try:
            assert self._intake is not None
            self._intake.send_nowait((sock, endpoint))
        except (trio.WouldBlock, trio.ClosedResourceError, trio.BrokenResourceError, AssertionError):
            sock.close()

    async def _main(self, ready: Callable[[], None]) -> None:
        send, receive = trio.open_memory_channel[tuple[socket.socket, Endpoint]](math.inf)
        self._intake = send
        with trio.CancelScope() as scope:
            with self._lock:
                self._token = trio.lowlevel.current_trio_token()
                self._scope = scope
                if self._stop_requested:
                    scope.cancel()
            ready()
            async with trio.open_nursery() as nursery:
                self.group.nursery = nursery
                nursery.start_soon(self.group.sweep_idle)
                async with receive:
                    async for sock, endpoint in receive:
                        nursery.start_soon(serve_socket, sock, endpoint, self.group)
                # Intake closed (drain): the loop ends once its connections have.
                await self.group.empty.wait()
                nursery.cancel_scope.cancel()
        # Sockets still queued when the worker was stopped are closed, not leaked.
        while True:
            try:
                sock, _ = receive.receive_nowait()
            except (trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
                break
            sock.close()

    # -- in the main loop -------------------------------------------------------------------

    async def supervise(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run the worker thread; return (or raise its error) once it has been joined."""
        main_token = trio.lowlevel.current_trio_token()
        ready = trio.Event()
        done = trio.Event()
        failure: list[BaseException] = []

        def finished() -> None:
            ready.set()
            done.set()

        def body() -> None:
            try:
                trio.run(self._main, lambda: main_token.run_sync_soon(ready.set))
            except BaseException as exc:  # noqa: BLE001 (re-raised in the supervisor)
                failure.append(exc)
            finally:
                main_token.run_sync_soon(finished)

        thread = threading.Thread(target=body, name=f"trio-mc-worker-{self.index}")
        thread.start()
        try:
            await ready.wait()
            task_status.started()
            await done.wait()
        finally:
            if not done.is_set():
                self.stop()
                with trio.CancelScope(shield=True):
                    await done.wait()
            thread.join()
            self.stopped.set()
        if failure:
            raise failure[0]
