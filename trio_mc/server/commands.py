"""Executing parsed commands: the store call and the reply for each command type.

With :mod:`trio_mc.protocol.parser` (parsing) and :mod:`trio_mc.protocol.replies` (reply
bytes), this is the third of the three files that hold a command end to end.  Handlers are
plain functions ``handler(command, conn, out)`` that append reply bytes to ``out``; the
connection sends everything a batch produced with one ``send``.  ``noreply`` silences every
reply a command would send, errors included, as in memcached.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from trio_mc import MEMCACHED_VERSION
from trio_mc.protocol import binary as bp
from trio_mc.protocol import commands as cmd
from trio_mc.protocol import replies
from trio_mc.numbers import safe_strtol, safe_strtoll, safe_strtoul
from trio_mc.server import stats
from trio_mc.server.logger import Watcher, uriencode
from trio_mc.sizes import too_large
from trio_mc.store.results import (
    TTL_RECACHE, TTL_REPORT, TTL_SET, TTL_VIVIFY, DeleteResult, DeltaResult, ReassignResult, StoreResult,
)
from trio_mc.store.store import ADD, APPEND, CAS, PREPEND, REPLACE, SET

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
    if conn.budget and len(c.keys) > conn.budget:
        conn.tstats.response_obj_oom += 1
        out.append(b"SERVER_ERROR out of memory writing get response\r\n")
        return
    if c.exptime is None and not (conn.settings.detail_enabled or conn.server.logger.fetchers):
        if c.with_cas:
            for key, suffix, data in conn.store.get_multi_cas(c.keys):
                out += (replies.VALUE, key, suffix, data)
        elif len(c.keys) == 1:
            tail = conn.store.get_one(c.keys[0])
            if tail is not None:
                out += (replies.VALUE, c.keys[0], tail)
        else:
            for key, tail in conn.store.get_multi(c.keys):
                out += (replies.VALUE, key, tail)
        out.append(replies.END)
        return
    hits = conn.store.get(c.keys, c.exptime)
    if conn.settings.detail_enabled or conn.server.logger.fetchers:
        _record_gets(c.keys, hits, conn)
    if c.with_cas:
        for key, flags, cas, data in hits:
            out.append(replies.value_header_cas(key, flags, len(data) - 2, cas))
            out.append(data)
    else:
        for key, flags, _, data in hits:
            out.append(replies.value_header(key, flags, len(data) - 2))
            out.append(data)
    out.append(replies.END)


def _record_gets(keys: list[bytes], hits: list[Any], conn: Conn) -> None:
    """Per-prefix stats and ``watch fetchers`` lines for a get (only when asked for)."""
    found = {hit[0]: hit for hit in hits}
    logger = conn.server.logger
    for key in keys:
        hit = found.get(key)
        if conn.settings.detail_enabled:
            conn.server.prefix_stats.record_get(key, hit is not None)
        if b"fetchers" in logger.kinds:
            size = len(hit[3]) - 2 if hit else 0
            logger.log(b"fetchers", b"type=item_get key=%b status=%b clsid=%d cfd=%d size=%d" % (
                uriencode(key), b"found" if hit else b"not_found",
                conn.store.item_clsid(len(key), hit[1], size + 2) if hit else 0,
                conn.fd, size))


_LOG_STATUS = {
    StoreResult.STORED: b"stored", StoreResult.NOT_STORED: b"not_stored", StoreResult.EXISTS: b"exists",
    StoreResult.NOT_FOUND: b"not_found", StoreResult.NO_MEMORY: b"no_memory",
}
_LOG_CMD = {ADD: b"add", SET: b"set", REPLACE: b"replace", APPEND: b"append", PREPEND: b"prepend", CAS: b"cas"}


def _log_store(conn: Conn, key: bytes, mode: int, result: int, exptime: int, flags: int,
               data: bytes) -> None:
    """``watch mutations`` lines for a storage command: its lookup, then the store."""
    logger = conn.server.logger
    if b"fetchers" in logger.kinds or b"mutations" in logger.kinds:
        clsid = conn.store.item_clsid(len(key), flags, len(data))
        logger.log(b"mutations", b"type=item_get key=%b status=not_found clsid=0 cfd=%d size=0" % (
            uriencode(key), conn.fd))
        logger.log(b"mutations", b"type=item_store key=%b status=%b cmd=%b ttl=%d clsid=%d cfd=%d size=%d" % (
            uriencode(key), _LOG_STATUS[result], _LOG_CMD[mode], max(exptime, 0), clsid, conn.fd,
            len(data) - 2))


def do_store(c: cmd.Store, conn: Conn, out: list[Any]) -> None:
    if conn.settings.detail_enabled:
        conn.server.prefix_stats.record_set(c.key)
    result = conn.store.store(c.mode, c.key, c.flags, c.exptime, c.data, c.cas)[0]
    if conn.server.logger.kinds:
        _log_store(conn, c.key, c.mode, result, c.exptime, c.flags, c.data)
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
        out.append(replies.number(value) if result == DeltaResult.OK else _DELTA_ERRORS[result])


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
    conn.close_reason = b"error"


def do_watch(c: cmd.Watch, conn: Conn, out: list[Any]) -> None:
    if not conn.settings.watch_enabled:
        out.append(b"CLIENT_ERROR watch commands not allowed\r\n")
    elif out:
        out.append(b"ERROR cannot pipeline other commands before watch\r\n")
    else:
        out.append(replies.OK)
        conn.watcher = Watcher(frozenset(c.kinds), conn.settings.logger_watcher_buf_size)


def do_auth(c: cmd.Auth, conn: Conn, out: list[Any]) -> None:
    """ASCII authentication (``-Y``): "user pass" checked against the auth file."""
    conn.tstats.auth_cmds += 1
    if conn.server.auth_check(c.user, c.password):
        conn.parser.require_auth = False
        conn.reparse = True  # commands pipelined behind the attempt are read normally
        out.append(replies.STORED)
    else:
        conn.tstats.auth_errors += 1
        out.append(b"CLIENT_ERROR authentication failure\r\n")


def do_admin(c: cmd.Admin, conn: Conn, out: list[Any]) -> None:
    out.append(_ADMIN[c.name](c.args, conn, out))


_REASSIGN = {
    ReassignResult.OK: replies.OK,
    ReassignResult.BADCLASS: b"BADCLASS invalid src or dst class id\r\n",
    ReassignResult.NOSPARE: b"NOSPARE source class has no spare pages\r\n",
    ReassignResult.SAME: b"SAME src and dst class are identical\r\n",
}


def _slabs(args: list[bytes], conn: Conn, out: list[Any]) -> bytes:
    """slabs reassign / automove: pages move between classes' accounting (see store)."""
    s = conn.settings
    if len(args) == 3 and args[0] == b"reassign":
        if not s.slab_reassign:
            return b"CLIENT_ERROR slab reassignment disabled\r\n"
        src, dst = safe_strtol(args[1]), safe_strtol(args[2])
        if src is None or dst is None:
            return replies.CLIENT_ERROR_FORMAT
        return _REASSIGN[conn.store.reassign(src, dst)]
    if len(args) >= 2 and args[0] == b"automove":
        if args[1] == b"ratio":
            try:
                s.slab_automove_ratio = float(args[2]) if len(args) >= 3 else float("nan")
            except ValueError:
                return replies.ERROR
            return replies.OK if s.slab_automove_ratio == s.slab_automove_ratio else replies.ERROR
        level = safe_strtoul(args[1])
        if level is None:
            return replies.CLIENT_ERROR_FORMAT
        if level > 2:
            return replies.ERROR
        s.slab_automove = level
        conn.store.automove = s.slab_reassign and level > 0
        return replies.OK
    return replies.ERROR


