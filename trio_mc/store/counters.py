"""The store's statistics counters: per slab class and store-wide, as ``stats`` reports them."""

from __future__ import annotations

from dataclasses import dataclass, field


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

