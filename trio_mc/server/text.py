"""The classic text commands: what each does to the store and the reply it appends.

With :mod:`trio_mc.protocol.parser` (parsing) and :mod:`trio_mc.protocol.replies` (reply
bytes), this is the third of the three files that hold a text command end to end.  Each
handler is ``handler(command, session, out) -> effect`` (see :mod:`trio_mc.net.conn`).
``noreply`` silences every reply a command would send, errors included, as in memcached.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import trio

from trio_mc import MEMCACHED_VERSION, modes
from trio_mc.net.conn import AUTHENTICATED, CLOSE, QUIT, Effect, Out
from trio_mc.net.transport import Transport
from trio_mc.protocol import commands as cmd
from trio_mc.protocol import replies
from trio_mc.server import stats
from trio_mc.server.logger import Watcher, uriencode
from trio_mc.server.session import Session
from trio_mc.store.results import DeltaResult, StoreResult

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


def do_get_key(key: cmd.GetKey, s: Session, out: Out) -> Effect:
    """A plain single-key get, the hot path: a hit is the key and the item's reply tail."""
    if s.settings.detail_enabled or s.server.logger.fetchers:
        return do_get(cmd.Get([key], False), s, out)
    tail = s.store.get_one(key)
    if tail is not None:
        out += (replies.VALUE, key, tail, replies.END)
    else:
        out.append(replies.END)
    return None


def do_get(c: cmd.Get, s: Session, out: Out) -> Effect:
    if s.budget and len(c.keys) > s.budget:
        s.tstats.response_obj_oom += 1
        out.append(replies.SERVER_ERROR_GET_OOM)
        return None
    logged = s.settings.detail_enabled or s.server.logger.fetchers
    if c.exptime is None and not logged:
        if c.with_cas:
            for key, suffix, data in s.store.get_multi_cas(c.keys):
                out += (replies.VALUE, key, suffix, data)
        else:
            for key, tail in s.store.get_multi(c.keys):
                out += (replies.VALUE, key, tail)
        out.append(replies.END)
        return None
    hits = s.store.get(c.keys, c.exptime)
    if logged:
        _record_gets(c.keys, hits, s)
    if c.with_cas:
        for key, flags, cas, data in hits:
            out.append(replies.value_header_cas(key, flags, len(data) - 2, cas))
            out.append(data)
    else:
        for key, flags, _, data in hits:
            out.append(replies.value_header(key, flags, len(data) - 2))
            out.append(data)
    out.append(replies.END)
    return None


def _record_gets(keys: list[bytes], hits: list[Any], s: Session) -> None:
    """Per-prefix stats and ``watch fetchers`` lines for a get (only when asked for)."""
    found = {hit[0]: hit for hit in hits}
    logger = s.server.logger
    for key in keys:
        hit = found.get(key)
        if s.settings.detail_enabled:
            s.server.prefix_stats.record_get(key, hit is not None)
        if b"fetchers" in logger.kinds:
            size = len(hit[3]) - 2 if hit else 0
            logger.log(b"fetchers", b"type=item_get key=%b status=%b clsid=%d cfd=%d size=%d" % (
                uriencode(key), b"found" if hit else b"not_found",
                s.store.item_clsid(len(key), hit[1], size + 2) if hit else 0, s.fd, size))


_LOG_STATUS = {
    StoreResult.STORED: b"stored", StoreResult.NOT_STORED: b"not_stored", StoreResult.EXISTS: b"exists",
    StoreResult.NOT_FOUND: b"not_found", StoreResult.NO_MEMORY: b"no_memory",
}


def _log_store(s: Session, key: bytes, mode: int, result: int, exptime: int, flags: int,
               data: bytes) -> None:
    """``watch mutations`` lines for a storage command: its lookup, then the store."""
    logger = s.server.logger
    if b"fetchers" in logger.kinds or b"mutations" in logger.kinds:
        clsid = s.store.item_clsid(len(key), flags, len(data))
        logger.log(b"mutations", b"type=item_get key=%b status=not_found clsid=0 cfd=%d size=0" % (
            uriencode(key), s.fd))
        logger.log(b"mutations", b"type=item_store key=%b status=%b cmd=%b ttl=%d clsid=%d cfd=%d size=%d" % (
            uriencode(key), _LOG_STATUS[result], modes.NAMES[mode], max(exptime, 0), clsid, s.fd,
            len(data) - 2))


def do_store(c: cmd.Store, s: Session, out: Out) -> Effect:
    if s.settings.detail_enabled:
        s.server.prefix_stats.record_set(c.key)
    result = s.store.store(c.mode, c.key, c.flags, c.exptime, c.data, c.cas)[0]
    if s.server.logger.kinds:
        _log_store(s, c.key, c.mode, result, c.exptime, c.flags, c.data)
    if not c.noreply:
        out.append(_STORE_REPLIES[result])
    return None


