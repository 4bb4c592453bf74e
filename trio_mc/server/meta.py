"""The meta commands (mg, ms, md, ma, me): the store call and the reply for each.

Parsing is in :mod:`trio_mc.protocol.meta`, reply bytes in :mod:`trio_mc.protocol.replies`.
Return flags are answered in request order; T, N, R and t apply in request order too, so
they are passed to the store as an ordered list of (operation, value).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from trio_mc.modes import ADD, APPEND, CAS, PREPEND, REPLACE, SET
from trio_mc.net.conn import Effect, Out
from trio_mc.protocol import commands as cmd
from trio_mc.protocol import replies
from trio_mc.server.session import Session
from trio_mc.store.results import (
    TTL_RECACHE,
    TTL_REPORT,
    TTL_SET,
    TTL_VIVIFY,
    DeleteResult,
    DeltaResult,
    StoreResult,
)

#: The meta flags that are TTL operations, applied in request order.
_TTL_OPS = {ord("T"): TTL_SET, ord("N"): TTL_VIVIFY, ord("R"): TTL_RECACHE, ord("t"): TTL_REPORT}
_DELETE_CODES = {DeleteResult.DELETED: replies.HD, DeleteResult.NOT_FOUND: replies.NF,
                 DeleteResult.EXISTS: replies.EX}
_STORE_MODES = {0: SET, ord("S"): SET, ord("E"): ADD, ord("A"): APPEND, ord("P"): PREPEND,
                ord("R"): REPLACE}
_STORE_CODES = {
    StoreResult.STORED: replies.HD, StoreResult.NOT_STORED: replies.NS,
    StoreResult.EXISTS: replies.EX, StoreResult.NOT_FOUND: replies.NF,
}
_DECR_MODES = frozenset(b"D-")


def _ttl_ops(tokens: list[bytes], ttl: int | None, vivify: int | None,
             recache: int | None) -> list[tuple[int, int]]:
    """T, N, R and t in request order, as the store's operations with their values."""
    values = {TTL_SET: ttl, TTL_VIVIFY: vivify, TTL_RECACHE: recache}
    ops = []
    for token in tokens:
        op = _TTL_OPS.get(token[0])
        if op is not None:
            ops.append((op, values.get(op) or 0))
    return ops


def do_meta_get(c: cmd.MetaGet, s: Session, out: Out) -> Effect:
    item = s.store.meta_get(
        c.key, _ttl_ops(c.tokens, c.ttl, c.vivify, c.recache), vivify=c.vivify is not None,
        bump=not c.no_update, touched=c.ttl is not None, binary=c.binary, new_cas=c.new_cas,
        claim=c.late_error is None,
    )
    if s.settings.detail_enabled:
        s.server.prefix_stats.record_get(c.key, item is not None)
    if c.late_error:
        out.append(c.late_error)
        return None
    if item is None:
        if not c.quiet:
            out.append(replies.meta_line(replies.EN_CODE, replies.meta_flags(c.tokens, {}, c.key, c.binary)))
        return None
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
    flags = replies.meta_flags(c.tokens, values, c.key, item.binary)
    if item.token_sent:
        flags += b" Z"
    if item.stale:
        flags += b" X"
    if item.won:
        flags += b" W"
    out.append(replies.meta_line(replies.meta_value_head(size) if send_value else replies.HD, flags))
    if send_value:
        out.append(item.data)
    return None


def do_meta_set(c: cmd.MetaSet, s: Session, out: Out) -> Effect:
    mode = _STORE_MODES[c.mode]
    if c.compare_cas is not None and mode in (SET, REPLACE):
        mode = CAS
    if s.settings.detail_enabled:
        s.server.prefix_stats.record_set(c.key)
    result, cas, size = s.store.store(
        mode, c.key, c.client_flags, c.ttl or 0, c.data, c.compare_cas or 0,
        stale=c.stale, binary=c.binary, new_cas=c.new_cas, vivify=c.vivify,
    )
    if result == StoreResult.NO_MEMORY:
        out.append(replies.SERVER_ERROR_NO_MEMORY)
        return None
    if result == StoreResult.STORED and c.quiet:
        return None
    values = {0x63: b"%d" % cas}
    if result == StoreResult.STORED:
        values[0x73] = b"%d" % size
    out.append(replies.meta_line(_STORE_CODES[result], replies.meta_flags(c.tokens, values, c.key, c.binary)))
    return None


def do_meta_delete(c: cmd.MetaDelete, s: Session, out: Out) -> Effect:
    if s.settings.detail_enabled:
        s.server.prefix_stats.record_delete(c.key)
    code = s.store.meta_delete(c.key, compare_cas=c.compare_cas, stale=c.stale, ttl=c.ttl,
                               drop_value=c.drop_value, new_cas=c.new_cas)
    if code == DeleteResult.DELETED and c.quiet:
        return None
    out.append(replies.meta_line(_DELETE_CODES[code], replies.meta_flags(c.tokens, {}, c.key, c.binary)))
    return None


def do_meta_arith(c: cmd.MetaArith, s: Session, out: Out) -> Effect:
    result, value, cas, ttl, created = s.store.meta_arith(
        c.key, c.mode not in _DECR_MODES, c.delta, _ttl_ops(c.tokens, c.ttl, c.vivify, None),
        compare_cas=c.compare_cas, vivify=c.vivify is not None, initial=c.initial,
        binary=c.binary, new_cas=c.new_cas,
    )
    if result == DeltaResult.NON_NUMERIC:
        out.append(replies.CLIENT_ERROR_NON_NUMERIC)
        return None
    if result == DeltaResult.NO_MEMORY:
        out.append(replies.SERVER_ERROR_OOM)
        return None
    if c.late_error:
        out.append(c.late_error)
        return None
    flags = replies.meta_flags
    if result == DeltaResult.NOT_FOUND:
        out.append(replies.meta_line(replies.NF, flags(c.tokens, {}, c.key, c.binary)))
        return None
    if result == DeltaResult.CAS_MISMATCH:
        out.append(replies.meta_line(replies.EX, flags(c.tokens, {}, c.key, c.binary)))
        return None
    if c.quiet and not created:
        return None
    text = b"%d" % value
    values = {0x63: b"%d" % cas}
    if ttl is not None:
        values[0x74] = b"%d" % ttl
    head = replies.meta_value_head(len(text)) if c.value else replies.HD
    out.append(replies.meta_line(head, flags(c.tokens, values, c.key, c.binary)))
    if c.value:
        out.append(replies.number(value))
    return None


def do_meta_swallow(c: cmd.MetaSwallow, s: Session, out: Out) -> Effect:
    if c.drop_key is not None:  # too large: count it and drop the stale value, as memcached
        s.store.too_large(SET, c.drop_key)
    out.append(c.reply)
    return None


def do_meta_debug(c: cmd.MetaDebug, s: Session, out: Out) -> Effect:
    s.tstats.cmd_meta += 1
    info = s.store.debug(c.key)
    if info is None:
        out.append(replies.EN)
        return None
    exp, la, cas, fetched, clsid, size, binary = info
    out.append(replies.meta_debug(c.key, binary, exp, la, cas, fetched, clsid, size))
    return None


HANDLERS: dict[type, Callable[[Any, Session, Out], Effect]] = {
    cmd.MetaGet: do_meta_get, cmd.MetaSet: do_meta_set, cmd.MetaDelete: do_meta_delete,
    cmd.MetaArith: do_meta_arith, cmd.MetaSwallow: do_meta_swallow, cmd.MetaDebug: do_meta_debug,
}
