"""The maintenance commands: ``slabs``, ``lru``, ``lru_crawler`` and ``debugtime``.

Their arguments are checked here, where they are executed, as memcached does (the parser
only splits them).  Each subcommand returns its whole reply.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from trio_mc.net.conn import Effect, Out
from trio_mc.numbers import safe_strtol, safe_strtoll, safe_strtoul
from trio_mc.protocol import commands as cmd
from trio_mc.protocol import replies
from trio_mc.server.logger import uriencode
from trio_mc.server.session import Session


def do_admin(c: cmd.Admin, s: Session, out: Out) -> Effect:
    out.append(_ADMIN[c.name](c.args, s, out))
    return None




def _slabs(args: list[bytes], ses: Session, out: Out) -> bytes:
    """slabs reassign / automove: pages move between classes' accounting (see store)."""
    s = ses.settings
    if len(args) == 3 and args[0] == b"reassign":
        if not s.slab_reassign:
            return replies.CLIENT_ERROR_REASSIGN_DISABLED
        src, dst = safe_strtol(args[1]), safe_strtol(args[2])
        if src is None or dst is None:
            return replies.CLIENT_ERROR_FORMAT
        return replies.REASSIGN[ses.store.reassign(src, dst)]
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
        ses.store.automove = s.slab_reassign and level > 0
        return replies.OK
    return replies.ERROR


def _lru(args: list[bytes], ses: Session, out: Out) -> bytes:
    """lru tune / mode / temp_ttl: settings only (trio-mc's LRU is not segmented in memory)."""
    s = ses.settings
    if args[0] == b"mode" and len(args) == 2 and args[1] in (b"flat", b"segmented"):
        s.lru_segmented = ses.store.lru_segmented = args[1] == b"segmented"
        return replies.OK
    if args[0] == b"temp_ttl" and len(args) == 2:
        ttl = safe_strtol(args[1])
        if ttl is None:
            return replies.ERROR
        s.temp_lru = ttl >= 0
        s.temporary_ttl = ttl
        ses.store.temporary_ttl = ttl if s.temp_lru else None
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
        ses.store.hot_lru_pct, ses.store.warm_lru_pct = s.hot_lru_pct, s.warm_lru_pct
        return replies.OK
    return replies.ERROR


def _classes(spec: bytes, ses: Session) -> set[int] | bool | None:
    """An ``lru_crawler`` class list: ``None`` for all, ``False`` if invalid."""
    if spec in (b"all", b"hash"):
        return None
    ids = set()
    for part in spec.split(b","):
        clsid = safe_strtoul(part)
        if clsid is None or not 1 <= clsid <= len(ses.store.slabs.sizes):
            return False
        ids.add(clsid)
    return ids


def _lru_crawler(args: list[bytes], ses: Session, out: Out) -> bytes:
    s = ses.settings
    if len(args) == 2 and args[0] in (b"crawl", b"metadump"):
        if not s.lru_crawler:
            return replies.CLIENT_ERROR_CRAWLER_DISABLED
        classes = _classes(args[1], ses)
        if classes is False:
            return replies.BADCLASS_CRAWLER
        if args[0] == b"crawl":
            ses.store.crawl(classes)  # type: ignore[arg-type]
            return replies.OK
        if not s.dump_enabled:
            return replies.ERROR_METADUMP_DISABLED
        if out:
            return replies.ERROR_METADUMP_PIPELINED
        lines = [
            replies.metadump_line(uriencode(key), exp, la, cas, fetched, clsid, size)
            for key, exp, la, cas, fetched, clsid, size in ses.store.metadump()
            if classes is None or clsid in classes  # type: ignore[operator]
        ]
        return b"".join(lines) + replies.END
    if len(args) == 2 and args[0] in (b"tocrawl", b"sleep"):
        value = safe_strtoul(args[1])
        if value is None:
            return replies.CLIENT_ERROR_FORMAT
        if args[0] == b"sleep":
            if value > 1_000_000:
                return replies.CLIENT_ERROR_CRAWLER_SLEEP
            s.lru_crawler_sleep = value
        else:
            s.lru_crawler_tocrawl = value
        return replies.OK
    if len(args) == 1 and args[0] in (b"enable", b"disable"):
        enable = args[0] == b"enable"
        if s.lru_crawler == enable:
            return replies.crawler_toggle_failed(enable)
        s.lru_crawler = enable
        return replies.OK
    return replies.ERROR


def _debugtime(args: list[bytes], ses: Session, out: Out) -> bytes:
    """debugtime <seconds>: move server time (debug builds of memcached only; trio-mc enables
    it with ``-o relaxed_privileges``, the debug-build option memcached's tests pass)."""
    if not ses.settings.debug_commands:
        return replies.ERROR
    if args[0] in (b"p", b"r"):
        return replies.OK
    delta = safe_strtoll(args[0])
    if delta is None or not 0 < ses.store.clock.current + delta < 1 << 31:
        return replies.ERROR  # server time is a 32-bit count of seconds
    ses.store.clock.shift(delta)
    return replies.OK


_ADMIN: dict[bytes, Callable[[list[bytes], Session, Out], bytes]] = {
    b"slabs": _slabs, b"lru": _lru, b"lru_crawler": _lru_crawler, b"debugtime": _debugtime,
}


HANDLERS: dict[type, Callable[[Any, Session, Out], Effect]] = {cmd.Admin: do_admin}
