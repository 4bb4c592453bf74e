"""The item store: memcached's hash table, segmented LRU, CAS counter and memory limit.

Theory of operation
-------------------
:class:`Store` is the one object the server talks to.  It is built in layers, one concern
each, over one shared state (see :mod:`.table` for why they are layers, not objects):

- :mod:`.table`: the hash table (key -> immutable record, :mod:`.items`), CAS, expiry
  (memcached's ``realtime``: up to 30 days relative, more an absolute Unix time, negative
  already expired) and ``flush_all``;
- :mod:`.memory`: ``-m`` in real Python bytes, memcached's ``bytes`` and slab pages, eviction;
- :mod:`.maintainer`: the segmented LRU (HOT/WARM/COLD/TEMP per slab class, :mod:`.lru`),
  its background maintainer and the crawler;
- :mod:`.meta`: the meta commands' semantics;
- this module: the classic commands (get, set and friends, delete, touch, incr/decr).

One ``threading.Lock`` guards every operation; no operation blocks or awaits while holding
it, so worker threads (each with its own Trio loop) share the store safely.  Time is an
injected :class:`~trio_mc.store.clock.Clock`.
"""

from __future__ import annotations

from trio_mc.modes import ADD, APPEND, CAS, PREPEND, REPLACE, SET
from trio_mc.sizes import item_total_size, too_large
from trio_mc.store.counters import ClassStats, StoreStats
from trio_mc.store.items import (
    ACTIVE,
    CLSID_AT,
    HEADER_SIZE,
    HOT_HIT,
    IFLAGS_AT,
    KEY_BINARY,
    SEG_MASK,
    SEGMENT,
    STALE,
    TAIL_AT,
    TOKEN_SENT,
    pack_header,
    unpack_header,
    value_at,
    with_segment,
)
from trio_mc.store.meta import Meta
from trio_mc.store.results import DeltaResult, MetaItem, StoreResult

__all__ = [
    "ADD", "APPEND", "CAS", "PREPEND", "REPLACE", "SET", "ClassStats", "DeltaResult", "MetaItem", "Store",
    "StoreResult", "StoreStats",
]