def _lru(args: list[bytes], conn: Conn, out: list[Any]) -> bytes:
    """lru tune / mode / temp_ttl: settings only (trio-mc's LRU is not segmented in memory)."""
    s = conn.settings
    if args[0] == b"mode" and len(args) == 2 and args[1] in (b"flat", b"segmented"):
        s.lru_segmented = conn.store.lru_segmented = args[1] == b"segmented"
        return replies.OK
    if args[0] == b"temp_ttl" and len(args) == 2:
        ttl = safe_strtol(args[1])
        if ttl is None:
            return replies.ERROR
        s.temp_lru = ttl >= 0
        s.temporary_ttl = ttl
        conn.store.temporary_ttl = ttl if s.temp_lru else None
        return replies.OK
    if args[0] == b"tune" and len(args) == 5:
        numbers = [safe_strtoul(a) for a in args[1:3]]
        try:
            factors = [float(a) for a in args[3:5]]
        except ValueError:
            return replies.ERROR
        if None in numbers:
            return replies.ERROR
        s.hot_lru_pct, s.warm_lru_pct = numbers  # type: ignore[assignment]
        s.hot_max_factor, s.warm_max_factor = factors
        conn.store.hot_lru_pct, conn.store.warm_lru_pct = s.hot_lru_pct, s.warm_lru_pct
        return replies.OK
    return replies.ERROR


