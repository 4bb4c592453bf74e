"""Meta command semantics: mg, md, ma and me, with memcached's TTL flags and recache tokens.

What is particular to meta commands lives here: the TTL operations applied in request
order (``T`` sets, ``N`` vivifies on miss, ``R`` wins a recache token when the TTL is low,
``t`` reports), stale items (``md I``) and the win/token/stale flags of ``mg``.
"""

from __future__ import annotations

from trio_mc.numbers import safe_strtoull
from trio_mc.store.items import (
    CLSID_AT,
    FETCHED,
    HEADER_SIZE,
    KEY_BINARY,
    STALE,
    TOKEN_SENT,
    nbytes,
    pack_header,
    unpack_header,
    value_at,
)
from trio_mc.store.maintainer import Maintainer
from trio_mc.store.results import (
    TTL_RECACHE,
    TTL_REPORT,
    TTL_SET,
    TTL_VIVIFY,
    DeleteResult,
    DeltaResult,
    MetaItem,
)

_U64 = 1 << 64


class Meta(Maintainer):
    """Meta commands, and the arithmetic shared with incr/decr."""

    def _apply_ttl_ops(self, ops: list[tuple[int, int]], exptime: int, created: bool, now: int,
                       may_win: bool) -> tuple[int, int | None, bool]:
        """Apply the ``TTL_*`` operations in request order; ``TTL_REPORT`` sees the TTL at its
        own position.

        Returns the final exptime, the remaining TTL ``TTL_REPORT`` saw (``None`` if not asked
        for; -1 for never; wrapped to 32 bits as memcached prints it) and whether ``TTL_RECACHE`` won.
        """
        seen: int | None = None
        won = False
        for op, raw in ops:
            if op == TTL_SET:
                exptime = self.realtime(raw)
            elif op == TTL_VIVIFY:
                if created:
                    exptime = self.realtime(raw)
            elif op == TTL_RECACHE:
                if may_win and not created and exptime and exptime < self.realtime(raw):
                    won = True
            elif op == TTL_REPORT:
                seen = -1 if exptime == 0 else (exptime - now) & 0xFFFFFFFF
        return exptime, seen, won

    def meta_get(self, key: bytes, ops: list[tuple[int, int]], *, vivify: bool, bump: bool,
                 touched: bool, binary: bool, new_cas: int | None, claim: bool = True) -> MetaItem | None:
        """mg: fetch, maybe create (N), apply T/R in order, hand out the recache token.

        ``ops`` are ``(TTL_* operation, client exptime)`` in request order (mg T, N, R, t).  With
        ``claim`` false (the command will answer an error) a won token is not recorded.
        """
        with self.lock:
            now = self.clock.current
            record = self._find(key, now)
            created = False
            if record is None and vivify:
                new = self._record(key, 0, 0, now, self._cas_for(new_cas), KEY_BINARY if binary else 0, b"\r\n")
                record = self._link(key, None, new, now)
                created = record is not None
            if record is None:
                self._count_fetch(False, None)  # memcached counts an mg miss as a get miss, T or not
                return None
            flags, exptime, time, cas, iflags = unpack_header(record)
            exptime, ttl, won = self._apply_ttl_ops(ops, exptime, created, now, not iflags & TOKEN_SENT)
            if created and any(op == TTL_VIVIFY for op, _ in ops):
                won = True
            token_sent = bool(iflags & TOKEN_SENT)
            is_stale = bool(iflags & STALE)
            if is_stale and not token_sent:
                won = True
            new_iflags = iflags | (TOKEN_SENT if won and claim else 0)
            new_time = time
            if bump:
                new_iflags, new_time = self._bumped(new_iflags, time, now)
                new_iflags = self._rescue(key, record[CLSID_AT], iflags, new_iflags)
            self._items[key] = pack_header(flags, exptime, new_time, cas, new_iflags) + record[HEADER_SIZE:]
            self._count_fetch(touched, self.class_stats[record[CLSID_AT]])
            return MetaItem(
                flags=flags, cas=cas, data=memoryview(record)[value_at(record):], ttl=ttl,
                fetched=bool(iflags & FETCHED), idle=now - time, won=won, token_sent=token_sent,
                stale=is_stale, binary=bool(iflags & KEY_BINARY),
            )

    def meta_delete(self, key: bytes, *, compare_cas: int | None, stale: bool, ttl: int | None,
                    drop_value: bool, new_cas: int | None) -> int:
        """md: delete, or with ``stale`` (I) keep the item marked stale; a :class:`DeleteResult`."""
        with self.lock:
            now = self.clock.current
            record = self._find(key, now)
            if record is None:
                self.stats.delete_misses += 1
                return DeleteResult.NOT_FOUND
            flags, exptime, time, cas, iflags = unpack_header(record)
            if compare_cas is not None and cas != compare_cas:
                self.stats.delete_misses += 1
                return DeleteResult.EXISTS
            if stale or drop_value:
                if stale:
                    if ttl is not None:
                        exptime = self.realtime(ttl)
                    iflags = (iflags | STALE) & ~TOKEN_SENT
                cas = self._cas_for(new_cas)
                if drop_value:
                    self._link(key, record, self._record(key, flags, exptime, time, cas, iflags, b"\r\n"), now)
                else:  # memcached marks the item in place: not a new item (total_items stays)
                    self._items[key] = pack_header(flags, exptime, time, cas, iflags) + record[HEADER_SIZE:]
                return DeleteResult.DELETED
            self.class_stats[record[CLSID_AT]].delete_hits += 1
            self._unlink(key, record)
            return DeleteResult.DELETED

    def meta_arith(self, key: bytes, incr: bool, delta: int, ops: list[tuple[int, int]], *,
                   compare_cas: int | None, vivify: bool, initial: int, binary: bool,
                   new_cas: int | None) -> tuple[int, int, int, int | None, bool]:
        """ma: incr/decr, create on miss with ``initial`` (N), then T/N/t in request order.

        Returns the result, the value, the item's CAS, the ``t`` TTL and whether it was
        created.
        """
        with self.lock:
            now = self.clock.current
            result, value, record = self._delta(key, incr, delta, now, compare_cas, new_cas)
            created = False
            if result == DeltaResult.NOT_FOUND:
                if not vivify:
                    if incr:
                        self.stats.incr_misses += 1
                    else:
                        self.stats.decr_misses += 1
                    return result, 0, 0, None, False
                value = initial
                data = b"%d\r\n" % value
                new = self._record(key, 0, 0, now, self._cas_for(new_cas), KEY_BINARY if binary else 0, data)
                record = self._link(key, None, new, now)
                if record is None:
                    return DeltaResult.NO_MEMORY, 0, 0, None, False
                result, created = DeltaResult.OK, True
            if record is None:
                return result, 0, 0, None, False
            flags, exptime, time, cas, iflags = unpack_header(record)
            new_exptime, ttl, _ = self._apply_ttl_ops(ops, exptime, created, now, False)
            if new_exptime != exptime and self._items.get(key) is record:
                self._items[key] = pack_header(flags, new_exptime, time, cas, iflags) + record[HEADER_SIZE:]
            return result, value, cas, ttl, created

    def debug(self, key: bytes) -> tuple[int, int, int, bool, int, int, bool] | None:
        """me: (exp, la, cas, fetched, class, size, binary key) as memcached's debug line."""
        with self.lock:
            now = self.clock.current
            record = self._find(key, now)
            if record is None:
                return None
            flags, exptime, time, cas, iflags = unpack_header(record)
            return (-1 if exptime == 0 else now - exptime, now - time, cas, bool(iflags & FETCHED),
                    record[CLSID_AT], self._ntotal(key, flags, record), bool(iflags & KEY_BINARY))

    def _delta(self, key: bytes, incr: bool, delta: int, now: int, compare_cas: int | None,
               new_cas: int | None) -> tuple[int, int, bytes | None]:
        """The arithmetic shared by incr/decr and ma; returns the new record too."""
        record = self._find(key, now)
        if record is None:
            return DeltaResult.NOT_FOUND, 0, None
        size = nbytes(record)  # with "\r\n"
        if size <= 2:
            return DeltaResult.NON_NUMERIC, 0, None
        flags, exptime, time, cas, iflags = unpack_header(record)
        if compare_cas and cas != compare_cas:
            return DeltaResult.CAS_MISMATCH, 0, None
        value = safe_strtoull(record[value_at(record):])
        if value is None:
            return DeltaResult.NON_NUMERIC, 0, None
        if incr:
            value = (value + delta) % _U64
        else:
            value = value - delta if delta < value else 0
        cls = self.class_stats[record[CLSID_AT]]
        if incr:
            cls.incr_hits += 1
        else:
            cls.decr_hits += 1
        text = b"%d" % value
        if len(text) + 2 <= size:
            new = self._record(key, flags, exptime, self._update_time(time, now), self._cas_for(new_cas), iflags,
                               text.ljust(size - 2) + b"\r\n", record[CLSID_AT])
            self._items[key] = new
            return DeltaResult.OK, value, new
        data = text + b"\r\n"
        new = self._record(key, flags, exptime, now, self._cas_for(new_cas), iflags & KEY_BINARY, data)
        stored = self._link(key, record, new, now)
        if stored is None:
            return DeltaResult.NO_MEMORY, 0, None
        return DeltaResult.OK, value, stored
