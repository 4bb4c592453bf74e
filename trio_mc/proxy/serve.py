"""The ``trio-mc proxy`` process: a twemproxy-compatible proxy on the shared network layer.

Each pool listens on its own address; the acceptor hands every client round-robin to a
worker thread, and each worker keeps its own connections to every backend (built on first
use, see :mod:`.pool`).  The stats listener (:mod:`.stats_server`) runs in the main loop.

Signals, as nutcracker 0.5.0 (each logged with its line): SIGHUP reopens the log file,
SIGTTIN/SIGTTOU raise/lower the log level, SIGUSR1/SIGUSR2 are logged only (no reload yet).
SIGINT and SIGTERM stop the proxy cleanly: listeners close, every client and backend
connection is closed, every worker thread is joined.  SIGINT then exits 1, as nutcracker
does; SIGTERM (which nutcracker does not catch: it dies of it, silently) exits 0 with a log
line, because service managers read 0 as a clean stop.

Logging goes through :mod:`logging` (logger ``trio_mc.proxy``) to stderr or ``-o FILE``, in
nutcracker's line format ``[YYYY-mm-dd HH:MM:SS.mmm] file:line message``; ``-v`` takes
nutcracker's levels 0-11 (5, notice, by default), mapped onto the stdlib levels.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import platform
import signal
import socket
import sys
import threading
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field

import trio

from trio_mc import __version__
from trio_mc.net.acceptor import Acceptor, endpoint_for
from trio_mc.net.conn import Conn, ConnCounters, ConnGroup
from trio_mc.net.listen import bind_tcp, bind_unix
from trio_mc.proxy.client import ClientSession, open_client
from trio_mc.proxy.config import ConfigError, PoolConfig, load
from trio_mc.proxy.stats_server import StatsConfig, StatsServer
from trio_mc.settings import Settings
from trio_mc.store.clock import Clock

#: The largest value a client may store through the proxy: larger ones are refused
#: before their data is read (memcached's own default ``-I`` is 1 MiB; backends decide
#: below this).
ITEM_SIZE_MAX = 16 * 1024 * 1024

log = logging.getLogger("trio_mc.proxy")

#: nutcracker's log levels (LOG_EMERG 0 ... LOG_NOTICE 5, LOG_INFO 6, LOG_DEBUG 7, up to
#: LOG_PVERB 11) as stdlib levels: 0-2 critical, 3 error, 4 warning, 5 notice, 6 info,
#: 7 and above debug.
LOG_LEVEL_DEFAULT = 5
LOG_LEVEL_MAX = 11
NOTICE = 25
logging.addLevelName(NOTICE, "NOTICE")
#: nutcracker's ``loga``/``log_safe`` lines (start, signals, level changes) are written at
#: any level: logged as CRITICAL, which every level lets through.
ALWAYS = logging.CRITICAL


def stdlib_level(level: int) -> int:
    return {0: logging.CRITICAL, 1: logging.CRITICAL, 2: logging.CRITICAL, 3: logging.ERROR,
            4: logging.WARNING, 5: NOTICE, 6: logging.INFO}.get(level, logging.DEBUG)


class ProxyLog:
    """The proxy's log: its destination (reopened on SIGHUP, for logrotate) and level."""

    FORMAT = "[%(asctime)s.%(msecs)03d] %(filename)s:%(lineno)d %(message)s"

    def __init__(self, path: str | None, level: int) -> None:
        self.path = path
        self.level = level
        self.handler: logging.Handler | None = None
        self.reopen()
        log.setLevel(stdlib_level(level))
        log.propagate = False

    def reopen(self) -> None:
        """Open the log file anew (the old one may have been renamed away)."""
        handler: logging.Handler = (logging.FileHandler(self.path) if self.path
                                    else logging.StreamHandler(sys.stderr))
        handler.setFormatter(logging.Formatter(self.FORMAT, "%Y-%m-%d %H:%M:%S"))
        if self.handler is not None:
            log.removeHandler(self.handler)
            self.handler.close()
        self.handler = handler
        log.addHandler(handler)

    def up(self) -> None:
        self.level = min(self.level + 1, LOG_LEVEL_MAX)
        log.setLevel(stdlib_level(self.level))
        log.log(ALWAYS, "up log level to %d", self.level)

    def down(self) -> None:
        self.level = max(self.level - 1, 0)
        log.setLevel(stdlib_level(self.level))
        log.log(ALWAYS, "down log level to %d", self.level)

    def close(self) -> None:
        if self.handler is not None:
            log.removeHandler(self.handler)
            self.handler.close()
            self.handler = None


