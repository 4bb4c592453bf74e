"""The acceptor: memcached's main thread (its ``conn_listening`` state and dispatcher).

It accepts on every listening socket, lets the owner refuse a socket (memcached's ``-c``
rule), and hands each accepted socket round-robin to a worker thread, or serves it in its
own loop when there are no workers (``threads=0``, which tests use so one ``MockClock``
drives everything).  A graceful drain stops accepting, lets every connection finish its
command and reply, and returns once all are closed.

Listeners may come and go while it runs (the proxy's live reload: :meth:`Acceptor.listen`,
:meth:`Acceptor.unlisten`), and the owner may run a function in every loop
(:meth:`Acceptor.call_in_loops`) to change per-loop state where it lives.
"""

from __future__ import annotations

import errno
import itertools
import socket
from collections.abc import Callable, Sequence

import trio

from trio_mc.log import log
from trio_mc.net.conn import ConnGroup
from trio_mc.net.worker import Endpoint, Worker, describe, serve_socket

#: accept() errors that mean "out of descriptors or memory right now": back off, retry.
ACCEPT_CAPACITY_ERRNOS = {errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS}
ACCEPT_BACKOFF = 0.1

#: ``reject(sock) -> bool``: the owner's admission rule, run on each accepted socket before
#: hand-off; when it refuses (True) it has answered and closed the socket itself.
Reject = Callable[[socket.socket], bool]


class Acceptor:
    """Listening sockets, accept loops and the workers they feed.

    Args:
      nthreads: worker threads; 0 serves every connection in the acceptor's own loop.
      new_group: a fresh :class:`~trio_mc.net.conn.ConnGroup` for each loop that serves
        connections (each worker's, or the acceptor's with no workers).
      reject: the admission rule (see :data:`Reject`).
      verbose: report accept back-offs on stderr.
    """

    def __init__(self, nthreads: int, new_group: Callable[[], ConnGroup], *,
                 reject: Reject | None = None, verbose: bool = False) -> None:
        self.workers = [Worker(i, new_group()) for i in range(nthreads)]
        self.local = new_group() if not nthreads else None
        self.reject = reject
        self.verbose = verbose
        self._accepting = trio.CancelScope()
        self._drained = trio.Event()
        self._accept_nursery: trio.Nursery | None = None
        self._dispatch: Callable[[socket.socket, Endpoint], None] | None = None
        self._loops: dict[trio.socket.SocketType, trio.CancelScope] = {}

    @property
    def groups(self) -> list[ConnGroup]:
        """Every loop's connection group."""
        return [self.local] if self.local is not None else [w.group for w in self.workers]

    async def run(self, listeners: Sequence[tuple[trio.socket.SocketType, Endpoint]], *,
                  task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Start the workers, accept until stopped; return after :meth:`drain` (or raise
        when cancelled, once every worker thread is joined)."""
        async with trio.open_nursery() as nursery:
            for worker in self.workers:
                await nursery.start(worker.supervise)
            async with trio.open_nursery() as conn_nursery:
                local = self.local
                if local is not None:
                    local.nursery = conn_nursery
                    conn_nursery.start_soon(local.sweep_idle)

                    def dispatch(sock: socket.socket, endpoint: Endpoint) -> None:
                        conn_nursery.start_soon(serve_socket, sock, endpoint, local)
                else:
                    ring = itertools.cycle(self.workers)

                    def dispatch(sock: socket.socket, endpoint: Endpoint) -> None:
                        next(ring).dispatch(sock, endpoint)

                self._dispatch = dispatch
                await conn_nursery.start(self._accept_all, listeners)
                task_status.started()
                await self._drained.wait()
                conn_nursery.cancel_scope.cancel()
            nursery.cancel_scope.cancel()

    def stop_accepting(self) -> None:
        self._accepting.cancel()

    async def drain(self) -> None:
        """Stop accepting; idle connections close now, busy ones after their reply; returns
        once every connection is closed and every worker thread joined (``run`` returns)."""
        self.stop_accepting()
        for worker in self.workers:
            worker.drain()
        if self.local is not None:
            self.local.drain()
            await self.local.empty.wait()
        for worker in self.workers:
            await worker.stopped.wait()
        self._drained.set()

    def listen(self, listener: trio.socket.SocketType, endpoint: Endpoint) -> None:
        """Start accepting on one more listening socket (while :meth:`run` runs)."""
        assert self._accept_nursery is not None, "the acceptor is not running"
        scope = self._loops[listener] = trio.CancelScope()
        self._accept_nursery.start_soon(self._accept_loop, listener, endpoint, scope)

    def unlisten(self, listener: trio.socket.SocketType) -> None:
        """Stop accepting on ``listener`` (the caller closes it); its connections stay."""
        scope = self._loops.pop(listener, None)
        if scope is not None:
            scope.cancel()

    def call_in_loops(self, fn: Callable[[ConnGroup], None]) -> None:
        """Run ``fn(group)`` in each serving loop, soon (in this one at once without
        workers).  ``fn`` must not raise: it runs as a worker loop's callback."""
        if self.local is not None:
            fn(self.local)
        for worker in self.workers:
            worker.call_soon(fn)

    async def _accept_all(self, listeners: Sequence[tuple[trio.socket.SocketType, Endpoint]], *,
                          task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        with self._accepting:
            async with trio.open_nursery() as nursery:
                self._accept_nursery = nursery
                for listener, endpoint in listeners:
                    self.listen(listener, endpoint)
                task_status.started()
                await trio.sleep_forever()

    async def _accept_loop(self, listener: trio.socket.SocketType, endpoint: Endpoint,
                           scope: trio.CancelScope) -> None:
        """memcached's ``conn_listening`` state: accept, admit, hand off."""
        with scope:
            await self._accept(listener, endpoint)

    async def _accept(self, listener: trio.socket.SocketType, endpoint: Endpoint) -> None:
        dispatch = self._dispatch
        assert dispatch is not None
        while True:
            try:
                tsock, _ = await listener.accept()
            except OSError as exc:
                if exc.errno in ACCEPT_CAPACITY_ERRNOS:
                    if self.verbose:
                        log.warning("Too many open connections")
                    await trio.sleep(ACCEPT_BACKOFF)
                    continue
                raise
            sock = socket.socket(fileno=tsock.detach())
            if self.reject is not None and self.reject(sock):
                continue
            dispatch(sock, endpoint)


def endpoint_for(sock: socket.socket, open_conn: Callable[..., object]) -> tuple[trio.socket.SocketType, Endpoint]:
    """A bound listening socket, ready for :meth:`Acceptor.run`."""
    return trio.socket.from_stdlib_socket(sock), Endpoint(describe(sock, peer=False), open_conn)  # type: ignore[arg-type]