def _classes(spec: bytes, conn: Conn) -> set[int] | None | bool:
    """An ``lru_crawler`` class list: ``None`` for all, ``False`` if invalid."""
    if spec in (b"all", b"hash"):
        return None
    ids = set()
    for part in spec.split(b","):
        clsid = safe_strtoul(part)
        if clsid is None or not 1 <= clsid <= len(conn.store.slabs.sizes):
            return False
        ids.add(clsid)
    return ids


def _lru_crawler(args: list[bytes], conn: Conn, out: list[Any]) -> bytes:
    s = conn.settings
    if len(args) == 2 and args[0] in (b"crawl", b"metadump"):
        if not s.lru_crawler:
            return b"CLIENT_ERROR lru crawler disabled\r\n"
        classes = _classes(args[1], conn)
        if classes is False:
            return b"BADCLASS invalid class id\r\n"
        if args[0] == b"crawl":
            conn.store.crawl(classes)  # type: ignore[arg-type]
            return replies.OK
        if not s.dump_enabled:
            return b"ERROR metadump not allowed\r\n"
        if out:
            return b"ERROR cannot pipeline other commands before metadump\r\n"
        lines = [
            b"key=%b exp=%d la=%d cas=%d fetch=%b cls=%d size=%d\n" % (
                uriencode(key), exp, la, cas, b"yes" if fetched else b"no", clsid, size)
            for key, exp, la, cas, fetched, clsid, size in conn.store.metadump()
            if classes is None or clsid in classes  # type: ignore[operator]
        ]
        return b"".join(lines) + replies.END
    if len(args) == 2 and args[0] in (b"tocrawl", b"sleep"):
        value = safe_strtoul(args[1])
        if value is None:
            return replies.CLIENT_ERROR_FORMAT
        if args[0] == b"sleep":
            if value > 1_000_000:
                return b"CLIENT_ERROR sleep must be one second or less\r\n"
            s.lru_crawler_sleep = value
        else:
            s.lru_crawler_tocrawl = value
        return replies.OK
    if len(args) == 1 and args[0] in (b"enable", b"disable"):
        enable = args[0] == b"enable"
        if s.lru_crawler == enable:
            return b"ERROR failed to %b lru crawler thread\r\n" % (b"start" if enable else b"stop")
        s.lru_crawler = enable
        return replies.OK
    return replies.ERROR


def _debugtime(args: list[bytes], conn: Conn, out: list[Any]) -> bytes:
    """debugtime <seconds>: move server time (debug builds of memcached only; trio-mc enables
    it with ``-o relaxed_privileges``, the debug-build option memcached's tests pass)."""
    if not conn.settings.debug_commands:
        return replies.ERROR
    if args[0] in (b"p", b"r"):
        return replies.OK
    delta = safe_strtoll(args[0])
    if delta is None or not 0 < conn.store.clock.current + delta < 1 << 31:
        return replies.ERROR  # server time is a 32-bit count of seconds
    conn.store.clock.shift(delta)
    return replies.OK


