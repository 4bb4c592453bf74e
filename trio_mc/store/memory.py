"""Memory accounting and eviction: ``-m`` in real Python bytes, memcached's ``bytes`` beside it.

Memory is bounded by ``-m`` counted in real Python bytes: the key object, the record object
(:func:`~.items.item_cost`) and the hash-table and queue slots at their real sizes
(:attr:`Memory.mem_used`).  memcached's own ``bytes`` statistic (the sum of its item sizes)
and its slab pages per class are kept beside it, so ``stats`` and which items get evicted
read like memcached's: an allocation first needs a free chunk in its class (taking a page
while ``-m`` allows, else evicting from that class), then room under the Python limit.
The two differ on purpose: the record's reply suffix (:mod:`.items`) is real memory and
counted against ``-m``, but memcached's item size (``bytes``, the slab class) is its
``ITEM_ntotal`` of key, value and flags only, so ``stats`` match memcached byte for byte.

Eviction takes the oldest item of a class's COLD segment; dead items met there are reclaimed
instead, items read again are rescued to WARM (in flat mode: a second chance in COLD).
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from trio_mc.modes import SET
from trio_mc.store.items import (
    ACTIVE,
    CLSID_AT,
    COLD,
    FETCHED,
    HOT,
    IFLAGS_AT,
    SEGMENT,
    TEMP,
    WARM,
    item_cost,
    nbytes,
    unpack_header,
)
from trio_mc.store.results import StoreResult
from trio_mc.store.table import Table

# One slot of the eviction queue (a deque stores a pointer per entry).
_QUEUE_SLOT = 8
# CPython's small-object allocator returns memory to the OS only in whole arenas, so under
# churn some memory stays held between live objects (measured: 1.0 MiB for 53k items after
# writing 4x -m 16, about 20 bytes per item); it is counted against -m per item.
_FRAGMENTATION = 20


class Memory(Table):
    """Accounting of every link and unlink, and making room by eviction."""

    def _account(self, key: bytes, record: bytes, sign: int) -> int:
        """Add (``sign`` 1) or remove (-1) an item's memory; returns its class id."""
        ntotal = self._ntotal(key, unpack_header(record)[0], record)
        self._object_bytes += sign * item_cost(len(key), len(record))
        self.bytes += sign * ntotal
        clsid = record[CLSID_AT]
        cls = self.class_stats[clsid]
        cls.number += sign
        cls.mem_requested += sign * ntotal
        self.lru.chunks[clsid] += sign * self.lru.chunks_for(clsid, ntotal)
        self.lru.counts[clsid][SEGMENT[record[IFLAGS_AT]]] += sign
        return clsid

    @property
    def mem_used(self) -> int:
        """The Python memory the items really take, what ``-m`` bounds: every key and record
        object plus the hash table and the eviction queue at their current sizes.  Under
        churn a dict keeps 2 to 4 entry slots per live item, so it is measured, not guessed.
        """
        return (self._object_bytes + sys.getsizeof(self._items)
                + _QUEUE_SLOT * len(self.lru) + _FRAGMENTATION * len(self._items))

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
                iflags = record[IFLAGS_AT]
                self._move(key, record, clsid, SEGMENT[iflags], COLD, iflags & ~ACTIVE)
                cls.moves_to_cold += 1
                continue
            key, record = entry
            _, exptime, time, cas, iflags = unpack_header(record)
            if self._is_dead(exptime, time, cas, now):
                self._reclaim(record, iflags)
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
                                  clsid, nbytes(record) - 2)
            del self._items[key]
            self._account(key, record, -1)
            return True
        return False

    def _reclaim(self, record: bytes, iflags: int) -> None:
        """Count a dead item whose memory is taken back (``reclaimed``)."""
        cls = self.class_stats[record[CLSID_AT]]
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
            tries = 5  # items looked at; left-behind queue entries are not items and cost none
            while tries:
                key = lru.head(clsid, seg)
                if key is None:
                    break
                if lru.skip_stale(key, clsid, seg):
                    lru.popleft(clsid, seg)
                    continue
                tries -= 1
                record = self._items[key]
                _, exptime, time, cas, iflags = unpack_header(record)
                if not self._is_dead(exptime, time, cas, now):
                    break
                lru.popleft(clsid, seg)
                del self._items[key]
                self._account(key, record, -1)
                self._reclaim(record, iflags)

    def set_maxbytes(self, maxbytes: int) -> None:
        """cache_memlimit: a smaller limit evicts down to it at once."""
        with self.lock:
            self.maxbytes = self.lru.maxbytes = maxbytes
            self._make_room(0, self.clock.current, None)

    def _out_of_memory(self, mode: int, key: bytes) -> int:
        self.stats.store_no_memory += 1
        if mode == SET:
            self._drop(key)
        return StoreResult.NO_MEMORY

    if TYPE_CHECKING:  # provided by the maintainer layer
        def _pop_live(self, clsid: int, seg: int) -> tuple[bytes, bytes] | None: ...
        def _move(self, key: bytes, record: bytes, clsid: int, seg: int, to: int, iflags: int) -> None: ...
