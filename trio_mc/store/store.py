"""The item store: memcached's hash table, LRU, CAS counter and memory limit.

Theory of operation
-------------------
Items live in one ``dict`` from key to an immutable record (see :mod:`.items`).  One
``threading.Lock`` guards every operation; no operation blocks or awaits while holding it,
so worker threads (each with its own Trio loop) share the store safely.

Memory is bounded by ``-m`` counted in real Python bytes: the key object, the record object
and the hash-table and queue slots (:func:`item_cost`).  memcached's own ``bytes`` statistic
(the sum of its item sizes) is kept beside it so ``stats`` reads like memcached's.

Eviction is a CLOCK (second chance) approximation of memcached's LRU: keys enter a FIFO
queue when linked; an item read twice is marked ACTIVE and, when the eviction hand reaches
it, loses the mark and goes to the back instead of being evicted.  Expired and flushed items
met by the hand are reclaimed first.  A deleted key leaves a stale queue entry behind; stale
entries are counted per key (the oldest entries of a key are the stale ones) and the queue is
compacted when they outnumber live keys, so the queue stays proportional to the item count.

Time is an injected :class:`~trio_mc.store.clock.Clock`; expiry follows memcached's
``realtime()``: up to 30 days is relative, more is an absolute Unix time, negative is
already expired.
"""

from __future__ import annotations

import enum
import itertools
import sys
import threading
from dataclasses import dataclass, field
from collections.abc import Callable

from trio_mc.modes import ADD, APPEND, CAS, PREPEND, REPLACE, SET
from trio_mc.numbers import safe_strtoull
from trio_mc.sizes import item_total_size
from trio_mc.store import items
from trio_mc.store.clock import Clock
from trio_mc.store.lru import ClassQueues
from trio_mc.store.items import (
    ACTIVE, COLD, FETCHED, HEADER_SIZE, HOT, KEY_BINARY, SEG_MASK, SEG_SHIFT, STALE, TEMP,
    TOKEN_SENT, WARM, pack_header, unpack_header,
)
from trio_mc.store.slabs import SlabClasses

#: Relative exptimes go up to 30 days; larger values are absolute Unix times.
REALTIME_MAXDELTA = 60 * 60 * 24 * 30
#: memcached's ITEM_UPDATE_INTERVAL: a read refreshes an item's time at most this often.
ITEM_UPDATE_INTERVAL = 60
_U64 = 1 << 64

# One slot of the eviction queue (a deque stores a pointer per entry).
_QUEUE_SLOT = 8
# CPython's small-object allocator returns memory to the OS only in whole arenas, so under
# churn some memory stays held between live objects (measured: 1.0 MiB for 53k items after
# writing 4x -m 16, about 20 bytes per item); it is counted against -m per item.
_FRAGMENTATION = 20


def _object_size(nbytes: int) -> int:
    """What CPython really allocates for a ``bytes`` of ``nbytes`` (header 33 bytes)."""
    size = 33 + nbytes
    if size <= 512:  # pymalloc: 16-byte size classes
        return (size + 15) & ~15
    return (size + 16 + 15) & ~15  # glibc malloc chunk header, 16-byte aligned


def item_cost(key_length: int, record_length: int) -> int:
    """The Python objects one item owns (key and record).  The hash table and the queue
    are counted as a whole, at their real size (:attr:`Store.mem_used`)."""
    return _object_size(key_length) + _object_size(record_length)


class StoreResult(enum.Enum):
    """memcached's ``store_item_type``."""

    STORED = "STORED"
    NOT_STORED = "NOT_STORED"
    EXISTS = "EXISTS"
    NOT_FOUND = "NOT_FOUND"
    NO_MEMORY = "NO_MEMORY"


class DeltaResult(enum.Enum):
    """memcached's ``delta_result_type``."""

    OK = "OK"
    NON_NUMERIC = "NON_NUMERIC"
    NOT_FOUND = "NOT_FOUND"
    NO_MEMORY = "NO_MEMORY"
    CAS_MISMATCH = "CAS_MISMATCH"




@dataclass(slots=True, frozen=True)
class MetaItem:
    """What an mg hit reports: the item as it was before this command touched it, except
    ``ttl``, which is the remaining TTL at the position of the ``t`` flag."""

    flags: int
    cas: int
    data: memoryview
    ttl: int | None
    fetched: bool
    idle: int
    won: bool
    token_sent: bool
    stale: bool
    binary: bool


@dataclass(slots=True)
class ClassStats:
    """Counters kept per slab class, as ``stats slabs``/``stats items`` report them."""

    number: int = 0
    mem_requested: int = 0
    get_hits: int = 0
    cmd_set: int = 0
    delete_hits: int = 0
    incr_hits: int = 0
    decr_hits: int = 0
    cas_hits: int = 0
    cas_badval: int = 0
    touch_hits: int = 0
    evicted: int = 0
    evicted_nonzero: int = 0
    evicted_time: int = 0
    outofmemory: int = 0
    reclaimed: int = 0
    expired_unfetched: int = 0
    evicted_unfetched: int = 0
    crawler_reclaimed: int = 0
    crawler_items_checked: int = 0
    moves_to_cold: int = 0
    moves_to_warm: int = 0
    moves_within_lru: int = 0
    hits_to: list[int] = field(default_factory=lambda: [0, 0, 0, 0])  # by segment: COLD, HOT, WARM, TEMP

    #: What ``stats reset`` zeroes.
    RESETTABLE = (
        "get_hits", "cmd_set", "delete_hits", "incr_hits", "decr_hits", "cas_hits", "cas_badval",
        "touch_hits", "evicted", "evicted_nonzero", "outofmemory", "reclaimed", "expired_unfetched",
        "evicted_unfetched", "crawler_reclaimed", "crawler_items_checked", "moves_to_cold",
        "moves_to_warm", "moves_within_lru",
    )