_ADMIN: dict[bytes, Callable[[list[bytes], Conn, list[Any]], bytes]] = {
    b"slabs": _slabs, b"lru": _lru, b"lru_crawler": _lru_crawler, b"debugtime": _debugtime,
}


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

_TTL_FLAGS = {ord("T"): TTL_SET, ord("N"): TTL_VIVIFY, ord("R"): TTL_RECACHE, ord("t"): TTL_REPORT}
_DELETE_CODES = {DeleteResult.DELETED: b"HD", DeleteResult.NOT_FOUND: b"NF", DeleteResult.EXISTS: b"EX"}
_STORE_MODES = {0: SET, ord("S"): SET, ord("E"): ADD, ord("A"): APPEND, ord("P"): PREPEND,
                ord("R"): REPLACE}
_META_STORE_CODES = {
    StoreResult.STORED: b"HD", StoreResult.NOT_STORED: b"NS", StoreResult.EXISTS: b"EX",
    StoreResult.NOT_FOUND: b"NF",
}


def _ttl_ops(c: cmd.Meta) -> list[tuple[int, int]]:
    """T, N, R and t in request order, with their parsed tokens."""
    values = {TTL_SET: c.ttl, TTL_VIVIFY: c.vivify, TTL_RECACHE: c.recache}
    return [(_TTL_FLAGS[t[0]], values.get(_TTL_FLAGS[t[0]]) or 0) for t in c.tokens if t[0] in _TTL_FLAGS]


def do_meta(c: cmd.Meta, conn: Conn, out: list[Any]) -> None:
    _META_HANDLERS[c.op](c, conn, out)


