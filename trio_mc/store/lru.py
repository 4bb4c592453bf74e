"""Per-class LRU queues and slab page accounting: memcached's ``slabclass`` and LRU lists.

memcached carves ``-m`` into 1 MiB pages; each slab class takes pages as it needs chunks,
and once no page is left an item can only be stored by evicting from its own class.  Tools
and tests observe exactly that (which items are evicted, ``total_malloced``, per-class
``evicted``), so trio-mc keeps the same book-keeping: pages and used chunks per class.

Each class has four FIFO queues of keys, memcached's segmented LRU: new items enter HOT
(or TEMP for short TTLs, never evicted); HOT and WARM overflow into COLD, items read twice
are kept in (or rescued to) WARM, and eviction takes COLD's oldest.  In flat mode
(``no_lru_maintainer``) only COLD is used, as a CLOCK with a second chance.

Removing a key leaves its queue entry behind as a stale one: stale entries are counted per
queue and key (the oldest entries of a key are the stale ones) and skipped when met, and
the queues are compacted once stale entries outnumber live items.
"""

from __future__ import annotations

import os
from collections import deque

from trio_mc.store.slabs import SLAB_PAGE_SIZE, SlabClasses


class ClassQueues:
    """Eviction queues and page counts, indexed by slab class id (1-based)."""

    def __init__(self, slabs: SlabClasses, maxbytes: int) -> None:
        n = len(slabs.sizes) + 1
        self.slabs = slabs
        self.maxbytes = maxbytes
        self.queues: list[list[deque[bytes]]] = [[deque() for _ in range(4)] for _ in range(n)]
        self._stale: list[list[dict[bytes, int]]] = [[{} for _ in range(4)] for _ in range(n)]
        self.counts = [[0] * 4 for _ in range(n)]  # live items per class and segment
        self.entries = 0  # queue entries in all queues, stale ones included
        self.stale_total = 0
        self.pages = [0] * n
        self.chunks = [0] * n  # chunks in use
        self.global_pool = 0  # pages given back by "slabs reassign <src> 0"
        self.slabs_moved = 0
        # memcached's test hook: pretend this much was already allocated.
        self.malloced = int(os.environ.get("T_MEMD_INITIAL_MALLOC", "0") or 0)

    def chunks_for(self, clsid: int, ntotal: int) -> int:
        """Chunks an item takes: one, or several of the largest class for big items."""
        size = self.slabs.sizes[clsid - 1]
        return 1 if ntotal <= size else -(-ntotal // size)

    def fits(self, clsid: int, nchunks: int) -> bool:
        """Whether the class has ``nchunks`` free chunks, taking pages while ``-m`` allows
        (a class's first page is always granted, as in memcached)."""
        per_page = self.slabs.per_page[clsid - 1]
        while self.chunks[clsid] + nchunks > self.pages[clsid] * per_page:
            if self.global_pool:
                self.global_pool -= 1
            elif self.pages[clsid] and self.malloced + SLAB_PAGE_SIZE > self.maxbytes:
                return False
            else:
                self.malloced += SLAB_PAGE_SIZE
            self.pages[clsid] += 1
        return True

    def release_empty_pages(self) -> int:
        """memcached's slab automover, simplified: pages a class no longer needs (beyond
        one spare) go back to the global pool, and pool pages over ``-m`` are freed.
        Returns how many pages moved."""
        moved = 0
        for clsid in range(1, len(self.pages)):
            per_page = self.slabs.per_page[clsid - 1]
            needed = -(-self.chunks[clsid] // per_page)
            spare = self.pages[clsid] - needed - 1
            if spare > 0:
                self.pages[clsid] -= spare
                self.global_pool += spare
                moved += spare
        while self.global_pool and self.malloced > self.maxbytes:
            self.global_pool -= 1
            self.malloced -= SLAB_PAGE_SIZE
        self.slabs_moved += moved
        return moved

    def over(self, clsid: int) -> bool:
        """More chunks in use than the class's pages hold (after a page was moved away)."""
        return self.chunks[clsid] > self.pages[clsid] * self.slabs.per_page[clsid - 1]

    def append(self, key: bytes, clsid: int, seg: int) -> None:
        self.queues[clsid][seg].append(key)
        self.entries += 1

    def popleft(self, clsid: int, seg: int) -> bytes | None:
        """Take the oldest entry of a queue (stale or not), or ``None`` if it is empty."""
        queue = self.queues[clsid][seg]
        if not queue:
            return None
        self.entries -= 1
        return queue.popleft()

    def push_front(self, key: bytes, clsid: int, seg: int) -> None:
        """Put an entry back at the head of its queue (it was not taken after all)."""
        self.queues[clsid][seg].appendleft(key)
        self.entries += 1

    def head(self, clsid: int, seg: int) -> bytes | None:
        queue = self.queues[clsid][seg]
        return queue[0] if queue else None

    def orphan(self, key: bytes, clsid: int, seg: int) -> None:
        """The key's entry in this queue no longer stands for a live item."""
        stale = self._stale[clsid][seg]
        stale[key] = stale.get(key, 0) + 1
        self.stale_total += 1

    def skip_stale(self, key: bytes, clsid: int, seg: int) -> bool:
        """Consume one stale entry of ``key`` in this queue if it has any."""
        stale = self._stale[clsid][seg]
        count = stale.get(key)
        if not count:
            return False
        if count == 1:
            del stale[key]
        else:
            stale[key] = count - 1
        self.stale_total -= 1
        return True

    def compact(self) -> None:
        for clsid, queues in enumerate(self.queues):
            for seg, queue in enumerate(queues):
                if queue:
                    queues[seg] = deque(key for key in queue if not self.skip_stale(key, clsid, seg))
        self.entries = sum(len(q) for queues in self.queues for q in queues)

    def live_heads(self, clsid: int, seg: int, limit: int) -> list[bytes]:
        """Up to ``limit`` live keys from the head (oldest end) of a queue, not consumed."""
        stale = self._stale[clsid][seg]
        seen: dict[bytes, int] = {}
        out = []
        for key in self.queues[clsid][seg]:
            skipped = seen.get(key, 0)
            if skipped < stale.get(key, 0):
                seen[key] = skipped + 1
                continue
            out.append(key)
            if len(out) >= limit:
                break
        return out

    def __len__(self) -> int:
        return self.entries
