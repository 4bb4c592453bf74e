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
from trio_mc.store.store import ADD, APPEND, CAS, PREPEND, REPLACE, SET, DeltaResult, StoreResult

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
    result = conn.store.store(c.mode, c.key, c.flags, c.exptime, c.data, c.cas)[0]
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


# -- meta commands -----------------------------------------------------------------------------

_TTL_FLAGS = frozenset(b"TNRt")
_STORE_MODES = {0: SET, ord("S"): SET, ord("E"): ADD, ord("A"): APPEND, ord("P"): PREPEND,
                ord("R"): REPLACE}
_META_STORE_CODES = {
    StoreResult.STORED: b"HD", StoreResult.NOT_STORED: b"NS", StoreResult.EXISTS: b"EX",
    StoreResult.NOT_FOUND: b"NF",
}


def _ttl_ops(c: cmd.Meta) -> list[tuple[int, int]]:
    """T, N, R and t in request order, with their parsed tokens."""
    values = {0x54: c.ttl, 0x4E: c.vivify, 0x52: c.recache}
    return [(t[0], values.get(t[0]) or 0) for t in c.tokens if t[0] in _TTL_FLAGS]


def do_meta(c: cmd.Meta, conn: Conn, out: list[Any]) -> None:
    _META_HANDLERS[c.op](c, conn, out)


def _meta_get(c: cmd.Meta, conn: Conn, out: list[Any]) -> None:
    item = conn.store.meta_get(
        c.key, _ttl_ops(c), vivify=c.vivify is not None,
        bump=not c.no_update, touched=c.ttl is not None, binary=c.binary, new_cas=c.new_cas,
    )
    if conn.settings.detail_enabled:
        conn.server.prefix_stats.record_get(c.key, item is not None)
    if c.late_error:
        out.append(c.late_error)
        return
    if item is None:
        if not c.quiet:
            out.append(b"EN" + replies.meta_flags(c.tokens, {}, c.key, c.binary) + b"\r\n")
        return
    size = len(item.data) - 2
    values = {
        0x73: b"%d" % size,  # s
        0x63: b"%d" % item.cas,  # c
        0x66: b"%d" % item.flags,  # f
        0x6C: b"%d" % item.idle,  # l
        0x68: b"1" if item.fetched else b"0",  # h
    }
    if item.ttl is not None:
        values[0x74] = b"%d" % item.ttl
    send_value = c.value and not (c.compare_cas is not None and c.compare_cas == item.cas)
    line = [b"VA %d" % size if send_value else b"HD",
            replies.meta_flags(c.tokens, values, c.key, item.binary)]
    if item.token_sent:
        line.append(b" Z")
    if item.stale:
        line.append(b" X")
    if item.won:
        line.append(b" W")
    line.append(b"\r\n")
    out.append(b"".join(line))
    if send_value:
        out.append(item.data)


def _meta_set(c: cmd.Meta, conn: Conn, out: list[Any]) -> None:
    assert c.data is not None
    mode = _STORE_MODES[c.mode]
    if c.compare_cas is not None and mode in (SET, REPLACE):
        mode = CAS
    if conn.settings.detail_enabled:
        conn.server.prefix_stats.record_set(c.key)
    result, cas, size = conn.store.store(
        mode, c.key, c.client_flags, c.ttl or 0, c.data, c.compare_cas or 0,
        stale=c.stale, binary=c.binary, new_cas=c.new_cas, vivify=c.vivify,
    )
    if result is StoreResult.NO_MEMORY:
        out.append(replies.SERVER_ERROR_NO_MEMORY)
        return
    if result is StoreResult.STORED and c.quiet:
        return
    values = {0x63: b"%d" % cas}
    if result is StoreResult.STORED:
        values[0x73] = b"%d" % size
    out.append(_META_STORE_CODES[result] + replies.meta_flags(c.tokens, values, c.key, c.binary) + b"\r\n")


def _meta_delete(c: cmd.Meta, conn: Conn, out: list[Any]) -> None:
    if conn.settings.detail_enabled:
        conn.server.prefix_stats.record_delete(c.key)
    code = conn.store.meta_delete(c.key, compare_cas=c.compare_cas, stale=c.stale, ttl=c.ttl,
                                  drop_value=c.drop_value, new_cas=c.new_cas)
    if code == "HD" and c.quiet:
        return
    out.append(code.encode() + replies.meta_flags(c.tokens, {}, c.key, c.binary) + b"\r\n")


def _meta_arith(c: cmd.Meta, conn: Conn, out: list[Any]) -> None:
    incr = c.mode not in (ord("D"), ord("-"))
    result, value, cas, ttl, created = conn.store.meta_arith(
        c.key, incr, c.delta, _ttl_ops(c), compare_cas=c.compare_cas,
        vivify=c.vivify is not None, initial=c.initial, binary=c.binary, new_cas=c.new_cas,
    )
    if result is DeltaResult.NON_NUMERIC:
        out.append(replies.CLIENT_ERROR_NON_NUMERIC)
        return
    if result is DeltaResult.NO_MEMORY:
        out.append(replies.SERVER_ERROR_OOM)
        return
    if c.late_error:
        out.append(c.late_error)
        return
    flags = replies.meta_flags
    if result is DeltaResult.NOT_FOUND:
        out.append(b"NF" + flags(c.tokens, {}, c.key, c.binary) + b"\r\n")
        return
    if result is DeltaResult.CAS_MISMATCH:
        out.append(b"EX" + flags(c.tokens, {}, c.key, c.binary) + b"\r\n")
        return
    if c.quiet and not created:
        return
    text = b"%d" % value
    values = {0x63: b"%d" % cas}
    if ttl is not None:
        values[0x74] = b"%d" % ttl
    head = b"VA %d" % len(text) if c.value else b"HD"
    out.append(head + flags(c.tokens, values, c.key, c.binary) + b"\r\n")
    if c.value:
        out.append(text + b"\r\n")


_META_HANDLERS: dict[int, Callable[[cmd.Meta, Conn, list[Any]], None]] = {
    ord("g"): _meta_get, ord("s"): _meta_set, ord("d"): _meta_delete, ord("a"): _meta_arith,
}


def do_meta_swallow(c: cmd.MetaSwallow, conn: Conn, out: list[Any]) -> None:
    if c.drop_key is not None:  # too large: count it and drop the stale value, as memcached
        conn.store.too_large(SET, c.drop_key)
    out.append(c.reply)


def do_meta_debug(c: cmd.MetaDebug, conn: Conn, out: list[Any]) -> None:
    conn.tstats.cmd_meta += 1
    info = conn.store.debug(c.key)
    if info is None:
        out.append(replies.EN)
        return
    exp, la, cas, fetched, clsid, size, binary = info
    out.append(replies.meta_debug(c.key, binary, exp, la, cas, fetched, clsid, size))


HANDLERS.update({cmd.Meta: do_meta, cmd.MetaSwallow: do_meta_swallow, cmd.MetaDebug: do_meta_debug})
