"""The ``trio-mc proxy`` process: a twemproxy-compatible proxy on the shared network layer.

Each pool listens on its own address; the acceptor hands every client round-robin to a
worker thread, and each worker keeps its own connections to every backend (built on first
use, see :mod:`.pool`).  The stats listener (:mod:`.stats_server`) runs in the main loop.

Signals, as nutcracker 0.5.0 (each logged with its line): SIGHUP reopens the log file,
SIGTTIN/SIGTTOU raise/lower the log level, SIGUSR2 is logged only.  SIGUSR1, which
nutcracker only logs, reloads the config (:func:`reload`, trio-mc's own; ``trio-mc proxy
--reload`` sends it).
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
from trio_mc.daemon import daemonize
from trio_mc.net.acceptor import Acceptor, endpoint_for
from trio_mc.net.conn import Conn, ConnCounters, ConnGroup
from trio_mc.net.listen import bind_tcp, bind_unix
from trio_mc.net.worker import Endpoint
from trio_mc.proxy.client import ClientSession, open_client
from trio_mc.proxy.config import ConfigError, PoolConfig, load
from trio_mc.proxy.pool import Pools
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
class Listener:
    """A pool's listening sockets, and what they were bound with."""

    config: PoolConfig
    socks: list[socket.socket]
    endpoints: list[tuple[trio.socket.SocketType, Endpoint]]

    def same_address(self, config: PoolConfig) -> bool:
        """Whether ``config`` listens exactly as these sockets do (so a reload keeps them)."""
        old = self.config
        return (config.listen, config.backlog, config.reuseport) == (old.listen, old.backlog, old.reuseport)

    def close(self) -> None:
        for sock in self.socks:
            sock.close()
        if self.config.listen.is_unix:
            try:
                os.unlink(self.config.listen.host)
            except OSError:
                pass


@dataclass
class ProxyState:
    """What the proxy keeps across loops: its pools, counters and client connections.

    ``configs`` maps each pool's name to its current config: the listeners' connection
    factories read it, so a client accepted after a reload gets the new one.  It is only
    ever assigned to key by key (no moment without an entry, whatever thread reads it).
    """

    pools: list[PoolConfig]
    settings: Settings
    conf: str | None = None  # the file a reload reads
    configs: dict[str, PoolConfig] = field(default_factory=dict)
    bound: dict[str, Listener] = field(default_factory=dict)  # by pool name
    acceptor: Acceptor | None = None
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


def open_listener(state: ProxyState, config: PoolConfig) -> Listener:
    """Bind a pool's ``listen`` address (host:port, or a unix socket path [mode])."""
    listen = config.listen
    if listen.is_unix:
        socks = [bind_unix(listen.host, listen.perm, backlog=config.backlog)]
    else:
        socks = bind_tcp(listen.host, listen.port, backlog=config.backlog, reuseport=config.reuseport)
    factory = functools.partial(open_client, state.configs, config.name)
    return Listener(config, socks, [endpoint_for(sock, factory) for sock in socks])


def _count_listeners(state: ProxyState) -> None:
    listeners = [state.bound[config.name] for config in state.pools]
    state.listeners = sum(len(listener.socks) for listener in listeners)
    state.addresses = [sock.getsockname() for listener in listeners for sock in listener.socks]


def reload(state: ProxyState) -> bool:
    """Re-read ``state.conf`` and apply it without dropping a client or a request: pools
    keep their listeners when their address is unchanged, new addresses are bound, old
    ones closed (their clients stay), and each loop's pools take the new servers (see
    :mod:`.pool`).  A config that does not load, or an address that cannot be bound,
    is refused as a whole: it is logged and the running config stays."""
    assert state.conf is not None and state.acceptor is not None
    try:
        pools = load(state.conf)
    except (ConfigError, OSError) as exc:
        text = str(exc) if isinstance(exc, ConfigError) else f"cannot read {state.conf}: {exc.strerror}"
        log.error("reload of %s refused, the running config stays: %s", state.conf, text)
        return False
    fresh: dict[str, Listener] = {}
    try:
        for config in pools:
            old = state.bound.get(config.name)
            if old is None or not old.same_address(config):
                fresh[config.name] = open_listener(state, config)
    except OSError as exc:
        for listener in fresh.values():
            listener.close()
        log.error("reload of %s refused, the running config stays: failed to listen: %s",
                  state.conf, exc)
        return False
    names = {config.name for config in pools}
    for config in pools:
        state.configs[config.name] = config
    acceptor = state.acceptor
    for name, listener in list(state.bound.items()):
        if name not in names or name in fresh:
            for tsock, _ in listener.endpoints:
                acceptor.unlisten(tsock)
            listener.close()
            del state.bound[name]
    for name, listener in fresh.items():
        state.bound[name] = listener
        for tsock, endpoint in listener.endpoints:
            acceptor.listen(tsock, endpoint)
    state.pools = pools
    _count_listeners(state)
    acceptor.call_in_loops(functools.partial(_reconfigure_loop, pools))
    log.log(NOTICE, "reloaded %s: %d pools (%s)", state.conf, len(pools),
            ", ".join(config.name for config in pools))
    return True


def _reconfigure_loop(pools: list[PoolConfig], group: ConnGroup) -> None:
    """In each serving loop: its pools take the reloaded configs (a loop callback must
    not raise, so a failure is logged and that loop keeps its old config)."""
    if isinstance(group.context, Pools):
        try:
            group.context.reconfigure(pools)
        except Exception:
            log.exception("reload: a worker loop could not apply the new config")


