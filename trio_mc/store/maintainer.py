"""LRU maintenance and the crawler: memcached's segmented LRU, its maintainer and crawler threads.

Each slab class has four queues (:mod:`.lru`): new items enter HOT (TEMP for a TTL under
``temporary_ttl``, never evicted); the background maintainer (:meth:`Maintainer.maintain`,
about once a second) moves HOT and WARM overflow to COLD, keeping items read since they were
stored in WARM; a read that makes a COLD item ACTIVE rescues it to WARM at once (memcached's
asynchronous bump).  The item's segment is kept in two bits of its item flags.  In flat mode
(``no_lru_maintainer``) only COLD is used, as a CLOCK with a second chance.

The crawler side reclaims dead items in the background a bounded step at a time
(:meth:`Maintainer.reclaim_step`) and serves ``lru_crawler crawl``/``metadump``; slab page
moves (``slabs reassign``, automove) and the introspection of classes live here too.
"""

from __future__ import annotations

import itertools

from trio_mc.store.items import (
    ACTIVE,
    CLSID_AT,
    COLD,
    FETCHED,
    HEADER_SIZE,
    HOT,
    IFLAGS_AT,
    SEGMENT,
    TEMP,
    WARM,
    nbytes,
    unpack_header,
    with_segment,
)
from trio_mc.store.memory import Memory
from trio_mc.store.results import ReassignResult

#: memcached's ITEM_UPDATE_INTERVAL: a read refreshes an item's time at most this often.
ITEM_UPDATE_INTERVAL = 60


