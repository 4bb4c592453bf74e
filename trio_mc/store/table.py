"""The hash table, CAS counter and expiry: what every other layer of the store stands on.

Items live in one ``dict`` from key to an immutable record (see :mod:`.items`).  This layer
finds live records (expired and flushed items are unlinked when met), links and unlinks
them (asking the memory layer for room first) and keeps memcached's clocks of validity:
``realtime`` for exptimes, ``flush_all``'s oldest-live time and CAS.

The store is one object built from four layers, each a class adding one concern on top of
the previous (:class:`Table` -> :class:`~.memory.Memory` -> :class:`~.maintainer.Maintainer`
-> :class:`~.meta.Meta` -> :class:`~.store.Store`).  They share one set of attributes,
declared here, rather than being separate objects: every command touches the table, the
accounting and the LRU together under one lock, and on the hot path each extra object
would cost an attribute lookup per command.  Calls that reach up to a later layer are
declared at the end of each class for the type checker.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from trio_mc.sizes import item_total_size
from trio_mc.store.clock import Clock
from trio_mc.store.counters import ClassStats, StoreStats
from trio_mc.store.items import (
    CLSID_AT,
    HEADER_SIZE,
    IFLAGS_AT,
    SEGMENT,
    item_cost,
    nbytes,
    pack_record,
    unpack_header,
    with_segment,
)
from trio_mc.store.lru import ClassQueues
from trio_mc.store.slabs import SlabClasses

#: Relative exptimes go up to 30 days; larger values are absolute Unix times.
REALTIME_MAXDELTA = 60 * 60 * 24 * 30


class Table:
    """The shared state of the store (its arguments are :class:`~.store.Store`'s) and the
    table operations (private methods expect the lock held)."""

    def __init__(
        self,
        *,
        value_suffix: Callable[[int, int], bytes],
        cas_suffix: Callable[[int, int, int], bytes],
        clock: Clock | None = None,
        maxbytes: int = 64 * 1024 * 1024,
        use_cas: bool = True,
        evict: bool = True,
        slabs: SlabClasses | None = None,
        lru_segmented: bool = True,
        item_size_max: int = 1024 * 1024,
        hot_lru_pct: int = 20,
        warm_lru_pct: int = 40,
        temporary_ttl: int | None = None,
        automove: bool = True,
    ) -> None:
        self._value_suffix = value_suffix
        self._cas_suffix = cas_suffix
        self.clock = clock or Clock()
        self.maxbytes = maxbytes
        self.use_cas = use_cas
        self.evict = evict
        self.slabs = slabs or SlabClasses()
        self.lru_segmented = lru_segmented
        self.item_size_max = item_size_max
        self.hot_lru_pct = hot_lru_pct
        self.warm_lru_pct = warm_lru_pct
        self.temporary_ttl = temporary_ttl
        self.automove = automove
        self.lock = threading.Lock()
        self.stats = StoreStats()
        self.class_stats = [ClassStats() for _ in range(len(self.slabs.sizes) + 1)]
        self._object_bytes = 0  # keys and records
        self.bytes = 0  # memcached's "bytes": the sum of item sizes
        self._items: dict[bytes, bytes] = {}
        self.lru = ClassQueues(self.slabs, maxbytes)
        self._cas = 0
        #: Called as ``on_evict(key, fetched, ttl, idle, clsid, value length)`` for each
        #: eviction (the server's ``watch evictions``); lock held, must not block.
        self.on_evict: Callable[[bytes, bool, int, int, int, int], None] | None = None
        self._crawl_pos = 0  # where the background reclaimer's walk of the table resumes
        self._may_expire = False  # set once anything has an expiry or a flush is pending
        self._oldest_live = 0  # flush_all: items updated at or before this time are gone
        self._oldest_cas = 0  # flush_all with CAS: items with a lower CAS are gone

    def realtime(self, exptime: int) -> int:
        """Client exptime to server time (memcached's ``realtime``); 0 means never."""
        if exptime:
            self._may_expire = True
        if exptime < 0:
            exptime = REALTIME_MAXDELTA + 1  # before process start: expired at once
        if exptime == 0:
            return 0
        if exptime > REALTIME_MAXDELTA:
            started = self.clock.process_started
            return 1 if exptime <= started else exptime - started
        return exptime + self.clock.current

    def _cas_for(self, new_cas: int | None) -> int:
        """The CAS of a modified item: the client's (meta E) or the next one (0 under ``-C``)."""
        if not self.use_cas:
            return 0
        if new_cas is not None:
            return new_cas
        self._cas += 1
        return self._cas

    def next_cas_hint(self) -> int:
        """The CAS the next stored item will get."""
        return self._cas + 1

    def item_clsid(self, key_length: int, flags: int, nbytes: int) -> int:
        """The slab class memcached keeps an item in (``nbytes``: the value with ``\\r\\n``).
        Records carry it (:data:`~.items.CLSID_AT`) from when they are built."""
        return self.slabs.clsid(item_total_size(key_length, flags, nbytes, self.use_cas))

    def _ntotal(self, key: bytes, flags: int, record: bytes) -> int:
        """memcached's size of a stored item (its ``bytes`` and page chunks)."""
        return item_total_size(len(key), flags, nbytes(record), self.use_cas)

    def _record(self, key: bytes, flags: int, exptime: int, time: int, cas: int, iflags: int, data: bytes,
                clsid: int = 0) -> bytes:
        """Build a record: one header pack, the suffix, ``data`` (with its ``\\r\\n``) as given.
        ``clsid`` is the item's class if the caller has it already (0: computed here)."""
        suffix = self._value_suffix(flags, len(data) - 2)
        return (pack_record(flags, exptime, time, cas, iflags, clsid or self.item_clsid(len(key), flags, len(data)),
                            len(suffix)) + suffix + data)

    def _is_dead(self, exptime: int, time: int, cas: int, now: int) -> int:
        """0 if live, 1 if flushed, 2 if expired (``do_item_get``'s checks, in order)."""
        oldest = self._oldest_live
        if oldest and oldest <= now and (
            time <= oldest or (self._oldest_cas and cas and cas < self._oldest_cas)
        ):
            return 1
        if exptime and exptime <= now:
            return 2
        return 0

    def _find(self, key: bytes, now: int) -> bytes | None:
        """The live record for ``key``; expired or flushed items are unlinked on the way."""
        record = self._items.get(key)
        if record is None:
            return None
        _, exptime, time, cas, _ = unpack_header(record)
        if exptime or self._oldest_live:
            dead = self._is_dead(exptime, time, cas, now)
            if dead:
                self._unlink(key, record)
                if dead == 1:
                    self.stats.get_flushed += 1
                else:
                    self.stats.get_expired += 1
                return None
        return record

    def _count_fetch(self, touched: bool, cls: ClassStats | None) -> None:
        """Count one key of a read (``cls`` is ``None`` for a miss); reads that also set
        a TTL (gat, mg T) count as touches, as in memcached."""
        stats = self.stats
        if touched:
            stats.touch_cmds += 1
            if cls is None:
                stats.touch_misses += 1
            else:
                cls.touch_hits += 1
        else:
            if cls is None:
                stats.get_misses += 1
            else:
                cls.get_hits += 1

    def _unlink(self, key: bytes, record: bytes) -> None:
        """Remove a key whose queue entry stays behind (it becomes stale)."""
        del self._items[key]
        self.lru.orphan(key, self._account(key, record, -1), SEGMENT[record[IFLAGS_AT]])
        if self.lru.stale_total > len(self._items) + 1024:
            self.lru.compact()

    def _link(self, key: bytes, old: bytes | None, record: bytes, now: int, ntotal: int = 0) -> bytes | None:
        """Store ``record`` under ``key`` in place of ``old``, making room first.

        Two limits apply: a free chunk in the item's slab class (memcached's pages, so
        evictions happen where memcached's would) and the real Python memory under ``-m``.
        ``ntotal`` is the item's memcached size if the caller has it (0: computed here).
        Returns the record as stored (its LRU segment set), or ``None`` if there is no room.
        """
        klen = len(key)
        ntotal = ntotal or self._ntotal(key, unpack_header(record)[0], record)
        clsid = record[CLSID_AT]
        items = self._items
        lru = self.lru
        nchunks = lru.chunks_for(clsid, ntotal)
        while not lru.fits(clsid, nchunks):
            if not self._evict_one(clsid, now):
                return None
        cost = item_cost(klen, len(record))
        if old is not None:
            cost -= item_cost(klen, len(old))
        if cost > 0 and self.mem_used + cost > self.maxbytes and not self._make_room(cost, now, clsid):
            return None
        if old is not None and items.get(key) is old:
            seg = SEGMENT[old[IFLAGS_AT]]
            if old[CLSID_AT] == clsid and SEGMENT[record[IFLAGS_AT]] == seg:
                # A new version in the same class and segment (a set of an existing key):
                # the counts and the queue entry stay, only the sizes change.
                items[key] = record
                delta = ntotal - self._ntotal(key, unpack_header(old)[0], old)
                self._object_bytes += cost
                self.bytes += delta
                self.class_stats[clsid].mem_requested += delta
                lru.chunks[clsid] += nchunks - lru.chunks_for(clsid, ntotal - delta)
                self.stats.total_items += 1
                return record
            old_clsid = self._account(key, old, -1)
            if old_clsid != clsid:  # the new size moves it to another class's queue
                lru.orphan(key, old_clsid, seg)
                seg = self._first_segment(unpack_header(record)[1], now)
                lru.append(key, clsid, seg)
        else:  # new, or the old version was evicted to make room
            seg = self._first_segment(unpack_header(record)[1], now)
            lru.append(key, clsid, seg)
        if SEGMENT[record[IFLAGS_AT]] != seg:
            record = record[:IFLAGS_AT] + bytes((with_segment(record[IFLAGS_AT], seg),)) + record[HEADER_SIZE:]
        items[key] = record
        self._account(key, record, 1)
        self.stats.total_items += 1
        if self.mem_used > self.maxbytes:  # the insert grew the hash table: pay for it
            self._make_room(0, now, clsid)
        return record

    def _drop(self, key: bytes) -> None:
        record = self._items.get(key)
        if record is not None:
            self._unlink(key, record)

    def flush_all(self, delay: int) -> None:
        """Invalidate every item updated before now + ``delay`` (memcached's rules)."""
        with self.lock:
            now = self.clock.current
            new_oldest = self.realtime(delay) if delay > 0 else now
            self._may_expire = True
            if self.use_cas:
                self._oldest_live = new_oldest - 1
                if self._oldest_live <= now:
                    self._oldest_cas = self._cas_for(None)
            else:
                self._oldest_live = new_oldest

    @property
    def curr_items(self) -> int:
        return len(self._items)

    @property
    def get_cmds(self) -> int:
        """memcached's ``cmd_get``: every key a get asked for, hit or miss (derived, so
        the hit path counts once)."""
        return self.stats.get_misses + sum(cls.get_hits for cls in self.class_stats)

    if TYPE_CHECKING:  # provided by the later layers
        def _account(self, key: bytes, record: bytes, sign: int) -> int: ...
        def _evict_one(self, clsid: int, now: int) -> bool: ...
        def _make_room(self, cost: int, now: int, clsid: int | None) -> bool: ...
        def _first_segment(self, exptime: int, now: int) -> int: ...
        @property
        def mem_used(self) -> int: ...