def _meta_get(c: cmd.Meta, conn: Conn, out: list[Any]) -> None:
    item = conn.store.meta_get(
        c.key, _ttl_ops(c), vivify=c.vivify is not None,
        bump=not c.no_update, touched=c.ttl is not None, binary=c.binary, new_cas=c.new_cas,
        claim=c.late_error is None,
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
    if result == StoreResult.NO_MEMORY:
        out.append(replies.SERVER_ERROR_NO_MEMORY)
        return
    if result == StoreResult.STORED and c.quiet:
        return
    values = {0x63: b"%d" % cas}
    if result == StoreResult.STORED:
        values[0x73] = b"%d" % size
    out.append(_META_STORE_CODES[result] + replies.meta_flags(c.tokens, values, c.key, c.binary) + b"\r\n")


def _meta_delete(c: cmd.Meta, conn: Conn, out: list[Any]) -> None:
    if conn.settings.detail_enabled:
        conn.server.prefix_stats.record_delete(c.key)
    code = conn.store.meta_delete(c.key, compare_cas=c.compare_cas, stale=c.stale, ttl=c.ttl,
                                  drop_value=c.drop_value, new_cas=c.new_cas)
    if code == DeleteResult.DELETED and c.quiet:
        return
    out.append(_DELETE_CODES[code] + replies.meta_flags(c.tokens, {}, c.key, c.binary) + b"\r\n")


def _meta_arith(c: cmd.Meta, conn: Conn, out: list[Any]) -> None:
    incr = c.mode not in (ord("D"), ord("-"))
    result, value, cas, ttl, created = conn.store.meta_arith(
        c.key, incr, c.delta, _ttl_ops(c), compare_cas=c.compare_cas,
        vivify=c.vivify is not None, initial=c.initial, binary=c.binary, new_cas=c.new_cas,
    )
    if result == DeltaResult.NON_NUMERIC:
        out.append(replies.CLIENT_ERROR_NON_NUMERIC)
        return
    if result == DeltaResult.NO_MEMORY:
        out.append(replies.SERVER_ERROR_OOM)
        return
    if c.late_error:
        out.append(c.late_error)
        return
    flags = replies.meta_flags
    if result == DeltaResult.NOT_FOUND:
        out.append(b"NF" + flags(c.tokens, {}, c.key, c.binary) + b"\r\n")
        return
    if result == DeltaResult.CAS_MISMATCH:
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


HANDLERS.update({
    cmd.Meta: do_meta, cmd.MetaSwallow: do_meta_swallow, cmd.MetaDebug: do_meta_debug,
    cmd.Watch: do_watch, cmd.Admin: do_admin, cmd.Auth: do_auth,
})


# -- binary protocol -----------------------------------------------------------------------------

_U32 = struct.Struct(">I")
_BIN_STORE_MODES = {bp.SET: SET, bp.ADD: ADD, bp.REPLACE: REPLACE, bp.APPEND: APPEND, bp.PREPEND: PREPEND}


def do_binary(c: cmd.Binary, conn: Conn, out: list[Any]) -> None:
    """One binary-protocol request: the same store calls as the text commands."""
    base = bp.QUIET.get(c.opcode, c.opcode)
    handler = _BINARY.get(base)
    if handler is None:
        out += bp.error(c.opcode, c.opaque, bp.UNKNOWN_COMMAND)
    elif len(c.key) > 250 or not handler(c, base, c.opcode in bp.QUIET, conn, out):
        out += bp.error(c.opcode, c.opaque, bp.EINVAL)  # malformed frame: memcached hangs up
        conn.closing = True
        conn.close_reason = b"error"


def _bin_get(c: cmd.Binary, base: int, quiet: bool, conn: Conn, out: list[Any]) -> bool:
    touching = base in (bp.GAT, bp.GATK)
    if len(c.extras) != (4 if touching else 0) or not c.key or c.bodylen != len(c.key) + len(c.extras):
        return False
    exptime = _U32.unpack(c.extras)[0] if touching else None
    hits = conn.store.get([c.key], exptime)
    with_key = base in (bp.GETK, bp.GATK)
    if hits:
        _, flags, cas, data = hits[0]
        out += bp.response(c.opcode, c.opaque, cas=cas, extras=_U32.pack(flags),
                           key=c.key if with_key else b"", value=data[:-2])
    elif not quiet:
        if with_key:
            out += bp.response(c.opcode, c.opaque, bp.KEY_ENOENT, key=c.key)
        else:
            out += bp.error(c.opcode, c.opaque, bp.KEY_ENOENT)
    return True


def _bin_touch(c: cmd.Binary, base: int, quiet: bool, conn: Conn, out: list[Any]) -> bool:
    if len(c.extras) != 4 or not c.key:
        return False
    if conn.store.touch(c.key, _U32.unpack(c.extras)[0]):
        out += bp.response(c.opcode, c.opaque)
    else:
        out += bp.error(c.opcode, c.opaque, bp.KEY_ENOENT)
    return True


def _bin_store(c: cmd.Binary, base: int, quiet: bool, conn: Conn, out: list[Any]) -> bool:
    appending = base in (bp.APPEND, bp.PREPEND)
    if len(c.extras) != (0 if appending else 8) or not c.key:
        return False
    flags, exptime = (0, 0) if appending else struct.unpack(">II", c.extras)
    mode = _BIN_STORE_MODES[base]
    if c.too_large or (not appending and too_large(
            len(c.key), flags, len(c.value) + 2, conn.settings.use_cas, conn.settings.item_size_max)):
        conn.store.too_large(SET, c.key)
        out += bp.error(c.opcode, c.opaque, bp.E2BIG)
        return True
    if c.cas and not appending:
        mode = CAS
    result, cas, _ = conn.store.store(mode, c.key, flags, exptime, c.value + b"\r\n", c.cas)
    if result == StoreResult.STORED:
        if not quiet:
            out += bp.response(c.opcode, c.opaque, cas=cas)
        return True
    if result == StoreResult.NOT_STORED:
        status = {ADD: bp.KEY_EEXISTS, REPLACE: bp.KEY_ENOENT}.get(mode, bp.NOT_STORED)
    else:
        status = {StoreResult.EXISTS: bp.KEY_EEXISTS, StoreResult.NOT_FOUND: bp.KEY_ENOENT,
                  StoreResult.NO_MEMORY: bp.ENOMEM}[result]
    out += bp.error(c.opcode, c.opaque, status)
    return True


def _bin_delete(c: cmd.Binary, base: int, quiet: bool, conn: Conn, out: list[Any]) -> bool:
    if c.extras or not c.key or c.bodylen != len(c.key):
        return False
    code = conn.store.meta_delete(c.key, compare_cas=c.cas or None, stale=False, ttl=None,
                                  drop_value=False, new_cas=None)
    if code == DeleteResult.DELETED:
        if not quiet:
            out += bp.response(c.opcode, c.opaque)
    else:
        out += bp.error(c.opcode, c.opaque, bp.KEY_ENOENT if code == DeleteResult.NOT_FOUND else bp.KEY_EEXISTS)
    return True


def _bin_arith(c: cmd.Binary, base: int, quiet: bool, conn: Conn, out: list[Any]) -> bool:
    if len(c.extras) != 20 or not c.key or c.bodylen != len(c.key) + 20:
        return False
    delta, initial, exptime = struct.unpack(">QQI", c.extras)
    create = exptime != 0xFFFFFFFF  # all ones: do not create a missing counter
    result, value, cas, _, _ = conn.store.meta_arith(
        c.key, base == bp.INCREMENT, delta, [(TTL_VIVIFY, exptime)] if create else [],
        compare_cas=c.cas or None, vivify=create, initial=initial, binary=False, new_cas=None,
    )
    if result == DeltaResult.OK:
        if not quiet:
            out += bp.response(c.opcode, c.opaque, cas=cas, value=struct.pack(">Q", value))
        return True
    status = {DeltaResult.NOT_FOUND: bp.KEY_ENOENT, DeltaResult.NON_NUMERIC: bp.DELTA_BADVAL,
              DeltaResult.CAS_MISMATCH: bp.KEY_EEXISTS, DeltaResult.NO_MEMORY: bp.ENOMEM}[result]
    out += bp.error(c.opcode, c.opaque, status)
    return True


def _bin_flush(c: cmd.Binary, base: int, quiet: bool, conn: Conn, out: list[Any]) -> bool:
    if c.key or len(c.extras) not in (0, 4) or c.bodylen != len(c.extras):
        return False
    conn.tstats.cmd_flush += 1
    if not conn.settings.flush_enabled:
        out += bp.error(c.opcode, c.opaque, bp.EINVAL)
        return True
    conn.store.flush_all(_U32.unpack(c.extras)[0] if c.extras else 0)
    if not quiet:
        out += bp.response(c.opcode, c.opaque)
    return True


def _bin_simple(c: cmd.Binary, base: int, quiet: bool, conn: Conn, out: list[Any]) -> bool:
    """noop, version, quit: no arguments at all."""
    if c.bodylen:
        return False
    if base == bp.QUIT:
        conn.closing = True
        if quiet:
            return True
    out += bp.response(c.opcode, c.opaque, value=MEMCACHED_VERSION.encode() if base == bp.VERSION else b"")
    return True


def _bin_stat(c: cmd.Binary, base: int, quiet: bool, conn: Conn, out: list[Any]) -> bool:
    if c.extras:
        return False
    group = stats.group(conn.server, c.key)
    if group is None:
        out += bp.error(c.opcode, c.opaque, bp.KEY_ENOENT)
        return True
    for name, value in group:
        out += bp.response(c.opcode, c.opaque, key=name.encode(), value=str(value).encode())
    out += bp.response(c.opcode, c.opaque)
    return True


_BINARY: dict[int, Callable[[cmd.Binary, int, bool, Conn, list[Any]], bool]] = {
    bp.GET: _bin_get, bp.GETK: _bin_get, bp.GAT: _bin_get, bp.GATK: _bin_get, bp.TOUCH: _bin_touch,
    bp.SET: _bin_store, bp.ADD: _bin_store, bp.REPLACE: _bin_store, bp.APPEND: _bin_store,
    bp.PREPEND: _bin_store, bp.DELETE: _bin_delete, bp.INCREMENT: _bin_arith,
    bp.DECREMENT: _bin_arith, bp.FLUSH: _bin_flush, bp.NOOP: _bin_simple, bp.VERSION: _bin_simple,
    bp.QUIT: _bin_simple, bp.STAT: _bin_stat,
}
HANDLERS[cmd.Binary] = do_binary