@dataclass
class ProxyState:
    """What the proxy keeps across loops: its pools, counters and client connections."""

    pools: list[PoolConfig]
    settings: Settings
    clock: Clock = field(default_factory=Clock)
    counters: list[ConnCounters] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    curr_connections: int = 0  # client connections (the stats add listeners and servers)
    total_connections: int = 0
    groups: list[ConnGroup] = field(default_factory=list)  # every loop's connections
    listeners: int = 0  # listening sockets of the pools
    addresses: list[object] = field(default_factory=list)  # their getsockname(), pool order
    stats_address: tuple[str, int] | None = None  # where the stats listener is bound
    exit_signal: int | None = None  # the signal that stopped the proxy

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
        counters = ConnCounters()
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
                handle_signals: bool = False, stats: StatsConfig | None = None,
                proxy_log: ProxyLog | None = None,
                task_status: trio.TaskStatus[ProxyState] = trio.TASK_STATUS_IGNORED) -> None:
    """Proxy until cancelled or (``handle_signals``) SIGINT/SIGTERM.

    Args:
      threads: worker threads; 0 serves every connection in this loop.
      verbose: memcached-style protocol tracing of client connections (``-vv``); the
        proxy's log level is ``proxy_log``'s.
      stats: where the stats listener binds (port 0: any; see ``state.stats_address``);
        ``None`` runs none.
      proxy_log: the log that SIGHUP reopens and SIGTTIN/SIGTTOU adjust.
      task_status: receives the :class:`ProxyState` once every pool accepts connections.
    """
    state = ProxyState(list(pools), connection_settings(verbose))
    socks: list[socket.socket] = []
    # Signals are caught before any port accepts, so that a signal sent as soon as the
    # proxy answers (SIGTTIN's default action would stop the process) is handled.
    with contextlib.ExitStack() as stack:
        signals = stack.enter_context(trio.open_signal_receiver(*WATCHED)) if handle_signals else None
        await _proxy(state, socks, signals, threads, verbose, stats, proxy_log, task_status)


async def _proxy(state: ProxyState, socks: list[socket.socket], signals: AsyncIterator[int] | None,
                 threads: int, verbose: int, stats: StatsConfig | None, proxy_log: ProxyLog | None,
                 task_status: trio.TaskStatus[ProxyState]) -> None:
    """The body of :func:`proxy`, inside its signal receiver."""
    pools = state.pools
    try:
        listeners = []
        for config in pools:
            for sock in open_listener(config):
                socks.append(sock)
                listeners.append(endpoint_for(sock, functools.partial(open_client, config)))
        state.listeners = len(socks)
        state.addresses = [sock.getsockname() for sock in socks]
        acceptor = Acceptor(threads, state.new_group, verbose=bool(verbose))
        state.groups = acceptor.groups
        async with trio.open_nursery() as nursery:
            if stats is not None:
                state.stats_address = await nursery.start(StatsServer(state, stats).run)
            await nursery.start(acceptor.run, listeners)
            task_status.started(state)
            if signals is not None:
                await _watch_signals(state, signals, proxy_log)
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


WATCHED = (signal.SIGHUP, signal.SIGINT, signal.SIGTERM, signal.SIGTTIN, signal.SIGTTOU,
           signal.SIGUSR1, signal.SIGUSR2)


async def _watch_signals(state: ProxyState, signals: AsyncIterator[int],
                         proxy_log: ProxyLog | None) -> None:
    """nutcracker's signal handling (see the module docstring); returns on SIGINT/SIGTERM."""
    async for signum in signals:
        name = f"signal {signum} ({signal.Signals(signum).name}) received"
        if signum in (signal.SIGINT, signal.SIGTERM):
            log.log(ALWAYS, "%s, exiting", name)
            state.exit_signal = signum
            return
        if signum == signal.SIGHUP:
            log.log(ALWAYS, "%s, reopening log file", name)
            if proxy_log is not None:
                proxy_log.reopen()
        elif signum == signal.SIGTTIN:
            log.log(ALWAYS, "%s, up logging level", name)
            if proxy_log is not None:
                proxy_log.up()
        elif signum == signal.SIGTTOU:
            log.log(ALWAYS, "%s, down logging level", name)
            if proxy_log is not None:
                proxy_log.down()
        else:
            log.log(ALWAYS, "%s", name)


@dataclass(frozen=True, slots=True)
class ProxyOptions:
    """The ``trio-mc proxy`` command line (nutcracker's flags plus ``-T``)."""

    conf: str
    threads: int = 1
    log_level: int = LOG_LEVEL_DEFAULT
    log_file: str | None = None
    pid_file: str | None = None
    daemonize: bool = False
    stats: StatsConfig = field(default_factory=StatsConfig)


def run(options: ProxyOptions) -> int:
    """``trio-mc proxy -c FILE``: load the config, proxy until a signal; exit status
    (1 after SIGINT, as nutcracker)."""
    try:
        pools = load(options.conf)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"trio-mc proxy: cannot read {options.conf}: {exc.strerror}", file=sys.stderr)
        return 1
    try:
        proxy_log = ProxyLog(options.log_file, options.log_level)
    except OSError as exc:
        print(f"trio-mc proxy: cannot open log file {options.log_file}: {exc.strerror}",
              file=sys.stderr)
        return 1
    if options.daemonize:
        if os.fork():
            os._exit(0)
        os.setsid()
    log.log(ALWAYS, "trio-mc-%s (nutcracker 0.5.0 compatible) built for %s %s %s started on pid %d",
            __version__, platform.system(), platform.release(), platform.machine(), os.getpid())
    if options.pid_file:
        with open(options.pid_file, "w") as f:
            f.write(f"{os.getpid()}\n")

    async def main() -> int:
        async with trio.open_nursery() as nursery:
            state: ProxyState = await nursery.start(functools.partial(
                proxy, pools, threads=options.threads, stats=options.stats, proxy_log=proxy_log,
                handle_signals=threading.current_thread() is threading.main_thread()))
        return 1 if state.exit_signal == signal.SIGINT else 0

    try:
        return trio.run(main)
    except OSError as exc:
        log.error("failed to listen: %s", exc)
        return 1
    finally:
        if options.pid_file:
            try:
                os.unlink(options.pid_file)
            except OSError:
                pass
        proxy_log.close()