def do_too_large(c: cmd.TooLarge, s: Session, out: Out) -> Effect:
    if s.settings.detail_enabled:
        s.server.prefix_stats.record_set(c.key)
    s.store.too_large(c.mode, c.key)
    if not c.noreply:
        out.append(replies.SERVER_ERROR_TOO_LARGE)
    return None


def do_delete(c: cmd.Delete, s: Session, out: Out) -> Effect:
    if s.settings.detail_enabled:
        s.server.prefix_stats.record_delete(c.key)
    deleted = s.store.delete(c.key)
    if not c.noreply:
        out.append(replies.DELETED if deleted else replies.NOT_FOUND)
    return None


def do_arith(c: cmd.Arith, s: Session, out: Out) -> Effect:
    result, value = s.store.delta(c.key, c.incr, c.delta)
    if not c.noreply:
        out.append(replies.number(value) if result == DeltaResult.OK else _DELTA_ERRORS[result])
    return None


def do_touch(c: cmd.Touch, s: Session, out: Out) -> Effect:
    touched = s.store.touch(c.key, c.exptime)
    if not c.noreply:
        out.append(replies.TOUCHED if touched else replies.NOT_FOUND)
    return None


def do_flush_all(c: cmd.FlushAll, s: Session, out: Out) -> Effect:
    s.tstats.cmd_flush += 1  # counted even when refused, as memcached does
    if not s.settings.flush_enabled:
        reply = replies.CLIENT_ERROR_FLUSH_DISABLED
    elif c.delay is None:
        reply = replies.CLIENT_ERROR_EXPTIME
    else:
        s.store.flush_all(c.delay)
        reply = replies.OK
    if not c.noreply:
        out.append(reply)
    return None


def do_verbosity(c: cmd.Verbosity, s: Session, out: Out) -> Effect:
    s.settings.verbose = min(c.level, MAX_VERBOSITY_LEVEL)
    if not c.noreply:
        out.append(replies.OK)
    return None


def do_memlimit(c: cmd.MemLimit, s: Session, out: Out) -> Effect:
    if c.megabytes is None:
        reply = replies.ERROR
    elif c.megabytes < 8:
        reply = replies.MEMLIMIT_TOO_SMALL
    elif c.megabytes > 1_000_000_000:
        reply = replies.MEMLIMIT_NOT_BYTES
    else:
        s.settings.maxbytes = c.megabytes * 1024 * 1024
        s.store.set_maxbytes(s.settings.maxbytes)
        reply = replies.OK
    if not c.noreply:
        out.append(reply)
    return None


def do_shutdown(c: cmd.Shutdown, s: Session, out: Out) -> Effect:
    if not s.settings.shutdown_command:
        out.append(replies.SHUTDOWN_DISABLED)
    elif c.mode is None:
        out.append(replies.CLIENT_ERROR_SHUTDOWN_MODE)
    else:
        s.server.request_shutdown(c.mode == b"graceful")
        return QUIT
    return None


def do_stats(c: cmd.Stats, s: Session, out: Out) -> Effect:
    out.append(stats.render(s.server, c.args))
    return None


def do_version(c: cmd.Version, s: Session, out: Out) -> Effect:
    out.append(_VERSION)
    return None


def do_quit(c: cmd.Quit, s: Session, out: Out) -> Effect:
    return QUIT  # what is already in `out` is still sent


def do_close(c: cmd.Close, s: Session, out: Out) -> Effect:
    return CLOSE  # replies of earlier commands in the batch are still sent


def do_reply(c: cmd.Reply, s: Session, out: Out) -> Effect:
    out.append(c.data)
    return None


def do_watch(c: cmd.Watch, s: Session, out: Out) -> Effect:
    """watch: once the OK is sent, the connection becomes a log stream."""
    if not s.settings.watch_enabled:
        out.append(replies.CLIENT_ERROR_WATCH_DISABLED)
        return None
    if out:
        out.append(replies.ERROR_WATCH_PIPELINED)
        return None
    out.append(replies.OK)
    watcher = Watcher(frozenset(c.kinds), s.settings.logger_watcher_buf_size)
    logger = s.server.logger

    async def stream(transport: Transport) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_cancel_at_eof, transport, nursery.cancel_scope)
            await logger.stream(watcher, transport.send)

    return stream


async def _cancel_at_eof(transport: Transport, scope: trio.CancelScope) -> None:
    """A watcher only listens: when its client hangs up, stop streaming to it."""
    while await transport.receive():
        pass
    scope.cancel()


def do_auth(c: cmd.Auth, s: Session, out: Out) -> Effect:
    """ASCII authentication (``-Y``): "user pass" checked against the auth file."""
    s.tstats.auth_cmds += 1
    if s.server.auth_check(c.user, c.password):
        out.append(replies.STORED)
        return AUTHENTICATED  # commands pipelined behind the attempt are read normally
    s.tstats.auth_errors += 1
    out.append(replies.CLIENT_ERROR_AUTH_FAILURE)
    return None


HANDLERS: dict[type, Callable[[Any, Session, Out], Effect]] = {
    bytes: do_get_key,
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
    cmd.Watch: do_watch,
    cmd.Auth: do_auth,
}