@dataclass(slots=True)
class StoreStats:
    """Store-wide counters (memcached's global and thread stats that the store decides)."""

    get_cmds: int = 0
    get_misses: int = 0
    get_expired: int = 0
    get_flushed: int = 0
    touch_cmds: int = 0
    touch_misses: int = 0
    delete_misses: int = 0
    incr_misses: int = 0
    decr_misses: int = 0
    cas_misses: int = 0
    store_too_large: int = 0
    store_no_memory: int = 0
    total_items: int = 0
    evictions: int = 0
    reclaimed: int = 0
    expired_unfetched: int = 0
    evicted_unfetched: int = 0
    crawler_reclaimed: int = 0
    crawler_items_checked: int = 0


class Store:
    """A thread-safe memcached item store.

    Args:
      clock: server time source.
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

    def __init__(
        self,
        *,
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
        # item_total_size() minus the key and record lengths, for the per-hit class lookup.
        self._ntotal_base = item_total_size(0, 0, 0, use_cas) - HEADER_SIZE
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

    # -- time -------------------------------------------------------------------------------

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
        return exptime + self.clock.now()

    # -- internal helpers (lock held) -----------------------------------------------------

    def _next_cas(self) -> int:
        if not self.use_cas:
            return 0
        self._cas += 1
        return self._cas

    def _clsid(self, key: bytes, flags: int, record: bytes) -> int:
        """The slab class memcached would keep this item in."""
        return self.slabs.clsid(self._ntotal_base + len(key) + len(record) + (4 if flags else 0))

    def _account(self, key: bytes, record: bytes, sign: int) -> int:
        """Add (``sign`` 1) or remove (-1) an item's memory; returns its class id."""
        flags, _, _, _, iflags = unpack_header(record)
        ntotal = item_total_size(len(key), flags, len(record) - HEADER_SIZE, self.use_cas)
        self._object_bytes += sign * item_cost(len(key), len(record))
        self.bytes += sign * ntotal
        clsid = self.slabs.clsid(ntotal)
        cls = self.class_stats[clsid]
        cls.number += sign
        cls.mem_requested += sign * ntotal
        self.lru.chunks[clsid] += sign * self.lru.chunks_for(clsid, ntotal)
        self.lru.counts[clsid][(iflags & SEG_MASK) >> SEG_SHIFT] += sign
        return clsid

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

    def _bumped(self, iflags: int, time: int, now: int) -> tuple[int, int]:
        """A read hit's new (item flags, time): FETCHED, then ACTIVE; time as memcached."""
        if self.lru_segmented:
            if not iflags & ACTIVE:
                if not iflags & FETCHED:
                    return iflags | FETCHED, time
                return iflags | ACTIVE, now
            return iflags, time
        iflags |= FETCHED | (ACTIVE if iflags & FETCHED else 0)
        return iflags, (now if time < now - ITEM_UPDATE_INTERVAL else time)

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
            stats.get_cmds += 1
            if cls is None:
                stats.get_misses += 1
            else:
                cls.get_hits += 1

    def _rescue(self, key: bytes, clsid: int, iflags: int, new_iflags: int) -> int:
        """memcached's asynchronous bump: a COLD item that just became ACTIVE moves to WARM
        (ACTIVE cleared), so it is not the next to go.  Returns the item flags to store."""
        if not (self.lru_segmented and new_iflags & ACTIVE and not iflags & ACTIVE
                and (iflags & SEG_MASK) >> SEG_SHIFT == COLD):
            return new_iflags
        self.lru.orphan(key, clsid, COLD)
        self.lru.append(key, clsid, WARM)
        counts = self.lru.counts[clsid]
        counts[COLD] -= 1
        counts[WARM] += 1
        self.class_stats[clsid].moves_to_warm += 1
        return (new_iflags & ~(SEG_MASK | ACTIVE)) | (WARM << SEG_SHIFT)

    def _update_time(self, time: int, now: int) -> int:
        """``do_item_update``: the access time after a write-like touch of an item."""
        if self.lru_segmented or time < now - ITEM_UPDATE_INTERVAL:
            return now
        return time

    def _unlink(self, key: bytes, record: bytes) -> None:
        """Remove a key whose queue entry stays behind (it becomes stale)."""
        del self._items[key]
        self.lru.orphan(key, self._account(key, record, -1), (record[HEADER_SIZE - 1] & SEG_MASK) >> SEG_SHIFT)
        if self.lru.stale_total > len(self._items) + 1024:
            self.lru.compact()

    def _move(self, key: bytes, record: bytes, clsid: int, seg: int, to: int, iflags: int) -> None:
        """Put an item at the back of another segment of its class (ACTIVE cleared)."""
        new_iflags = (iflags & ~(SEG_MASK | ACTIVE)) | (to << SEG_SHIFT)
        self._items[key] = record[:HEADER_SIZE - 1] + bytes((new_iflags,)) + record[HEADER_SIZE:]
        counts = self.lru.counts[clsid]
        counts[seg] -= 1
        counts[to] += 1
        self.lru.append(key, clsid, to)

    def _pop_live(self, clsid: int, seg: int) -> tuple[bytes, bytes] | None:
        """Take the oldest live entry of a queue (skipping stale ones)."""
        lru = self.lru
        while True:
            key = lru.popleft(clsid, seg)
            if key is None:
                return None
            if not lru.skip_stale(key, clsid, seg):
                return key, self._items[key]

    def _juggle(self, clsid: int, now: int) -> None:
        """memcached's LRU maintainer for one class: HOT and WARM overflow into COLD;
        items read since they were stored are kept warm instead."""
        counts = self.lru.counts[clsid]
        total = self.class_stats[clsid].number
        cls = self.class_stats[clsid]
        for seg, limit in ((HOT, total * self.hot_lru_pct // 100), (WARM, total * self.warm_lru_pct // 100)):
            while counts[seg] > max(limit, 1):
                entry = self._pop_live(clsid, seg)
                if entry is None:
                    break
                key, record = entry
                flags, exptime, time, cas, iflags = unpack_header(record)
                if self._is_dead(exptime, time, cas, now):
                    del self._items[key]
                    self._account(key, record, -1)
                    self._reclaim(key, record, iflags, flags)
                elif iflags & ACTIVE:
                    if seg == HOT:
                        cls.moves_to_warm += 1
                    else:
                        cls.moves_within_lru += 1
                    self._move(key, record, clsid, seg, WARM, iflags)
                else:
                    cls.moves_to_cold += 1
                    self._move(key, record, clsid, seg, COLD, iflags)

    def maintain(self) -> None:
        """The background maintainer's pass (about once a second): rebalance the LRU
        segments of every class and, with automove, return unneeded slab pages.  Kept off
        the request path."""
        with self.lock:
            if self.automove:
                self.lru.release_empty_pages()
            if not self.lru_segmented:
                return
            now = self.clock.now()
            for clsid, cls in enumerate(self.class_stats):
                if cls.number:
                    self._juggle(clsid, now)

    def _evict_one(self, clsid: int, now: int) -> bool:
        """Free one item of a class from the tail of COLD: reclaim a dead item, rescue an
        item read again (to WARM; in flat mode a second chance in COLD), or evict (refused
        under ``-M``).  When COLD is empty, HOT then WARM feed it.  TEMP is never evicted.
        False if nothing can go."""
        stats = self.stats
        cls = self.class_stats[clsid]
        for _ in range(self.class_stats[clsid].number * 2 + 2):
            entry = self._pop_live(clsid, COLD)
            if entry is None:
                fed = self._pop_live(clsid, HOT) or self._pop_live(clsid, WARM)
                if fed is None:
                    return False
                key, record = fed
                iflags = unpack_header(record)[4]
                self._move(key, record, clsid, (iflags & SEG_MASK) >> SEG_SHIFT, COLD, iflags & ~ACTIVE)
                cls.moves_to_cold += 1
                continue
            key, record = entry
            flags, exptime, time, cas, iflags = unpack_header(record)
            if self._is_dead(exptime, time, cas, now):
                self._reclaim(key, record, iflags, flags)
            elif iflags & ACTIVE:  # read again since it was stored: keep it
                if self.lru_segmented:
                    cls.moves_to_warm += 1
                    self._move(key, record, clsid, COLD, WARM, iflags)
                else:
                    self._move(key, record, clsid, COLD, COLD, iflags)
                continue
            elif not self.evict:
                self.lru.push_front(key, clsid, COLD)
                cls.outofmemory += 1
                return False
            else:
                stats.evictions += 1
                cls.evicted += 1
                cls.evicted_time = now - time
                if exptime:
                    cls.evicted_nonzero += 1
                if not iflags & FETCHED:
                    stats.evicted_unfetched += 1
                    cls.evicted_unfetched += 1
                if self.on_evict is not None:
                    self.on_evict(key, bool(iflags & FETCHED), exptime - now if exptime else -1, now - time,
                                  clsid, len(record) - HEADER_SIZE - 2)
            del self._items[key]
            self._account(key, record, -1)
            return True
        return False

    def _make_room(self, cost: int, now: int, clsid: int | None) -> bool:
        """Keep the Python memory under ``-m``: evict from the item's own class first (as
        memcached does), then from whichever class holds the most memory."""
        while self.mem_used + cost > self.maxbytes:
            if clsid is not None and self.class_stats[clsid].number and self._evict_one(clsid, now):
                continue
            victims = sorted(range(1, len(self.class_stats)), key=lambda c: -self.class_stats[c].mem_requested)
            if not any(self.class_stats[c].number and self._evict_one(c, now) for c in victims[:3]):
                return False
        return True

    def _reclaim(self, key: bytes, record: bytes, iflags: int, flags: int) -> None:
        """Count a dead item whose memory is taken back (``reclaimed``)."""
        cls = self.class_stats[self._clsid(key, flags, record)]
        self.stats.reclaimed += 1
        cls.reclaimed += 1
        if not iflags & FETCHED:
            self.stats.expired_unfetched += 1
            cls.expired_unfetched += 1

    def _reclaim_head(self, clsid: int, now: int) -> None:
        """Before an allocation, take back dead items at the class's LRU tails, as
        memcached's allocator does (it looks at a few items there)."""
        lru = self.lru
        for seg in (COLD, TEMP):
            for _ in range(5):
                key = lru.head(clsid, seg)
                if key is None:
                    break
                if lru.skip_stale(key, clsid, seg):
                    lru.popleft(clsid, seg)
                    continue
                record = self._items[key]
                flags, exptime, time, cas, iflags = unpack_header(record)
                if not self._is_dead(exptime, time, cas, now):
                    break
                lru.popleft(clsid, seg)
                del self._items[key]
                self._account(key, record, -1)
                self._reclaim(key, record, iflags, flags)

    def reclaim_step(self, limit: int = 5000) -> int:
        """One step of the background LRU maintainer: reclaim expired and flushed items.

        Walks the table ``limit`` items per call (holding no references between calls,
        so evicted items are freed at once) and does nothing until some item could expire.
        Returns how many items were reclaimed.
        """
        reclaimed = 0
        with self.lock:
            if not self._may_expire:
                return 0
            now = self.clock.now()
            if self._crawl_pos >= len(self._items):
                self._crawl_pos = 0
            batch = list(itertools.islice(self._items.items(), self._crawl_pos, self._crawl_pos + limit))
            self._crawl_pos += limit
            for key, record in batch:
                flags, exptime, time, cas, iflags = unpack_header(record)
                if self._is_dead(exptime, time, cas, now):
                    self._unlink(key, record)
                    self._reclaim(key, record, iflags, flags)
                    reclaimed += 1
        return reclaimed

    def crawl(self, classes: set[int] | None = None) -> None:
        """``lru_crawler crawl``: check every item of these classes (all if ``None``) and
        reclaim the dead ones, counted as ``crawler_reclaimed``."""
        with self.lock:
            now = self.clock.now()
            for key, record in list(self._items.items()):
                flags, exptime, time, cas, iflags = unpack_header(record)
                clsid = self._clsid(key, flags, record)
                if classes is not None and clsid not in classes:
                    continue
                cls = self.class_stats[clsid]
                cls.crawler_items_checked += 1
                self.stats.crawler_items_checked += 1
                if self._is_dead(exptime, time, cas, now):
                    self._unlink(key, record)
                    cls.crawler_reclaimed += 1
                    self.stats.crawler_reclaimed += 1

    def metadump(self) -> list[tuple[bytes, int, int, int, bool, int, int]]:
        """``lru_crawler metadump``: ``(key, exp, last access, cas, fetched, class, size)``
        per live item, times as Unix times (exp -1: never)."""
        out = []
        with self.lock:
            now = self.clock.now()
            started = self.clock.process_started
            for key, record in self._items.items():
                flags, exptime, time, cas, iflags = unpack_header(record)
                if self._is_dead(exptime, time, cas, now):
                    continue
                size = item_total_size(len(key), flags, len(record) - HEADER_SIZE, self.use_cas)
                out.append((key, exptime + started if exptime else -1, time + started, cas,
                            bool(iflags & FETCHED), self.slabs.clsid(size), size))
        return out

    def _link(self, key: bytes, old: bytes | None, record: bytes, now: int) -> bytes | None:
        """Store ``record`` under ``key`` in place of ``old``, making room first.

        Two limits apply: a free chunk in the item's slab class (memcached's pages, so
        evictions happen where memcached's would) and the real Python memory under ``-m``.
        Returns the record as stored (its LRU segment set), or ``None`` if there is no room.
        """
        klen = len(key)
        ntotal = self._ntotal_base + klen + len(record) + (4 if unpack_header(record)[0] else 0)
        clsid = self.slabs.clsid(ntotal)
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
        if old is not None and self._items.get(key) is old:
            old_clsid = self._account(key, old, -1)
            seg = (old[HEADER_SIZE - 1] & SEG_MASK) >> SEG_SHIFT
            if old_clsid != clsid:  # the new size moves it to another class's queue
                lru.orphan(key, old_clsid, seg)
                seg = self._first_segment(unpack_header(record)[1], now)
                lru.append(key, clsid, seg)
        else:  # new, or the old version was evicted to make room
            seg = self._first_segment(unpack_header(record)[1], now)
            lru.append(key, clsid, seg)
        if (record[HEADER_SIZE - 1] & SEG_MASK) >> SEG_SHIFT != seg:
            record = record[:HEADER_SIZE - 1] + bytes(((record[HEADER_SIZE - 1] & ~SEG_MASK) | (seg << SEG_SHIFT),)) + record[HEADER_SIZE:]
        self._items[key] = record
        self._account(key, record, 1)
        self.stats.total_items += 1
        if self.mem_used > self.maxbytes:  # the insert grew the hash table: pay for it
            self._make_room(0, now, clsid)
        return record

    def _first_segment(self, exptime: int, now: int) -> int:
        """Where a new item enters its class: TEMP for a short TTL, else HOT (COLD when flat)."""
        if not self.lru_segmented:
            return COLD
        if self.temporary_ttl is not None and exptime and exptime - now < self.temporary_ttl:
            return TEMP
        return HOT

    def _out_of_memory(self, mode: int, key: bytes) -> StoreResult:
        self.stats.store_no_memory += 1
        if mode == SET:
            self._drop(key)
        return StoreResult.NO_MEMORY

    def _drop(self, key: bytes) -> None:
        record = self._items.get(key)
        if record is not None:
            self._unlink(key, record)

    # -- commands ---------------------------------------------------------------------------

    def get(self, keys: list[bytes], exptime: int | None = None) -> list[tuple[bytes, int, int, bytes | memoryview]]:
        """get/gets (and gat/gats when ``exptime`` is given, which also touches).

        Returns ``(key, flags, cas, data)`` per hit, in request order; ``data`` includes the
        trailing ``\\r\\n``.
        """
        hits: list[tuple[bytes, int, int, bytes | memoryview]] = []
        with self.lock:
            now = self.clock.now()
            touch = exptime is not None
            new_exptime = self.realtime(exptime) if exptime is not None else 0
            items_get = self._items.get
            class_stats = self.class_stats
            clsid = self.slabs.clsid
            base = self._ntotal_base
            hot_unchanged = ACTIVE if self.lru_segmented else -1  # iflags test: nothing to bump
            stats = self.stats
            for key in keys:
                record = items_get(key)
                if record is not None:
                    flags, old_exptime, time, cas, iflags = unpack_header(record)
                    if (old_exptime or self._oldest_live) and self._is_dead(old_exptime, time, cas, now):
                        record = self._find(key, now)  # unlinks and counts it
                if record is None:
                    self._count_fetch(touch, None)
                    continue
                item_clsid = clsid(base + len(key) + len(record) + (4 if flags else 0))
                cls = class_stats[item_clsid]
                cls.hits_to[(iflags & SEG_MASK) >> SEG_SHIFT] += 1
                if touch:
                    stats.touch_cmds += 1
                    cls.touch_hits += 1
                else:
                    stats.get_cmds += 1
                    cls.get_hits += 1
                if touch or iflags & hot_unchanged != hot_unchanged:
                    new_iflags, new_time = self._bumped(iflags, time, now)
                    new_iflags = self._rescue(key, item_clsid, iflags, new_iflags)
                    if touch or new_iflags != iflags or new_time != time:
                        record = pack_header(flags, new_exptime if touch else old_exptime, new_time, cas,
                                             new_iflags) + record[HEADER_SIZE:]
                        self._items[key] = record
                # Small values are cheaper to copy than to wrap in a memoryview.
                data = record[HEADER_SIZE:] if len(record) < 4096 else memoryview(record)[HEADER_SIZE:]
                hits.append((key, flags, cas, data))
        return hits

    def get_one(self, key: bytes) -> tuple[int, int, bytes | memoryview] | None:
        """get of a single key, the most common request: ``(flags, cas, data)`` or ``None``.

        Same semantics as :meth:`get` with one key; the common case (a hot item with no
        expiry and no pending flush, nothing to update) skips the general bookkeeping.
        """
        with self.lock:
            record = self._items.get(key)
            if record is None:
                self.stats.get_cmds += 1
                self.stats.get_misses += 1
                return None
            flags, exptime, _, cas, iflags = unpack_header(record)
            if not (exptime or self._oldest_live) and iflags & ACTIVE and self.lru_segmented:
                self.stats.get_cmds += 1
                cls = self.class_stats[self.slabs.clsid(self._ntotal_base + len(key) + len(record) + (4 if flags else 0))]
                cls.get_hits += 1
                cls.hits_to[(iflags & SEG_MASK) >> SEG_SHIFT] += 1
                return flags, cas, record[HEADER_SIZE:] if len(record) < 4096 else memoryview(record)[HEADER_SIZE:]
        hits = self.get([key])
        return hits[0][1:] if hits else None

    def store(
        self, mode: int, key: bytes, flags: int, exptime: int, data: bytes, cas: int = 0, *,
        stale: bool = False, binary: bool = False, new_cas: int | None = None,
        vivify: int | None = None,
    ) -> tuple[StoreResult, int, int]:
        """set/add/replace/append/prepend/cas and ms (memcached's ``do_store_item``).

        ``data`` is the value with its trailing ``\\r\\n``.  Meta extras: ``stale`` (ms I:
        a CAS older than the item's stores the value but marks it stale), ``binary`` (the key
        was base64), ``new_cas`` (E), ``vivify`` (ms N: append/prepend create on miss).

        Returns the result, the stored item's CAS (0 if nothing was stored) and its value
        length.
        """
        with self.lock:
            now = self.clock.now()
            # memcached allocates before it looks the key up: dead items at the tail of
            # the new item's class are reclaimed first.
            self._reclaim_head(self.slabs.clsid(self._ntotal_base + len(key) + HEADER_SIZE + len(data)
                                                + (4 if flags else 0)), now)
            old = self._find(key, now)
            iflags = KEY_BINARY if binary else 0
            if old is None:
                self.class_stats[self.slabs.clsid(item_total_size(len(key), flags, len(data), self.use_cas))].cmd_set += 1
                if mode == CAS:
                    self.stats.cas_misses += 1
                    return StoreResult.NOT_FOUND, 0, 0
                if (mode == APPEND or mode == PREPEND) and vivify is not None:
                    exptime = vivify
                elif mode != SET and mode != ADD:
                    return StoreResult.NOT_STORED, 0, 0
                cas_value = self._cas_for(new_cas)
                new_exptime = self.realtime(exptime)
                # Built in the segment _link will put it in, so it is not copied again.
                iflags |= self._first_segment(new_exptime, now) << SEG_SHIFT
                record = pack_header(flags, new_exptime, now, cas_value, iflags) + data
                if not self._link(key, None, record, now):
                    return self._out_of_memory(mode, key), 0, 0
                return StoreResult.STORED, cas_value, len(data) - 2
            old_flags, old_exptime, old_time, old_cas, old_iflags = unpack_header(old)
            cls = self.class_stats[self._clsid(key, old_flags, old)]
            cls.cmd_set += 1
            if mode == ADD:  # refused, but the existing item counts as used
                new_time = self._update_time(old_time, now)
                if new_time != old_time:
                    self._items[key] = pack_header(old_flags, old_exptime, new_time, old_cas, old_iflags) + old[HEADER_SIZE:]
                return StoreResult.NOT_STORED, 0, 0
            new_exptime = self.realtime(exptime)
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
                value = old[HEADER_SIZE:-2] + data if mode == APPEND else data[:-2] + old[HEADER_SIZE:]
                if item_total_size(len(key), old_flags, len(value), self.use_cas) > self.item_size_max:
                    return StoreResult.NOT_STORED, 0, 0
                flags, new_exptime, data, iflags = old_flags, old_exptime, value, 0
            cas_value = self._cas_for(new_cas)
            iflags |= old_iflags & SEG_MASK  # a new version stays where the old one was
            record = pack_header(flags, new_exptime, now, cas_value, iflags) + data
            if not self._link(key, old, record, now):
                return self._out_of_memory(mode, key), 0, 0
            return StoreResult.STORED, cas_value, len(data) - 2

    def next_cas_hint(self) -> int:
        """The CAS the next stored item will get."""
        return self._cas + 1

    def _cas_for(self, new_cas: int | None) -> int:
        """The CAS of a modified item: the client's (meta E) or the next one."""
        if new_cas is not None and self.use_cas:
            return new_cas
        return self._next_cas()

    def too_large(self, mode: int, key: bytes) -> None:
        """A storage command was refused for ``-I``: count it; a failed set drops the old value."""
        with self.lock:
            self.stats.store_too_large += 1
            if mode == SET:
                self._drop(key)

    def delete(self, key: bytes) -> bool:
        with self.lock:
            record = self._find(key, self.clock.now())
            if record is None:
                self.stats.delete_misses += 1
                return False
            self.class_stats[self._clsid(key, unpack_header(record)[0], record)].delete_hits += 1
            self._unlink(key, record)
            return True

    def touch(self, key: bytes, exptime: int) -> bool:
        """touch: a read hit that also sets a new expiry."""
        return bool(self.get([key], exptime))

    def delta(self, key: bytes, incr: bool, delta: int) -> tuple[DeltaResult, int]:
        """incr/decr: incr wraps at 2**64, decr stops at 0 (memcached's ``do_add_delta``).

        A result no longer than the old value is written in place, padded with spaces, as
        memcached does; a longer one makes a new item.
        """
        with self.lock:
            now = self.clock.now()
            result, value, _ = self._delta(key, incr, delta, now, None, None)
            if result is DeltaResult.NOT_FOUND:
                if incr:
                    self.stats.incr_misses += 1
                else:
                    self.stats.decr_misses += 1
            return result, value

    def _delta(self, key: bytes, incr: bool, delta: int, now: int, compare_cas: int | None,
               new_cas: int | None) -> tuple[DeltaResult, int, bytes | None]:
        """The arithmetic shared by incr/decr and ma; returns the new record too."""
        record = self._find(key, now)
        if record is None:
            return DeltaResult.NOT_FOUND, 0, None
        nbytes = len(record) - HEADER_SIZE  # with "\r\n"
        if nbytes <= 2:
            return DeltaResult.NON_NUMERIC, 0, None
        flags, exptime, time, cas, iflags = unpack_header(record)
        if compare_cas and cas != compare_cas:
            return DeltaResult.CAS_MISMATCH, 0, None
        value = safe_strtoull(record[HEADER_SIZE:])
        if value is None:
            return DeltaResult.NON_NUMERIC, 0, None
        if incr:
            value = (value + delta) % _U64
        else:
            value = value - delta if delta < value else 0
        cls = self.class_stats[self._clsid(key, flags, record)]
        if incr:
            cls.incr_hits += 1
        else:
            cls.decr_hits += 1
        text = b"%d" % value
        if len(text) + 2 <= nbytes:
            new = (pack_header(flags, exptime, self._update_time(time, now), self._cas_for(new_cas), iflags)
                   + text.ljust(nbytes - 2) + b"\r\n")
            self._items[key] = new
            return DeltaResult.OK, value, new
        new = pack_header(flags, exptime, now, self._cas_for(new_cas), iflags & KEY_BINARY) + text + b"\r\n"
        stored = self._link(key, record, new, now)
        if stored is None:
            return DeltaResult.NO_MEMORY, 0, None
        return DeltaResult.OK, value, stored

    # -- meta commands ------------------------------------------------------------------------

    def _apply_ttl_ops(self, ops: list[tuple[int, int]], exptime: int, created: bool, now: int,
                       may_win: bool) -> tuple[int, int | None, bool]:
        """Apply T, N and R in request order; ``t`` sees the TTL at its own position.

        Returns the final exptime, the remaining TTL ``t`` reported (``None`` if not asked
        for; -1 for never; wrapped to 32 bits as memcached prints it) and whether R won.
        """
        seen: int | None = None
        won = False
        for flag, raw in ops:
            if flag == 0x54:  # T
                exptime = self.realtime(raw)
            elif flag == 0x4E:  # N
                if created:
                    exptime = self.realtime(raw)
            elif flag == 0x52:  # R
                if may_win and not created and exptime and exptime < self.realtime(raw):
                    won = True
            elif flag == 0x74:  # t
                seen = -1 if exptime == 0 else (exptime - now) & 0xFFFFFFFF
        return exptime, seen, won

    def meta_get(self, key: bytes, ops: list[tuple[int, int]], *, vivify: bool, bump: bool,
                 touched: bool, binary: bool, new_cas: int | None, claim: bool = True) -> MetaItem | None:
        """mg: fetch, maybe create (N), apply T/R in order, hand out the recache token.

        ``ops`` are the T, N, R and t flags in request order with their raw tokens.  With
        ``claim`` false (the command will answer an error) a won token is not recorded.
        """
        with self.lock:
            now = self.clock.now()
            record = self._find(key, now)
            created = False
            if record is None and vivify:
                new = pack_header(0, 0, now, self._cas_for(new_cas), KEY_BINARY if binary else 0) + b"\r\n"
                record = self._link(key, None, new, now)
                created = record is not None
            if record is None:
                self._count_fetch(touched, None)
                return None
            flags, exptime, time, cas, iflags = unpack_header(record)
            exptime, ttl, won = self._apply_ttl_ops(ops, exptime, created, now, not iflags & TOKEN_SENT)
            if created and any(flag == 0x4E for flag, _ in ops):
                won = True
            token_sent = bool(iflags & TOKEN_SENT)
            is_stale = bool(iflags & STALE)
            if is_stale and not token_sent:
                won = True
            new_iflags = iflags | (TOKEN_SENT if won and claim else 0)
            new_time = time
            if bump:
                new_iflags, new_time = self._bumped(new_iflags, time, now)
                new_iflags = self._rescue(key, self._clsid(key, flags, record), iflags, new_iflags)
            self._items[key] = pack_header(flags, exptime, new_time, cas, new_iflags) + record[HEADER_SIZE:]
            self._count_fetch(touched, self.class_stats[self._clsid(key, flags, record)])
            return MetaItem(
                flags=flags, cas=cas, data=memoryview(record)[HEADER_SIZE:], ttl=ttl,
                fetched=bool(iflags & FETCHED), idle=now - time, won=won, token_sent=token_sent,
                stale=is_stale, binary=bool(iflags & KEY_BINARY),
            )

    def meta_delete(self, key: bytes, *, compare_cas: int | None, stale: bool, ttl: int | None,
                    drop_value: bool, new_cas: int | None) -> str:
        """md: delete, or with ``stale`` (I) keep the item marked stale; ``HD``/``NF``/``EX``."""
        with self.lock:
            now = self.clock.now()
            record = self._find(key, now)
            if record is None:
                self.stats.delete_misses += 1
                return "NF"
            flags, exptime, time, cas, iflags = unpack_header(record)
            if compare_cas is not None and cas != compare_cas:
                self.stats.delete_misses += 1
                return "EX"
            if stale or drop_value:
                if stale:
                    if ttl is not None:
                        exptime = self.realtime(ttl)
                    iflags = (iflags | STALE) & ~TOKEN_SENT
                new = pack_header(flags, exptime, time, self._cas_for(new_cas), iflags)
                new += b"\r\n" if drop_value else record[HEADER_SIZE:]
                self._link(key, record, new, now)
                return "HD"
            self.class_stats[self._clsid(key, flags, record)].delete_hits += 1
            self._unlink(key, record)
            return "HD"

    def meta_arith(self, key: bytes, incr: bool, delta: int, ops: list[tuple[int, int]], *,
                   compare_cas: int | None, vivify: bool, initial: int, binary: bool,
                   new_cas: int | None) -> tuple[DeltaResult, int, int, int | None, bool]:
        """ma: incr/decr, create on miss with ``initial`` (N), then T/N/t in request order.

        Returns the result, the value, the item's CAS, the ``t`` TTL and whether it was
        created.
        """
        with self.lock:
            now = self.clock.now()
            result, value, record = self._delta(key, incr, delta, now, compare_cas, new_cas)
            created = False
            if result is DeltaResult.NOT_FOUND:
                if not vivify:
                    if incr:
                        self.stats.incr_misses += 1
                    else:
                        self.stats.decr_misses += 1
                    return result, 0, 0, None, False
                value = initial
                record = self._link(key, None, pack_header(0, 0, now, self._cas_for(new_cas),
                                                           KEY_BINARY if binary else 0) + b"%d\r\n" % value, now)
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
            now = self.clock.now()
            record = self._find(key, now)
            if record is None:
                return None
            flags, exptime, time, cas, iflags = unpack_header(record)
            size = item_total_size(len(key), flags, len(record) - HEADER_SIZE, self.use_cas)
            return (-1 if exptime == 0 else now - exptime, now - time, cas, bool(iflags & FETCHED),
                    self.slabs.clsid(size), size, bool(iflags & KEY_BINARY))

    def flush_all(self, delay: int) -> None:
        """Invalidate every item updated before now + ``delay`` (memcached's rules)."""
        with self.lock:
            now = self.clock.now()
            new_oldest = self.realtime(delay) if delay > 0 else now
            self._may_expire = True
            if self.use_cas:
                self._oldest_live = new_oldest - 1
                if self._oldest_live <= now:
                    self._oldest_cas = self._next_cas()
            else:
                self._oldest_live = new_oldest

    def reassign(self, src: int, dst: int) -> str:
        """``slabs reassign``: move one page from class ``src`` (-1: any with a spare page)
        to class ``dst`` (0: the global pool), evicting what the page held.

        Returns memcached's answer: OK, BADCLASS, NOSPARE or SAME.
        """
        nclasses = len(self.slabs.sizes)
        with self.lock:
            lru = self.lru
            if src == -1:
                spare = [c for c in range(1, nclasses + 1) if c != dst and lru.pages[c] > 1]
                if not spare:
                    return "NOSPARE"
                src = max(spare, key=lambda c: lru.pages[c])
            if not 1 <= src <= nclasses or not 0 <= dst <= nclasses:
                return "BADCLASS"
            if src == dst:
                return "SAME"
            if lru.pages[src] < 2:
                return "NOSPARE"
            lru.pages[src] -= 1
            if dst:
                lru.pages[dst] += 1
            else:
                lru.global_pool += 1
            lru.slabs_moved += 1
            now = self.clock.now()
            while lru.over(src) and self._evict_one(src, now):
                pass
            return "OK"

    def set_maxbytes(self, maxbytes: int) -> None:
        """cache_memlimit: a smaller limit evicts down to it at once."""
        with self.lock:
            self.maxbytes = self.lru.maxbytes = maxbytes
            self._make_room(0, self.clock.now(), None)

    # -- introspection --------------------------------------------------------------------

    def item_clsid(self, key: bytes, flags: int, nbytes: int) -> int:
        """The slab class of an item with this key, flags and value (``nbytes`` with CRLF)."""
        return self.slabs.clsid(item_total_size(len(key), flags, nbytes, self.use_cas))

    def too_large_for(self, key_length: int, flags: int, nbytes: int) -> bool:
        """The ``-I`` rule: whether such an item can never be stored."""
        return item_total_size(key_length, flags, nbytes, self.use_cas) > self.item_size_max

    @property
    def mem_used(self) -> int:
        """The Python memory the items really take, what ``-m`` bounds: every key and record
        object plus the hash table and the eviction queue at their current sizes.  Under
        churn a dict keeps 2 to 4 entry slots per live item, so it is measured, not guessed.
        """
        return (self._object_bytes + sys.getsizeof(self._items)
                + _QUEUE_SLOT * len(self.lru) + _FRAGMENTATION * len(self._items))

    @property
    def curr_items(self) -> int:
        return len(self._items)

    def class_age(self, clsid: int, seg: int = COLD) -> int:
        """Seconds since the oldest item of a class's segment was used (``stats items``)."""
        with self.lock:
            heads = self.lru.live_heads(clsid, seg, 1)
            record = self._items.get(heads[0]) if heads else None
            return self.clock.now() - unpack_header(record)[2] if record else 0

    def sizes(self, cas_min: int) -> dict[int, int]:
        """``stats sizes``: items by total size rounded up to 32 bytes, counting only items
        stored since tracking began (CAS at least ``cas_min``), as memcached does."""
        hist: dict[int, int] = {}
        with self.lock:
            for key, record in self._items.items():
                flags, _, _, cas, _ = unpack_header(record)
                if cas < cas_min:
                    continue
                ntotal = item_total_size(len(key), flags, len(record) - HEADER_SIZE, self.use_cas)
                bucket = -(-ntotal // 32) * 32
                if bucket <= self.item_size_max:
                    hist[bucket] = hist.get(bucket, 0) + 1
        return hist

    def dump(self, clsid: int, limit: int) -> list[tuple[bytes, int, int]]:
        """``stats cachedump``: ``(key, value length, expiry as Unix time or 0)``."""
        out: list[tuple[bytes, int, int]] = []
        with self.lock:
            started = self.clock.process_started
            for key, record in self._items.items():
                flags, exptime = unpack_header(record)[:2]
                if self._clsid(key, flags, record) != clsid:
                    continue
                out.append((key, items.value_length(record), exptime + started if exptime else started))
                if limit and len(out) >= limit:
                    break
        return out