class Store(Meta):
    """A thread-safe memcached item store.

    Args:
      value_suffix: ``(flags, value length) -> bytes``, what follows ``VALUE <key>`` in a text
        get hit (the server's ``replies.value_suffix``); kept in every record, so a get hit
        is the record's tail (:meth:`get_one`).  Injected: the store knows no protocol bytes.
        At most 255 bytes.
      cas_suffix: ``(flags, value length, cas) -> bytes``, the same for gets
        (:meth:`get_multi_cas`).
      clock: server time source; operations read its ``current`` (see :mod:`.clock` for who
        ticks it).
      maxbytes: the memory limit (``-m`` in bytes).
      use_cas: ``False`` for ``-C``: every CAS is 0.
      evict: ``False`` for ``-M``: refuse stores instead of evicting.
      slabs: slab classes for per-class statistics.
      lru_segmented: memcached's default LRU mode (``no_lru_maintainer`` turns it off); it
        decides when a read refreshes an item's access time.
      item_size_max: ``-I``; an append or prepend may not grow an item past it.
      hot_lru_pct, warm_lru_pct: shares of a class's items kept in HOT and WARM.
      temporary_ttl: items with less TTL than this go to TEMP, never evicted (``None``: off).
      automove: let the maintainer give back slab pages a class no longer needs.
    """

    # -- reads: the text get's tails, and (flags, cas, data) for the other protocols ----------

    def get_one(self, key: bytes) -> bytes | memoryview | None:
        """get of a single key, the most common request: the reply's tail or ``None``.

        The tail is what follows ``VALUE <key>`` in a text reply: the suffix the server's
        ``value_suffix`` rendered, the value and its ``\\r\\n`` (bytes when small, a
        memoryview from 4096 bytes, which is cheaper than a copy).  Same semantics as
        :meth:`get_multi` with one key; the common case (a hot item with no expiry and no
        pending flush, nothing to update) skips the general bookkeeping.
        """
        with self.lock:
            record = self._items.get(key)
            if record is None:
                self.stats.get_misses += 1
                return None
            iflags = record[IFLAGS_AT]
            if iflags & HOT_HIT == HOT_HIT and not self._oldest_live and self.lru_segmented:
                cls = self.class_stats[record[CLSID_AT]]
                cls.get_hits += 1
                cls.hits_to[SEGMENT[iflags]] += 1
                return record[TAIL_AT:] if len(record) < 4096 else memoryview(record)[TAIL_AT:]
        hits = self._read([key], None)
        return _tail(hits[0][1]) if hits else None

    def get_multi(self, keys: list[bytes]) -> list[tuple[bytes, bytes | memoryview]]:
        """get of several keys: ``(key, tail)`` per hit in request order (see :meth:`get_one`)."""
        return [(key, _tail(record)) for key, record in self._read(keys, None)]

    def get_multi_cas(self, keys: list[bytes]) -> list[tuple[bytes, bytes, bytes | memoryview]]:
        """gets: ``(key, suffix with CAS, data)`` per hit in request order.

        The suffix is the server's ``cas_suffix`` rendered for this hit (a CAS changes with
        every write, so it is not kept in the record); ``data`` is the value with ``\\r\\n``.
        """
        cas_suffix = self._cas_suffix
        out: list[tuple[bytes, bytes, bytes | memoryview]] = []
        for key, record in self._read(keys, None):
            flags, _, _, cas, _ = unpack_header(record)
            data = _data(record)
            out.append((key, cas_suffix(flags, len(data) - 2, cas), data))
        return out

    def get(self, keys: list[bytes], exptime: int | None = None) -> list[tuple[bytes, int, int, bytes | memoryview]]:
        """get/gets for the meta and binary protocols, and gat/gats (``exptime`` given: the
        hits are also touched).

        Returns ``(key, flags, cas, data)`` per hit, in request order; ``data`` includes the
        trailing ``\\r\\n``.
        """
        out: list[tuple[bytes, int, int, bytes | memoryview]] = []
        for key, record in self._read(keys, exptime):
            flags, _, _, cas, _ = unpack_header(record)
            out.append((key, flags, cas, _data(record)))
        return out

    def _read(self, keys: list[bytes], exptime: int | None) -> list[tuple[bytes, bytes]]:
        """The one loop of every read: ``(key, record as it now stands)`` per hit, with the
        stats (gets, or touches with ``exptime``) and LRU bumps of each key."""
        hits: list[tuple[bytes, bytes]] = []
        with self.lock:
            now = self.clock.current
            touch = exptime is not None
            new_exptime = self.realtime(exptime) if exptime is not None else 0
            items_get = self._items.get
            class_stats = self.class_stats
            hot_unchanged = ACTIVE if self.lru_segmented else -1  # iflags test: nothing to bump
            stats = self.stats
            hot = not self._oldest_live and self.lru_segmented and not touch
            for key in keys:
                record = items_get(key)
                if hot and record is not None and record[IFLAGS_AT] & HOT_HIT == HOT_HIT:
                    cls = class_stats[record[CLSID_AT]]  # nothing to check or bump: count it
                    cls.get_hits += 1
                    cls.hits_to[SEGMENT[record[IFLAGS_AT]]] += 1
                    hits.append((key, record))
                    continue
                if record is not None:
                    flags, old_exptime, time, cas, iflags = unpack_header(record)
                    if (old_exptime or self._oldest_live) and self._is_dead(old_exptime, time, cas, now):
                        record = self._find(key, now)  # unlinks and counts it
                if record is None:
                    self._count_fetch(touch, None)
                    continue
                item_clsid = record[CLSID_AT]
                cls = class_stats[item_clsid]
                cls.hits_to[SEGMENT[iflags]] += 1
                if touch:
                    stats.touch_cmds += 1
                    cls.touch_hits += 1
                else:
                    cls.get_hits += 1
                if touch or iflags & hot_unchanged != hot_unchanged:
                    new_iflags, new_time = self._bumped(iflags, time, now)
                    new_iflags = self._rescue(key, item_clsid, iflags, new_iflags)
                    if touch or new_iflags != iflags or new_time != time:
                        record = pack_header(flags, new_exptime if touch else old_exptime, new_time, cas,
                                             new_iflags) + record[HEADER_SIZE:]
                        self._items[key] = record
                hits.append((key, record))
        return hits

    # -- writes ---------------------------------------------------------------------------------

    def store(
        self, mode: int, key: bytes, flags: int, exptime: int, data: bytes, cas: int = 0, *,
        stale: bool = False, binary: bool = False, new_cas: int | None = None,
        vivify: int | None = None,
    ) -> tuple[int, int, int]:
        """set/add/replace/append/prepend/cas and ms (memcached's ``do_store_item``).

        ``data`` is the value with its trailing ``\\r\\n``.  Meta extras: ``stale`` (ms I:
        a CAS older than the item's stores the value but marks it stale), ``binary`` (the key
        was base64), ``new_cas`` (E), ``vivify`` (ms N: append/prepend create on miss).

        Returns the result, the stored item's CAS (0 if nothing was stored) and its value
        length.
        """
        with self.lock:
            now = self.clock.current
            # memcached allocates before it looks the key up: dead items at the tail of
            # the new item's class are reclaimed first.
            ntotal = item_total_size(len(key), flags, len(data), self.use_cas)
            clsid = self.slabs.clsid(ntotal)
            if self._may_expire:  # (nothing can be dead before anything had an expiry)
                self._reclaim_head(clsid, now)
            old = self._find(key, now)
            iflags = KEY_BINARY if binary else 0
            if old is None:
                self.class_stats[clsid].cmd_set += 1
                if mode == CAS:
                    self.stats.cas_misses += 1
                    return StoreResult.NOT_FOUND, 0, 0
                if (mode == APPEND or mode == PREPEND) and vivify is not None:
                    exptime = vivify
                elif mode != SET and mode != ADD:
                    return StoreResult.NOT_STORED, 0, 0
                cas_value = self._cas_for(new_cas)
                new_exptime = self.realtime(exptime) if exptime else 0
                # Built in the segment _link will put it in, so it is not copied again.
                iflags = with_segment(iflags, self._first_segment(new_exptime, now))
                record = self._record(key, flags, new_exptime, now, cas_value, iflags, data, clsid)
                if not self._link(key, None, record, now, ntotal):
                    return self._out_of_memory(mode, key), 0, 0
                return StoreResult.STORED, cas_value, len(data) - 2
            old_flags, old_exptime, old_time, old_cas, old_iflags = unpack_header(old)
            cls = self.class_stats[old[CLSID_AT]]
            cls.cmd_set += 1
            if mode == ADD:  # refused, but the existing item counts as used
                new_time = self._update_time(old_time, now)
                if new_time != old_time:
                    header = pack_header(old_flags, old_exptime, new_time, old_cas, old_iflags)
                    self._items[key] = header + old[HEADER_SIZE:]
                return StoreResult.NOT_STORED, 0, 0
            new_exptime = self.realtime(exptime) if exptime else 0
            if mode == CAS:
                if cas and cas == old_cas:
                    cls.cas_hits += 1
                elif stale and cas and cas < old_cas:
                    # A late writer with an old CAS: keep its value, but mark it stale and
                    # keep the item's TTL and recache state.
                    cls.cas_hits += 1
                    new_exptime = old_exptime
                    iflags |= STALE | (old_iflags & TOKEN_SENT)
                else:
                    cls.cas_badval += 1
                    return StoreResult.EXISTS, 0, 0
            if mode == APPEND or mode == PREPEND:
                if cas and cas != old_cas:
                    return StoreResult.EXISTS, 0, 0
                # The combined item is a new allocation: the old flags and expiry, no
                # other item flags (memcached's append drops a meta binary-key mark too).
                at = value_at(old)
                value = old[at:-2] + data if mode == APPEND else data[:-2] + old[at:]
                if too_large(len(key), old_flags, len(value), self.use_cas, self.item_size_max):
                    return StoreResult.NOT_STORED, 0, 0
                flags, new_exptime, data, iflags = old_flags, old_exptime, value, 0
                ntotal = item_total_size(len(key), flags, len(data), self.use_cas)
                clsid = self.slabs.clsid(ntotal)
            cas_value = self._cas_for(new_cas)
            iflags |= old_iflags & SEG_MASK  # a new version stays where the old one was
            record = self._record(key, flags, new_exptime, now, cas_value, iflags, data, clsid)
            if not self._link(key, old, record, now, ntotal):
                return self._out_of_memory(mode, key), 0, 0
            return StoreResult.STORED, cas_value, len(data) - 2

    def too_large(self, mode: int, key: bytes) -> None:
        """A storage command was refused for ``-I``: count it; a failed set drops the old value."""
        with self.lock:
            self.stats.store_too_large += 1
            if mode == SET:
                self._drop(key)

    def delete(self, key: bytes) -> bool:
        with self.lock:
            record = self._find(key, self.clock.current)
            if record is None:
                self.stats.delete_misses += 1
                return False
            self.class_stats[record[CLSID_AT]].delete_hits += 1
            self._unlink(key, record)
            return True

    def touch(self, key: bytes, exptime: int) -> bool:
        """touch: a read hit that also sets a new expiry."""
        return bool(self._read([key], exptime))

    def delta(self, key: bytes, incr: bool, delta: int) -> tuple[int, int]:
        """incr/decr: incr wraps at 2**64, decr stops at 0 (memcached's ``do_add_delta``).

        A result no longer than the old value is written in place, padded with spaces, as
        memcached does; a longer one makes a new item.
        """
        with self.lock:
            now = self.clock.current
            result, value, _ = self._delta(key, incr, delta, now, None, None)
            if result == DeltaResult.NOT_FOUND:
                if incr:
                    self.stats.incr_misses += 1
                else:
                    self.stats.decr_misses += 1
            return result, value


# Small values are cheaper to copy than to wrap in a memoryview; large ones are not copied.
def _tail(record: bytes) -> bytes | memoryview:
    return record[TAIL_AT:] if len(record) < 4096 else memoryview(record)[TAIL_AT:]


def _data(record: bytes) -> bytes | memoryview:
    at = value_at(record)
    return record[at:] if len(record) < 4096 else memoryview(record)[at:]
