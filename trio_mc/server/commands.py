"""Executing parsed commands: the store call and the reply for each command type.

With :mod:`trio_mc.protocol.parser` (parsing) and :mod:`trio_mc.protocol.replies` (reply
bytes), this is the third of the three files that hold a command end to end.  Handlers are
plain functions ``handler(command, conn, out)`` that append reply bytes to ``out``; the
connection sends everything a batch produced with one ``send``.  ``noreply`` silences every
reply a command would send, errors included, as in memcached.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from trio_mc import MEMCACHED_VERSION
from trio_mc.protocol import commands as cmd
from trio_mc.protocol import replies
from trio_mc.server import stats
from trio_mc.store.store import DeltaResult, StoreResult

if TYPE_CHECKING:
    from trio_mc.server.conn import Conn

#: memcached caps ``verbosity`` at this level.
MAX_VERBOSITY_LEVEL = 2

_STORE_REPLIES = {
    StoreResult.STORED: replies.STORED,
    StoreResult.NOT_STORED: replies.NOT_STORED,
    StoreResult.EXISTS: replies.EXISTS,
    StoreResult.NOT_FOUND: replies.NOT_FOUND,
    StoreResult.NO_MEMORY: replies.SERVER_ERROR_NO_MEMORY,
}
_DELTA_ERRORS = {
    DeltaResult.NOT_FOUND: replies.NOT_FOUND,
    DeltaResult.NON_NUMERIC: replies.CLIENT_ERROR_NON_NUMERIC,
    DeltaResult.NO_MEMORY: replies.SERVER_ERROR_OOM,
}
_VERSION = replies.version(MEMCACHED_VERSION)


def do_get(c: cmd.Get, conn: Conn, out: list[Any]) -> None:
    hits = conn.store.get(c.keys, c.exptime)
    if conn.settings.detail_enabled:
        found = {hit[0] for hit in hits}
        for key in c.keys:
            conn.server.prefix_stats.record_get(key, key in found)
    if c.with_cas:
        for key, flags, cas, data in hits:
            out.append(b"VALUE %b %d %d %d\r\n" % (key, flags, len(data) - 2, cas))
            out.append(data)
    else:
        for key, flags, _, data in hits:
            out.append(b"VALUE %b %d %d\r\n" % (key, flags, len(data) - 2))
            out.append(data)
    out.append(replies.END)


def do_store(c: cmd.Store, conn: Conn, out: list[Any]) -> None:
    if conn.settings.detail_enabled:
        conn.server.prefix_stats.record_set(c.key)
    result = conn.store.store(c.mode, c.key, c.flags, c.exptime, c.data, c.cas)
    if not c.noreply:
        out.append(_STORE_REPLIES[result])


def do_too_large(c: cmd.TooLarge, conn: Conn, out: list[Any]) -> None:
    if conn.settings.detail_enabled:
        conn.server.prefix_stats.record_set(c.key)
    conn.store.too_large(c.mode, c.key)
    if not c.noreply:
        out.append(replies.SERVER_ERROR_TOO_LARGE)


def do_delete(c: cmd.Delete, conn: Conn, out: list[Any]) -> None:
    if conn.settings.detail_enabled:
        conn.server.prefix_stats.record_delete(c.key)
    deleted = conn.store.delete(c.key)
    if not c.noreply:
        out.append(replies.DELETED if deleted else replies.NOT_FOUND)


def do_arith(c: cmd.Arith, conn: Conn, out: list[Any]) -> None:
    result, value = conn.store.delta(c.key, c.incr, c.delta)
    if not c.noreply:
        out.append(replies.number(value) if result is DeltaResult.OK else _DELTA_ERRORS[result])


def do_touch(c: cmd.Touch, conn: Conn, out: list[Any]) -> None:
    touched = conn.store.touch(c.key, c.exptime)
    if not c.noreply:
        out.append(replies.TOUCHED if touched else replies.NOT_FOUND)


def do_flush_all(c: cmd.FlushAll, conn: Conn, out: list[Any]) -> None:
    conn.tstats.cmd_flush += 1  # counted even when refused, as memcached does
    if not conn.settings.flush_enabled:
        reply = replies.CLIENT_ERROR_FLUSH_DISABLED
    elif c.delay is None:
        reply = replies.CLIENT_ERROR_EXPTIME
    else:
        conn.store.flush_all(c.delay)
        reply = replies.OK
    if not c.noreply:
        out.append(reply)


def do_verbosity(c: cmd.Verbosity, conn: Conn, out: list[Any]) -> None:
    conn.settings.verbose = min(c.level, MAX_VERBOSITY_LEVEL)
    if not c.noreply:
        out.append(replies.OK)


def do_memlimit(c: cmd.MemLimit, conn: Conn, out: list[Any]) -> None:
    if c.megabytes is None:
        reply = replies.ERROR
    elif c.megabytes < 8:
        reply = replies.MEMLIMIT_TOO_SMALL
    elif c.megabytes > 1_000_000_000:
        reply = replies.MEMLIMIT_NOT_BYTES
    else:
        conn.settings.maxbytes = c.megabytes * 1024 * 1024
        conn.store.set_maxbytes(conn.settings.maxbytes)
        reply = replies.OK
    if not c.noreply:
        out.append(reply)


def do_shutdown(c: cmd.Shutdown, conn: Conn, out: list[Any]) -> None:
    if not conn.settings.shutdown_command:
        out.append(replies.SHUTDOWN_DISABLED)
    elif c.mode is None:
        out.append(replies.CLIENT_ERROR_SHUTDOWN_MODE)
    else:
        conn.closing = True
        conn.server.request_shutdown(c.mode == b"graceful")


def do_stats(c: cmd.Stats, conn: Conn, out: list[Any]) -> None:
    out.append(stats.render(conn.server, c.args))


def do_version(c: cmd.Version, conn: Conn, out: list[Any]) -> None:
    out.append(_VERSION)


def do_quit(c: cmd.Quit, conn: Conn, out: list[Any]) -> None:
    conn.closing = True  # what is already in `out` is still sent


def do_close(c: cmd.Close, conn: Conn, out: list[Any]) -> None:
    conn.closing = True  # replies of earlier commands in the batch are still sent


def do_reply(c: cmd.Reply, conn: Conn, out: list[Any]) -> None:
    out.append(c.data)


HANDLERS: dict[type, Callable[[Any, Conn, list[Any]], None]] = {
    cmd.Get: do_get,
    cmd.Store: do_store,
    cmd.TooLarge: do_too_large,
    cmd.Delete: do_delete,
    cmd.Arith: do_arith,
    cmd.Touch: do_touch,
    cmd.FlushAll: do_flush_all,
    cmd.Verbosity: do_verbosity,
    cmd.MemLimit: do_memlimit,
    cmd.Shutdown: do_shutdown,
    cmd.Stats: do_stats,
    cmd.Version: do_version,
    cmd.Quit: do_quit,
    cmd.Close: do_close,
    cmd.Reply: do_reply,
}
