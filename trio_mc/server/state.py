"""State shared by the acceptor and every worker: memcached's ``settings``/``stats_state``.

Counters that only one thread writes (bytes read, yields...) live in a :class:`ThreadStats`
per worker, as memcached's ``thread_stats`` do, and are summed when ``stats`` is asked for.
Connection counts change from several threads and are kept under a lock.
"""

from __future__ import annotations

import hmac
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING

from trio_mc.log import log
from trio_mc.server.logger import Logger, uriencode
from trio_mc.server.prefix_stats import PrefixStats
from trio_mc.server.thread_stats import ThreadStats
from trio_mc.settings import Settings
from trio_mc.store.store import Store

if TYPE_CHECKING:
    from trio_mc.net.conn import Conn


def load_auth_file(path: str) -> dict[bytes, bytes]:
    """memcached's ``-Y`` file: one ``user:password`` per line."""
    users = {}
    with open(path, "rb") as f:
        for line in f.read().splitlines():
            user, sep, password = line.partition(b":")
            if sep and user:
                users[user] = password
    return users


@dataclass(slots=True)
class Listener:
    """A listening socket as ``stats conns`` shows it."""

    fd: int
    addr: str  # "tcp:127.0.0.1:11211" or "unix:/path"


@dataclass
class ServerState:
    """Everything a connection may need beyond its own socket."""

    settings: Settings
    store: Store
    thread_stats: list[ThreadStats] = field(default_factory=list)
    prefix_stats: PrefixStats = field(default_factory=PrefixStats)
    logger: Logger = field(default_factory=Logger)
    listeners: list[Listener] = field(default_factory=list)
    udp: list[Listener] = field(default_factory=list)  # bound, listed, not served
    conns: dict[int, Conn] = field(default_factory=dict)  # fd -> live client connection
    lock: threading.Lock = field(default_factory=threading.Lock)
    curr_conns: int = 0
    total_conns: int = 0
    rejected_conns: int = 0
    max_conns_seen: int = 0
    accepting: bool = True
    #: Set by the server: ask for a shutdown (``True`` for graceful), from any thread.
    request_shutdown: Callable[[bool], None] = lambda graceful: None
    pid: int = field(default_factory=os.getpid)
    users: dict[bytes, bytes] = field(default_factory=dict)  # -Y: user -> password
    #: ``stats sizes`` tracking: items with a CAS from here on are counted (None: off).
    sizes_cas_min: int | None = None

    def __post_init__(self) -> None:
        self.prefix_stats.delimiter = self.settings.prefix_delimiter.encode()
        self.users = load_auth_file(self.settings.auth_file) if self.settings.auth_file else {}
        self.store.on_evict = self._log_eviction
        if self.settings.track_sizes:
            self.sizes_cas_min = 0

    def _log_eviction(self, key: bytes, fetched: bool, ttl: int, idle: int, clsid: int, size: int) -> None:
        if b"evictions" in self.logger.kinds:
            self.logger.log(b"evictions", b"type=eviction key=%b fetch=%b ttl=%d la=%d clsid=%d size=%d" % (
                uriencode(key), b"yes" if fetched else b"no", ttl, idle, clsid, size))

    def auth_check(self, user: bytes, password: bytes) -> bool:
        return hmac.compare_digest(self.users.get(user, b"\0"), password)

    def new_thread_stats(self) -> ThreadStats:
        stats = ThreadStats()
        self.thread_stats.append(stats)
        return stats

    def conn_opened(self, conn: Conn) -> None:
        with self.lock:
            self.curr_conns += 1
            self.total_conns += 1
            self.max_conns_seen = max(self.max_conns_seen, self.curr_conns)
            self.conns[conn.fd] = conn
        if b"connevents" in self.logger.kinds:
            self._log_conn(conn, b"conn_new")
        if self.settings.verbose > 1:
            log.info("<%d new auto-negotiating client connection", conn.fd)

    def conn_closed(self, conn: Conn) -> None:
        with self.lock:
            self.curr_conns -= 1
            if self.conns.get(conn.fd) is conn:
                del self.conns[conn.fd]
        if b"connevents" in self.logger.kinds:
            self._log_conn(conn, b"conn_close")
        if self.settings.verbose > 1:
            log.info("<%d connection closed.", conn.fd)

    def _log_conn(self, conn: Conn, event: bytes) -> None:
        """``watch connevents``: conn_new / conn_close lines."""
        if conn.addr.startswith("unix:"):
            rip, rport, transport = b"unix", b"0", b"local"
        else:
            host, _, port = conn.addr[4:].rpartition(":")
            rip, rport, transport = host.strip("[]").encode(), port.encode(), b"tcp"
        line = b"type=%b rip=%b rport=%b transport=%b " % (event, rip, rport, transport)
        if event == b"conn_close":
            line += b"reason=%b " % conn.close_reason
        self.logger.log(b"connevents", line + b"cfd=%d" % conn.fd)

    def thread_totals(self) -> ThreadStats:
        total = ThreadStats()
        for stats in list(self.thread_stats):
            for f in fields(ThreadStats):
                setattr(total, f.name, getattr(total, f.name) + getattr(stats, f.name))
        return total
