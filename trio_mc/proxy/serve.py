"""The ``trio-mc proxy`` process: a twemproxy-compatible proxy on the shared network layer.

Each pool listens on its own address; the acceptor hands every client round-robin to a
worker thread, and each worker keeps its own connections to every backend (built on first
use, see :mod:`.pool`).  SIGINT and SIGTERM stop the proxy cleanly: listeners close, every
client and backend connection is closed, every worker thread is joined.
"""

from __future__ import annotations

import functools
import os
import signal
import socket
import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field

import trio

from trio_mc.net.acceptor import Acceptor, endpoint_for
from trio_mc.net.conn import Conn, ConnGroup
from trio_mc.net.listen import bind_tcp, bind_unix
from trio_mc.proxy.client import ClientSession, open_client
from trio_mc.proxy.config import ConfigError, PoolConfig, load
from trio_mc.settings import Settings
from trio_mc.store.clock import Clock

#: The largest value a client may store through the proxy: larger ones are refused
#: before their data is read (memcached's own default ``-I`` is 1 MiB; backends decide
#: below this).
ITEM_SIZE_MAX = 16 * 1024 * 1024


@dataclass(slots=True)
class ProxyCounters:
    """A worker loop's connection counters (what :class:`~trio_mc.net.conn.Conn` keeps)."""

    bytes_read: int = 0
    bytes_written: int = 0
    conn_yields: int = 0
    idle_kicks: int = 0
    response_obj_oom: int = 0


@dataclass
class ProxyState:
    """What the proxy keeps across loops: its pools, counters and client connections."""

    pools: list[PoolConfig]
    settings: Settings
    clock: Clock = field(default_factory=Clock)
    counters: list[ProxyCounters] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    curr_connections: int = 0
    total_connections: int = 0

    def conn_opened(self, conn: Conn) -> None:
        with self.lock:
            self.curr_connections += 1
            self.total_connections += 1

    def conn_closed(self, conn: Conn) -> None:
        with self.lock:
            self.curr_connections -= 1
        session = conn.session
        if isinstance(session, ClientSession):
            session.close()  # replies still in flight are dropped as they arrive
            if conn.close_reason == b"error":
                session.pool.stats.client_err += 1
            else:
                session.pool.stats.client_eof += 1

    def new_group(self) -> ConnGroup:
        counters = ProxyCounters()
        self.counters.append(counters)
        return ConnGroup(self.settings, self.clock, counters, self)


def connection_settings(verbose: int = 0) -> Settings:
    """What a client connection of the proxy follows: the text protocol only, a bounded
    value size, no memcached-server limits (those are the backends')."""
    settings = Settings()
    settings.binding_protocol = "ascii"
    settings.item_size_max = ITEM_SIZE_MAX
    settings.verbose = verbose
    return settings


def open_listener(config: PoolConfig) -> list[socket.socket]:
    """Bind a pool's ``listen`` address (host:port, or a unix socket path [mode])."""
    listen = config.listen
    if listen.is_unix:
        return [bind_unix(listen.host, listen.perm, backlog=config.backlog)]
    return bind_tcp(listen.host, listen.port, backlog=config.backlog, reuseport=config.reuseport)


async def proxy(pools: Sequence[PoolConfig], *, threads: int = 1, verbose: int = 0,
                handle_signals: bool = False,
                task_status: trio.TaskStatus[ProxyState] = trio.TASK_STATUS_IGNORED) -> None:
    """Proxy until cancelled or (``handle_signals``) SIGINT/SIGTERM.

    Args:
      threads: worker threads; 0 serves every connection in this loop.
      task_status: receives the :class:`ProxyState` once every pool accepts connections.
    """
    state = ProxyState(list(pools), connection_settings(verbose))
    socks: list[socket.socket] = []
    try:
        listeners = []
        for config in pools:
            for sock in open_listener(config):
                socks.append(sock)
                listeners.append(endpoint_for(sock, functools.partial(open_client, config)))
        acceptor = Acceptor(threads, state.new_group, verbose=bool(verbose))
        async with trio.open_nursery() as nursery:
            await nursery.start(acceptor.run, listeners)
            task_status.started(state)
            if handle_signals:
                with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                    async for _ in signals:
                        break
                nursery.cancel_scope.cancel()
    finally:
        for sock in socks:
            sock.close()
        for config in pools:
            if config.listen.is_unix:
                try:
                    os.unlink(config.listen.host)
                except OSError:
                    pass


def run(conf: str, *, threads: int = 1, verbose: int = 0) -> int:
    """``trio-mc proxy -c FILE``: load the config, proxy until a signal; exit status."""
    try:
        pools = load(conf)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"trio-mc proxy: cannot read {conf}: {exc.strerror}", file=sys.stderr)
        return 1
    try:
        trio.run(functools.partial(proxy, pools, threads=threads, verbose=verbose,
                                   handle_signals=threading.current_thread() is threading.main_thread()))
    except OSError as exc:
        print(f"trio-mc proxy: failed to listen: {exc}", file=sys.stderr)
        return 1
    return 0
