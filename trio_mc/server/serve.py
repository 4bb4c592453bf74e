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

import functools
import os
import resource
import signal
import socket
import threading
from collections.abc import Callable

import trio

from trio_mc import __version__
from trio_mc.daemon import daemonize
from trio_mc.log import log, to_stderr
from trio_mc.net.acceptor import Acceptor, endpoint_for
from trio_mc.net.conn import ConnGroup
from trio_mc.net.listen import bind_tcp, bind_unix
from trio_mc.net.worker import describe
from trio_mc.protocol import replies
from trio_mc.server.handlers import open_conn
from trio_mc.server.state import Listener, ServerState
from trio_mc.settings import Settings
from trio_mc.store.clock import Clock
from trio_mc.store.slabs import SlabClasses
from trio_mc.store.store import Store

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
        return [bind_unix(settings.socketpath, settings.access, backlog=settings.backlog)], []
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
    """memcached's ``-l`` list: ``host``, ``host:port`` or ``[v6]:port`` entries."""
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
        socks += bind_tcp(None if host in ("*", "") else host, 0 if the_port == -1 else the_port, kind,
                          backlog=settings.backlog)
    return socks


def _maxconns_rule(state: ServerState) -> Callable[[socket.socket], bool]:
    """memcached's ``maxconns_fast`` rule: the new descriptor's number decides; a refused
    client gets memcached's error line before the close."""
    settings = state.settings

    def reject(sock: socket.socket) -> bool:
        if not (settings.maxconns_fast and sock.fileno() >= settings.maxconns - 1):
            return False
        with state.lock:
            state.rejected_conns += 1
        try:
            sock.setblocking(False)
            sock.send(replies.TOO_MANY_CONNECTIONS)
        except OSError:
            pass
        sock.close()
        return True

    return reject


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
    connect = functools.partial(open_conn, state)
    listeners = [endpoint_for(sock, connect) for sock in socks]
    state.listeners = [Listener(sock.fileno(), describe(sock, peer=False)) for sock in socks]
    state.udp = [Listener(sock.fileno(), describe(sock, peer=False)) for sock in udp_socks]
    _say_where(state)
    token = trio.lowlevel.current_trio_token()
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

    def new_group() -> ConnGroup:
        return ConnGroup(settings, state.store.clock, state.new_thread_stats(), state)

    acceptor = Acceptor(settings.num_threads if threads is None else threads, new_group,
                        reject=_maxconns_rule(state), verbose=bool(settings.verbose))
    state.request_shutdown = lambda is_graceful: token.run_sync_soon(request_shutdown, is_graceful)
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(acceptor.run, listeners)
            if handle_signals:
                nursery.start_soon(_watch_signals, state, request_shutdown)
            if settings.lru_maintainer_thread or settings.lru_crawler:
                nursery.start_soon(_maintain, state)
            task_status.started(state)
            await requested.wait()
            acceptor.stop_accepting()
            state.accepting = False
            if not graceful:
                nursery.cancel_scope.cancel()
                return
            if settings.verbose:
                log.warning("Gracefully stopping")
            nursery.cancel_scope.deadline = trio.current_time() + grace
            await acceptor.drain()
            nursery.cancel_scope.cancel()
    finally:
        for listener, _ in listeners:
            listener.close()
        for sock in udp_socks:
            sock.close()
        if settings.socketpath:
            try:
                os.unlink(settings.socketpath)
            except OSError:
                pass


def _say_where(state: ServerState) -> None:
    """At ``-v``, where the server listens (memcached says nothing of it at ``-v``; this is
    trio-mc's line).  At ``-vv``, also memcached's own startup lines: the slab classes and
    one "server listening" line per socket, which name no address."""
    settings = state.settings
    if not settings.verbose:
        return
    if settings.verbose > 1:
        slabs = state.store.slabs
        for clsid, (size, per_page) in enumerate(zip(slabs.sizes, slabs.per_page, strict=True), 1):
            log.info("slab class %3d: chunk size %9d perslab %7d", clsid, size, per_page)
        for listener in state.listeners:
            log.info("<%d server listening (%s)", listener.fd, settings.binding_protocol)
        for listener in state.udp:
            log.info("<%d server listening (udp)", listener.fd)
    for listener in [*state.listeners, *state.udp]:
        log.warning("trio-mc %s listening on %s", __version__, listener.addr)


async def _maintain(state: ServerState) -> None:
    """memcached's LRU maintainer and crawler threads: reclaim expired items in the
    background, a bounded step at a time, and rebalance the LRU segments."""
    while True:
        await trio.sleep(1)
        state.store.reclaim_step()
        state.store.maintain()


async def _watch_signals(state: ServerState, request_shutdown: Callable[[bool], None]) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM, signal.SIGUSR1) as signals:
        async for signum in signals:
            if state.settings.verbose:
                log.warning("Signal handled: %s.", signal.Signals(signum).name)
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


def _drop_privileges(username: str) -> int:
    """``-u``, only when run as root; memcached's message and exit status on failure."""
    import pwd

    if os.getuid() != 0 and os.geteuid() != 0:
        return 0
    try:
        entry = pwd.getpwnam(username)
    except KeyError:
        log.error("can't find the user %s to switch to", username)
        return 67  # EX_NOUSER
    if entry.pw_uid == 0:
        return 0
    try:
        os.setgroups([])
        os.setgid(entry.pw_gid)
        os.setuid(entry.pw_uid)
    except OSError:
        log.error("failed to assume identity of user %s", username)
        return 71  # EX_OSERR
    return 0


def run(settings: Settings) -> int:
    """The ``trio-mc serve`` process: set up, serve, exit cleanly on a signal.

    As memcached: ``-u`` first, then ``-d``; the ``-P`` file is written in either case but
    removed at exit only under ``-d``.
    """
    to_stderr()
    _raise_fd_limit(settings.maxconns)
    _tune_malloc()
    if settings.username:
        status = _drop_privileges(settings.username)
        if status:
            return status
    if settings.daemonize:
        daemonize(keep_stdio=bool(settings.verbose))
    if settings.pidfile:
        try:  # written whole or not at all, as memcached: a temporary file, renamed
            with open(settings.pidfile + ".tmp", "w") as f:
                f.write(f"{os.getpid()}\n")
            os.rename(settings.pidfile + ".tmp", settings.pidfile)
        except OSError as exc:
            log.warning("Could not open the pid file %s.tmp for writing: %s", settings.pidfile, exc.strerror)
    try:
        trio.run(lambda: serve(settings, handle_signals=threading.current_thread() is threading.main_thread()))
    except OSError as exc:
        where = (f"UNIX socket {settings.socketpath}" if settings.socketpath
                 else f"one of interface(s) {','.join(settings.inter)}")
        log.error("failed to listen on %s: %s", where, exc.strerror or exc)
        return 71  # EX_OSERR
    finally:
        if settings.pidfile and settings.daemonize:
            try:
                os.unlink(settings.pidfile)
            except OSError:
                pass
    return 0