async def proxy(pools: Sequence[PoolConfig], *, threads: int = 1, verbose: int = 0,
                handle_signals: bool = False, stats: StatsConfig | None = None,
                proxy_log: ProxyLog | None = None, conf: str | None = None,
                task_status: trio.TaskStatus[ProxyState] = trio.TASK_STATUS_IGNORED) -> None:
    """Proxy until cancelled or (``handle_signals``) SIGINT/SIGTERM.

    Args:
      threads: worker threads; 0 serves every connection in this loop.
      verbose: memcached-style protocol tracing of client connections (``-vv``); the
        proxy's log level is ``proxy_log``'s.
      stats: where the stats listener binds (port 0: any; see ``state.stats_address``);
        ``None`` runs none.
      proxy_log: the log that SIGHUP reopens and SIGTTIN/SIGTTOU adjust.
      conf: the config file SIGUSR1 reloads (:func:`reload`); ``None``: no reload.
      task_status: receives the :class:`ProxyState` once every pool accepts connections.
    """
    state = ProxyState(list(pools), connection_settings(verbose), conf=conf,
                       configs={config.name: config for config in pools})
    # Signals are caught before any port accepts, so that a signal sent as soon as the
    # proxy answers (SIGTTIN's default action would stop the process) is handled.
    # The watcher outlives the proxy's shutdown: a signal that comes while it shuts down is
    # taken too (leaving the receiver with one pending would re-deliver it, and a second
    # SIGTERM would kill the process instead of letting it exit cleanly).
    with contextlib.ExitStack() as stack:
        signals = stack.enter_context(trio.open_signal_receiver(*WATCHED)) if handle_signals else None
        async with trio.open_nursery() as outer:
            serving = trio.CancelScope()
            if signals is not None:
                outer.start_soon(_watch_signals, state, signals, proxy_log, serving)
            with serving:
                await _proxy(state, threads, verbose, stats, task_status)
            outer.cancel_scope.cancel()


async def _proxy(state: ProxyState, threads: int, verbose: int, stats: StatsConfig | None,
                 task_status: trio.TaskStatus[ProxyState]) -> None:
    """The body of :func:`proxy`: listeners, stats and acceptor, until cancelled."""
    try:
        for config in state.pools:
            state.bound[config.name] = open_listener(state, config)
        _count_listeners(state)
        acceptor = state.acceptor = Acceptor(threads, state.new_group, verbose=bool(verbose))
        state.groups = acceptor.groups
        async with trio.open_nursery() as nursery:
            if stats is not None:
                state.stats_address = await nursery.start(StatsServer(state, stats).run)
            await nursery.start(acceptor.run, [endpoint for config in state.pools
                                               for endpoint in state.bound[config.name].endpoints])
            task_status.started(state)
    finally:
        for listener in state.bound.values():
            listener.close()


WATCHED = (signal.SIGHUP, signal.SIGINT, signal.SIGTERM, signal.SIGTTIN, signal.SIGTTOU,
           signal.SIGUSR1, signal.SIGUSR2)


async def _watch_signals(state: ProxyState, signals: AsyncIterator[int],
                         proxy_log: ProxyLog | None, serving: trio.CancelScope) -> None:
    """nutcracker's signal handling (see the module docstring): SIGINT/SIGTERM cancel
    ``serving``; the watcher runs until cancelled itself."""
    async for signum in signals:
        name = f"signal {signum} ({signal.Signals(signum).name}) received"
        if signum in (signal.SIGINT, signal.SIGTERM):
            if state.exit_signal is None:
                log.log(ALWAYS, "%s, exiting", name)
                state.exit_signal = signum
                serving.cancel()
            continue
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
        elif signum == signal.SIGUSR1 and state.conf is not None:
            log.log(ALWAYS, "%s, reloading config", name)
            reload(state)
        else:
            log.log(ALWAYS, "%s", name)


def request_reload(pid_file: str) -> int:
    """``trio-mc proxy --reload``: send SIGUSR1 to the proxy whose pid ``pid_file`` holds;
    exit status 1 if there is none.  (It reloads the file it was started with.)"""
    try:
        with open(pid_file) as f:
            pid = int(f.read().strip())
        os.kill(pid, signal.SIGUSR1)
    except (OSError, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "no process id in it"
        print(f"trio-mc proxy: cannot signal the proxy of pid file '{pid_file}': {reason}",
              file=sys.stderr)
        return 1
    print(f"trio-mc proxy: reload requested from pid {pid}")
    return 0


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
        daemonize(twice=True)
    log.log(ALWAYS, "trio-mc-%s (nutcracker 0.5.0 compatible) built for %s %s %s started on pid %d",
            __version__, platform.system(), platform.release(), platform.machine(), os.getpid())
    if options.pid_file:
        with open(options.pid_file, "w") as f:
            f.write(f"{os.getpid()}\n")

    async def main() -> int:
        async with trio.open_nursery() as nursery:
            state: ProxyState = await nursery.start(functools.partial(
                proxy, pools, threads=options.threads, stats=options.stats, proxy_log=proxy_log,
                conf=options.conf,
                handle_signals=threading.current_thread() is threading.main_thread()))
        # Stopped: a SIGINT or SIGTERM from now on would only interrupt the last clean-up.
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                signal.signal(signum, signal.SIG_IGN)
        return 1 if state.exit_signal == signal.SIGINT else 0

    try:
        return trio.run(main)
    except (OSError, BaseExceptionGroup) as exc:
        # A port that cannot be bound arrives wrapped in the nurseries' exception groups.
        error: BaseException = exc
        while isinstance(error, BaseExceptionGroup) and len(error.exceptions) == 1:
            error = error.exceptions[0]
        if not isinstance(error, OSError):
            raise
        log.error("failed to listen: %s", error)
        return 1
    finally:
        if options.pid_file:
            try:
                os.unlink(options.pid_file)
            except OSError:
                pass
        proxy_log.close()
