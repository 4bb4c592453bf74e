"""The server's main loop: listeners, the acceptor, worker supervision and shutdown.

Nursery tree (memcached's main thread plus its workers)::

    trio.run(serve)                      main thread
      nursery
        Worker.supervise  x N            each owns a thread running its own trio.run
        accept_loop       x listeners    accept, check -c, hand the socket round-robin
        signal watcher                   SIGINT/SIGTERM/SIGUSR1 -> stop

With ``threads=0`` there are no workers: connections run in the acceptor's own loop, so a
test can drive the whole server under one ``MockClock``.
"""

from __future__ import annotations

import errno
import functools
import itertools
import os
import resource
import signal
import socket
import sys
import threading
from collections.abc import Callable

import trio

from trio_mc.protocol import replies
from trio_mc.server.conn import ConnGroup
from trio_mc.server.handlers import open_conn
from trio_mc.server.state import Listener, ServerState
from trio_mc.server.worker import Worker, describe, serve_socket
from trio_mc.settings import Settings
from trio_mc.store.clock import Clock
from trio_mc.store.slabs import SlabClasses
from trio_mc.store.store import Store

#: accept() errors that mean "out of descriptors or memory right now": back off, retry.
ACCEPT_CAPACITY_ERRNOS = {errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS}
ACCEPT_BACKOFF = 0.1
#: How long a graceful shutdown waits for busy connections before cutting them.
GRACEFUL_TIMEOUT = 10.0


def make_store(settings: Settings, clock: Clock | None = None) -> Store:
    """The store configured from the command line."""
    return Store(
        value_suffix=replies.value_suffix,
        cas_suffix=replies.value_suffix_cas,
        clock=clock,
        maxbytes=settings.maxbytes,
        use_cas=settings.use_cas,
        evict=settings.evict_to_free,
        slabs=SlabClasses(settings.factor, settings.chunk_size, settings.slab_chunk_size_max),
        lru_segmented=settings.lru_segmented,
        item_size_max=settings.item_size_max,
        hot_lru_pct=settings.hot_lru_pct,
        warm_lru_pct=settings.warm_lru_pct,
        temporary_ttl=settings.temporary_ttl if settings.temp_lru else None,
        automove=settings.slab_reassign and settings.slab_automove > 0,
    )


def open_listeners(settings: Settings) -> tuple[list[socket.socket], list[socket.socket]]:
    """Bind every ``-l`` address for TCP and, with ``-U``, UDP (or the ``-s`` unix socket).

    UDP sockets are bound so the port is held and reported as memcached reports it, but
    trio-mc does not answer UDP requests.  With ``MEMCACHED_PORT_FILENAME`` set, the bound
    ports are written there as memcached does (for harnesses that use ephemeral ports).
    """
    if settings.socketpath:
        path = settings.socketpath
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old_umask = os.umask(~settings.access & 0o777)
        try:
            sock.bind(path)
        finally:
            os.umask(old_umask)
        sock.listen(settings.backlog)
        return [sock], []
    tcp = _bind_all(settings, settings.port, socket.SOCK_STREAM)
    udp = _bind_all(settings, settings.udpport, socket.SOCK_DGRAM)
    port_file = os.environ.get("MEMCACHED_PORT_FILENAME")
    if port_file:
        with open(port_file + ".lck", "w") as f:
            for kind, socks in (("TCP", tcp), ("UDP", udp)):
                for sock in socks:
                    family = "INET6" if sock.family == socket.AF_INET6 else "INET"
                    f.write(f"{kind} {family}: {sock.getsockname()[1]}\n")
        os.rename(port_file + ".lck", port_file)
    return tcp, udp


def _bind_all(settings: Settings, port: int, kind: int) -> list[socket.socket]:
    if port == 0:
        return []
    socks = []
    for spec in settings.inter:
        host, the_port = spec, port
        if spec.startswith("[") and "]" in spec:  # [v6]:port
            host, _, rest = spec[1:].partition("]")
            if rest.startswith(":"):
                the_port = int(rest[1:])
        elif spec.count(":") == 1:
            host, port_text = spec.split(":")
            the_port = int(port_text)
        host_or_none = None if host in ("*", "") else host
        the_port = 0 if the_port == -1 else the_port
        for family, type_, proto, _, addr in socket.getaddrinfo(
                host_or_none, the_port, socket.AF_UNSPEC, kind, 0, socket.AI_PASSIVE):
            sock = socket.socket(family, type_, proto)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(addr)
            if kind == socket.SOCK_STREAM:
                sock.listen(settings.backlog)
            socks.append(sock)
    return socks