class Maintainer(Memory):
    """LRU segment moves, the maintainer's and crawler's passes, slab page moves."""

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

    def _rescue(self, key: bytes, clsid: int, iflags: int, new_iflags: int) -> int:
        """memcached's asynchronous bump: a COLD item that just became ACTIVE moves to WARM
        (ACTIVE cleared), so it is not the next to go.  Returns the item flags to store."""
        if not (self.lru_segmented and new_iflags & ACTIVE and not iflags & ACTIVE
                and SEGMENT[iflags] == COLD):
            return new_iflags
        self.lru.orphan(key, clsid, COLD)
        self.lru.append(key, clsid, WARM)
        counts = self.lru.counts[clsid]
        counts[COLD] -= 1
        counts[WARM] += 1
        self.class_stats[clsid].moves_to_warm += 1
        return with_segment(new_iflags & ~ACTIVE, WARM)

    def _update_time(self, time: int, now: int) -> int:
        """``do_item_update``: the access time after a write-like touch of an item."""
        if self.lru_segmented or time < now - ITEM_UPDATE_INTERVAL:
            return now
        return time

    def _first_segment(self, exptime: int, now: int) -> int:
        """Where a new item enters its class: TEMP for a short TTL, else HOT (COLD when flat)."""
        if not self.lru_segmented:
            return COLD
        if self.temporary_ttl is not None and exptime and exptime - now < self.temporary_ttl:
            return TEMP
        return HOT

    def _move(self, key: bytes, record: bytes, clsid: int, seg: int, to: int, iflags: int) -> None:
        """Put an item at the back of another segment of its class (ACTIVE cleared)."""
        new_iflags = with_segment(iflags & ~ACTIVE, to)
        self._items[key] = record[:IFLAGS_AT] + bytes((new_iflags,)) + record[HEADER_SIZE:]
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
                _, exptime, time, cas, iflags = unpack_header(record)
                if self._is_dead(exptime, time, cas, now):
                    del self._items[key]
                    self._account(key, record, -1)
                    self._reclaim(record, iflags)
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
            now = self.clock.tick()  # a background pass: no read ticked before it
            if self.automove:
                self.lru.release_empty_pages()
            if not self.lru_segmented:
                return
            for clsid, cls in enumerate(self.class_stats):
                if cls.number:
                    self._juggle(clsid, now)

    def reclaim_step(self, limit: int = 5000) -> int:
        """One step of the background LRU maintainer: reclaim expired and flushed items.

        Walks the table ``limit`` items per call (holding no references between calls,
        so evicted items are freed at once) and does nothing until some item could expire.
        Returns how many items were reclaimed.
        """
        reclaimed = 0
        with self.lock:
            now = self.clock.tick()  # a background pass: no read ticked before it
            if not self._may_expire:
                return 0
            if self._crawl_pos >= len(self._items):
                self._crawl_pos = 0
            batch = list(itertools.islice(self._items.items(), self._crawl_pos, self._crawl_pos + limit))
            self._crawl_pos += limit
            for key, record in batch:
                _, exptime, time, cas, iflags = unpack_header(record)
                if self._is_dead(exptime, time, cas, now):
                    self._unlink(key, record)
                    self._reclaim(record, iflags)
                    reclaimed += 1
        return reclaimed

    def crawl(self, classes: set[int] | None = None) -> None:
        """``lru_crawler crawl``: check every item of these classes (all if ``None``) and
        reclaim the dead ones, counted as ``crawler_reclaimed``."""
        with self.lock:
            now = self.clock.current
            for key, record in list(self._items.items()):
                _, exptime, time, cas, _ = unpack_header(record)
                clsid = record[CLSID_AT]
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
            now = self.clock.current
            started = self.clock.process_started
            for key, record in self._items.items():
                flags, exptime, time, cas, iflags = unpack_header(record)
                if self._is_dead(exptime, time, cas, now):
                    continue
                out.append((key, exptime + started if exptime else -1, time + started, cas,
                            bool(iflags & FETCHED), record[CLSID_AT], self._ntotal(key, flags, record)))
        return out

    def reassign(self, src: int, dst: int) -> int:
        """``slabs reassign``: move one page from class ``src`` (-1: any with a spare page)
        to class ``dst`` (0: the global pool), evicting what the page held.

        Returns a :class:`~.results.ReassignResult`.
        """
        nclasses = len(self.slabs.sizes)
        with self.lock:
            lru = self.lru
            if src == -1:
                spare = [c for c in range(1, nclasses + 1) if c != dst and lru.pages[c] > 1]
                if not spare:
                    return ReassignResult.NOSPARE
                src = max(spare, key=lambda c: lru.pages[c])
            if not 1 <= src <= nclasses or not 0 <= dst <= nclasses:
                return ReassignResult.BADCLASS
            if src == dst:
                return ReassignResult.SAME
            if lru.pages[src] < 2:
                return ReassignResult.NOSPARE
            lru.pages[src] -= 1
            if dst:
                lru.pages[dst] += 1
            else:
                lru.global_pool += 1
            lru.slabs_moved += 1
            now = self.clock.current
            while lru.over(src) and self._evict_one(src, now):
                pass
            return ReassignResult.OK

    def class_age(self, clsid: int, seg: int = COLD) -> int:
        """Seconds since the oldest item of a class's segment was used (``stats items``)."""
        with self.lock:
            heads = self.lru.live_heads(clsid, seg, 1)
            record = self._items.get(heads[0]) if heads else None
            return self.clock.current - unpack_header(record)[2] if record else 0

    def sizes(self, cas_min: int) -> dict[int, int]:
        """``stats sizes``: items by total size rounded up to 32 bytes, counting only items
        stored since tracking began (CAS at least ``cas_min``), as memcached does."""
        hist: dict[int, int] = {}
        with self.lock:
            for key, record in self._items.items():
                flags, _, _, cas, _ = unpack_header(record)
                if cas < cas_min:
                    continue
                ntotal = self._ntotal(key, flags, record)
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
                if record[CLSID_AT] != clsid:
                    continue
                exptime = unpack_header(record)[1]
                out.append((key, nbytes(record) - 2, exptime + started if exptime else started))
                if limit and len(out) >= limit:
                    break
        return out