async def accept_loop(listener: trio.socket.SocketType, state: ServerState,
                      dispatch: Callable[[socket.socket, str], None]) -> None:
    """memcached's ``conn_listening`` state: accept, apply ``-c``, hand off."""
    settings = state.settings
    listen_addr = describe(listener, peer=False)  # type: ignore[arg-type]
    while True:
        try:
            tsock, _ = await listener.accept()
        except OSError as exc:
            if exc.errno in ACCEPT_CAPACITY_ERRNOS:
                if settings.verbose:
                    print("Too many open connections", file=sys.stderr)
                await trio.sleep(ACCEPT_BACKOFF)
                continue
            raise
        sock = socket.socket(fileno=tsock.detach())
        # memcached's maxconns_fast rule: the new descriptor's number decides.
        if settings.maxconns_fast and sock.fileno() >= settings.maxconns - 1:
            with state.lock:
                state.rejected_conns += 1
            try:
                sock.setblocking(False)
                sock.send(replies.TOO_MANY_CONNECTIONS)
            except OSError:
                pass
            sock.close()
            continue
        dispatch(sock, listen_addr)


async def serve(
    settings: Settings,
    *,
    store: Store | None = None,
    threads: int | None = None,
    handle_signals: bool = False,
    grace: float = GRACEFUL_TIMEOUT,
    task_status: trio.TaskStatus[ServerState] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve until cancelled, a ``shutdown`` command, or (``handle_signals``) a signal.

    SIGINT and SIGTERM (and ``shutdown``) stop at once; SIGUSR1 (and ``shutdown graceful``)
    stop accepting, let every connection finish the command it is in and send its reply,
    and exit when all are closed (after ``grace`` seconds the rest are cut).

    Args:
      threads: worker threads; ``None`` means ``settings.num_threads``, 0 runs every
        connection in this loop.
      task_status: receives the :class:`ServerState` once listeners accept connections
        (``state.listeners`` tells the bound addresses, e.g. for port 0).
    """
    state = ServerState(settings, store or make_store(settings))
    socks, udp_socks = open_listeners(settings)
    listeners = [trio.socket.from_stdlib_socket(sock) for sock in socks]
    state.listeners = [Listener(sock.fileno(), describe(sock, peer=False)) for sock in socks]
    state.udp = [Listener(sock.fileno(), describe(sock, peer=False)) for sock in udp_socks]
    token = trio.lowlevel.current_trio_token()
    nthreads = settings.num_threads if threads is None else threads
    requested = trio.Event()
    graceful = False

    def request_shutdown(is_graceful: bool) -> None:
        nonlocal graceful
        if requested.is_set():  # a second request while draining: stop now
            graceful = False
            nursery.cancel_scope.cancel()
            return
        graceful = is_graceful
        requested.set()

    state.request_shutdown = lambda is_graceful: token.run_sync_soon(request_shutdown, is_graceful)
    try:
        async with trio.open_nursery() as nursery:
            connect = functools.partial(open_conn, state)

            def new_group() -> ConnGroup:
                return ConnGroup(settings, state.store.clock, state.new_thread_stats(), state)

            workers = [Worker(i, new_group(), connect) for i in range(nthreads)]
            for worker in workers:
                await nursery.start(worker.supervise)
            local = new_group() if not workers else None
            if local is not None:
                nursery.start_soon(local.sweep_idle)

                def dispatch(sock: socket.socket, listen_addr: str) -> None:
                    conn_nursery.start_soon(serve_socket, sock, listen_addr, local, connect)
            else:
                ring = itertools.cycle(workers)

                def dispatch(sock: socket.socket, listen_addr: str) -> None:
                    next(ring).dispatch(sock, listen_addr)
            if handle_signals:
                nursery.start_soon(_watch_signals, state, request_shutdown)
            if settings.lru_maintainer_thread or settings.lru_crawler:
                nursery.start_soon(_maintain, state)
            async with trio.open_nursery() as conn_nursery:
                accepting = trio.CancelScope()
                conn_nursery.start_soon(_accept_all, accepting, listeners, state, dispatch)
                task_status.started(state)
                await requested.wait()
                accepting.cancel()
                state.accepting = False
                if not graceful:
                    nursery.cancel_scope.cancel()
                    return
                if settings.verbose:
                    print("Gracefully stopping", file=sys.stderr)
                nursery.cancel_scope.deadline = trio.current_time() + grace
                for worker in workers:
                    worker.drain()
                if local is not None:
                    local.drain()
                    await local.empty.wait()
            for worker in workers:
                await worker.stopped.wait()
            nursery.cancel_scope.cancel()
    finally:
        for listener in listeners:
            listener.close()
        for sock in udp_socks:
            sock.close()
        if settings.socketpath:
            try:
                os.unlink(settings.socketpath)
            except OSError:
                pass


async def _maintain(state: ServerState) -> None:
    """memcached's LRU maintainer and crawler threads: reclaim expired items in the
    background, a bounded step at a time, and rebalance the LRU segments."""
    while True:
        await trio.sleep(1)
        state.store.reclaim_step()
        state.store.maintain()


async def _accept_all(scope: trio.CancelScope, listeners: list[trio.socket.SocketType],
                      state: ServerState, dispatch: Callable[[socket.socket, str], None]) -> None:
    with scope:
        async with trio.open_nursery() as nursery:
            for listener in listeners:
                nursery.start_soon(accept_loop, listener, state, dispatch)


async def _watch_signals(state: ServerState, request_shutdown: Callable[[bool], None]) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM, signal.SIGUSR1) as signals:
        async for signum in signals:
            if state.settings.verbose:
                print(f"Signal handled: {signal.Signals(signum).name}.", file=sys.stderr)
            request_shutdown(signum == signal.SIGUSR1)


def _raise_fd_limit(maxconns: int) -> None:
    """memcached raises RLIMIT_NOFILE so that ``-c`` connections can really be open."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = maxconns + 64
    if soft < want:
        new_soft = want if hard == resource.RLIM_INFINITY else min(want, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (new_soft, hard))
        except (ValueError, OSError):
            pass


def _tune_malloc() -> None:
    """Make freed memory go back to the OS, so ``-m`` bounds the process (glibc only).

    * glibc raises its mmap threshold after the first large free, so the hash table's old
      copies after each resize would stay in the heap and hold RSS above ``-m``; setting
      the threshold explicitly turns that off.
    * Each worker thread would get its own malloc arena, holding freed read buffers; under
      the GIL one arena costs nothing.

    Measured (-m 16, 4x -m written): RSS growth 24.0 MiB without, 17.5 MiB with both.
    """
    try:
        import ctypes

        libc = ctypes.CDLL(None)
        libc.mallopt(-3, 128 * 1024)  # M_MMAP_THRESHOLD
        libc.mallopt(-8, 1)  # M_ARENA_MAX
    except (OSError, AttributeError):
        pass


def _drop_privileges(username: str) -> None:
    import pwd

    if os.getuid() != 0 or username == "root":
        return
    entry = pwd.getpwnam(username)
    os.setgroups([])
    os.setgid(entry.pw_gid)
    os.setuid(entry.pw_uid)


def run(settings: Settings) -> int:
    """The ``trio-mc serve`` process: set up, serve, exit cleanly on a signal."""
    _raise_fd_limit(settings.maxconns)
    _tune_malloc()
    if settings.daemonize:
        if os.fork():
            os._exit(0)
        os.setsid()
    if settings.pidfile:
        with open(settings.pidfile, "w") as f:
            f.write(f"{os.getpid()}\n")
    if settings.username:
        try:
            _drop_privileges(settings.username)
        except (KeyError, OSError) as exc:
            print(f"can't run as {settings.username}: {exc}", file=sys.stderr)
            return 71  # EX_OSERR
    try:
        trio.run(lambda: serve(settings, handle_signals=threading.current_thread() is threading.main_thread()))
    except OSError as exc:
        print(f"failed to listen: {exc}", file=sys.stderr)
        return 71
    finally:
        if settings.pidfile:
            try:
                os.unlink(settings.pidfile)
            except OSError:
                pass
    return 0
