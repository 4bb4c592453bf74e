"""The store on its own: semantics, expiry with a hand-driven clock, memory bound, the text
get's reply tails, typed results and the coarse clock's tick rule."""

from __future__ import annotations

import functools

import pytest

from trio_mc.protocol import replies
from trio_mc.sizes import item_total_size
from trio_mc.store.clock import Clock, ManualClock
from trio_mc.store.results import TTL_RECACHE, TTL_REPORT, TTL_SET, TTL_VIVIFY, DeleteResult, ReassignResult
from trio_mc.modes import ADD, APPEND, CAS, PREPEND, REPLACE, SET
from trio_mc.store.results import DeltaResult, StoreResult
from trio_mc.store.store import Store


#: A store with the server's reply suffix renderers, as the server injects them.
new_store = functools.partial(Store, value_suffix=replies.value_suffix, cas_suffix=replies.value_suffix_cas)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def store(clock: ManualClock) -> Store:
    return new_store(clock=clock)


def value(store: Store, key: bytes) -> bytes | None:
    hits = store.get([key])
    return bytes(hits[0][3])[:-2] if hits else None


def test_modes(store: Store) -> None:
    assert store.store(ADD, b"k", 1, 0, b"a\r\n")[0] == StoreResult.STORED
    assert store.store(ADD, b"k", 1, 0, b"b\r\n")[0] == StoreResult.NOT_STORED
    assert store.store(REPLACE, b"x", 0, 0, b"b\r\n")[0] == StoreResult.NOT_STORED
    assert store.store(APPEND, b"k", 9, 0, b"z\r\n")[0] == StoreResult.STORED
    assert store.store(PREPEND, b"k", 9, 0, b"y\r\n")[0] == StoreResult.STORED
    assert value(store, b"k") == b"yaz"
    assert store.get([b"k"])[0][1] == 1  # append/prepend keep the old flags


def test_cas_counter_is_global_and_checked(store: Store) -> None:
    store.store(SET, b"a", 0, 0, b"1\r\n")
    store.store(SET, b"b", 0, 0, b"1\r\n")
    cas_b = store.get([b"b"])[0][2]
    assert cas_b == 2
    assert store.store(CAS, b"b", 0, 0, b"2\r\n", 1)[0] == StoreResult.EXISTS
    assert store.store(CAS, b"b", 0, 0, b"2\r\n", cas_b)[0] == StoreResult.STORED
    assert store.store(CAS, b"nope", 0, 0, b"2\r\n", 5)[0] == StoreResult.NOT_FOUND


def test_cas_off(clock: ManualClock) -> None:
    store = new_store(clock=clock, use_cas=False)
    store.store(SET, b"a", 0, 0, b"1\r\n")
    assert store.get([b"a"])[0][2] == 0


def test_incr_decr_wrap_clamp_and_padding(store: Store) -> None:
    store.store(SET, b"n", 0, 0, b"18446744073709551615\r\n")
    assert store.delta(b"n", True, 2) == (DeltaResult.OK, 1)
    assert value(store, b"n") == b"1" + b" " * 19
    store.store(SET, b"n", 0, 0, b"100\r\n")
    assert store.delta(b"n", False, 1000) == (DeltaResult.OK, 0)
    assert value(store, b"n") == b"0  "
    store.store(SET, b"n", 0, 0, b"99\r\n")
    assert store.delta(b"n", True, 1) == (DeltaResult.OK, 100)
    assert value(store, b"n") == b"100"
    store.store(SET, b"t", 0, 0, b"1 2\r\n")
    assert store.delta(b"t", True, 1) == (DeltaResult.OK, 2)
    store.store(SET, b"x", 0, 0, b"abc\r\n")
    assert store.delta(b"x", True, 1)[0] == DeltaResult.NON_NUMERIC
    assert store.delta(b"missing", True, 1)[0] == DeltaResult.NOT_FOUND


def test_relative_absolute_and_negative_expiry(store: Store, clock: ManualClock) -> None:
    store.store(SET, b"rel", 0, 10, b"x\r\n")
    store.store(SET, b"abs", 0, clock.process_started + clock.current + 20, b"x\r\n")
    store.store(SET, b"past", 0, 2592001, b"x\r\n")  # absolute, long ago
    assert store.store(SET, b"neg", 0, -1, b"x\r\n")[0] == StoreResult.STORED
    assert value(store, b"past") is None and value(store, b"neg") is None
    clock.advance(9)
    assert value(store, b"rel") == b"x"
    clock.advance(1)
    assert value(store, b"rel") is None
    assert value(store, b"abs") == b"x"
    clock.advance(10)
    assert value(store, b"abs") is None
    assert store.stats.get_expired + store.stats.reclaimed == 4  # (the LRU juggler may get there first)


def test_touch_and_gat_move_expiry(store: Store, clock: ManualClock) -> None:
    store.store(SET, b"k", 0, 5, b"x\r\n")
    assert store.touch(b"k", 100)
    clock.advance(50)
    assert store.get([b"k"], 10)  # gat
    clock.advance(11)
    assert store.get([b"k"]) == []


def test_flush_all_immediate_and_delayed(store: Store, clock: ManualClock) -> None:
    store.store(SET, b"a", 0, 0, b"x\r\n")
    store.flush_all(0)
    assert value(store, b"a") is None
    store.store(SET, b"b", 0, 0, b"x\r\n")  # same second, after the flush: visible
    assert value(store, b"b") == b"x"
    store.flush_all(10)
    clock.advance(5)
    assert value(store, b"b") == b"x"
    clock.advance(5)
    assert value(store, b"b") is None


def test_flush_without_cas_hides_items_set_in_the_same_second(clock: ManualClock) -> None:
    store = new_store(clock=clock, use_cas=False)
    store.flush_all(0)
    store.store(SET, b"a", 0, 0, b"x\r\n")
    assert value(store, b"a") is None


def test_memory_limit_evicts_oldest_unless_recently_read(clock: ManualClock) -> None:
    store = new_store(clock=clock, maxbytes=200_000)
    data = b"v" * 1000 + b"\r\n"
    for i in range(50):
        store.store(SET, b"key%d" % i, 0, 0, data)
    store.get([b"key0"])
    store.get([b"key0"])  # read twice: ACTIVE, gets a second chance
    for i in range(50, 400):
        store.store(SET, b"key%d" % i, 0, 0, data)
        assert store.mem_used <= store.maxbytes
    assert store.stats.evictions > 0
    assert value(store, b"key1") is None
    assert value(store, b"key399") is not None


def test_no_evict_mode_refuses(clock: ManualClock) -> None:
    store = new_store(clock=clock, maxbytes=50_000, evict=False)
    results = [store.store(SET, b"k%d" % i, 0, 0, b"x" * 1000 + b"\r\n")[0] for i in range(100)]
    assert StoreResult.NO_MEMORY in results
    assert store.stats.store_no_memory > 0
    assert value(store, b"k0") is not None


def test_deleted_keys_do_not_grow_the_queue(store: Store) -> None:
    for i in range(20000):
        store.store(SET, b"k", 0, 0, b"x\r\n")
        store.delete(b"k")
        store.store(SET, b"k%d" % (i % 10), 0, 0, b"x\r\n")
        store.delete(b"k%d" % (i % 10))
    assert len(store.lru) < 3000


def test_set_maxbytes_shrinks(clock: ManualClock) -> None:
    store = new_store(clock=clock, maxbytes=10_000_000)
    for i in range(2000):
        store.store(SET, b"k%d" % i, 0, 0, b"x" * 500 + b"\r\n")
    store.set_maxbytes(100_000)
    assert store.mem_used <= 100_000 and store.curr_items < 2000


def test_stats_counters(store: Store) -> None:
    store.store(SET, b"a", 0, 0, b"1\r\n")
    store.get([b"a", b"b"])
    store.delete(b"b")
    assert store.get_cmds == 2 and store.stats.get_misses == 1
    assert sum(c.get_hits for c in store.class_stats) == 1
    assert store.stats.delete_misses == 1
    assert store.curr_items == 1 and store.stats.total_items == 1
    assert store.bytes == 48 + 2 + 3 + 8


def test_slab_pages_bound_each_class_and_reassign_moves_one(clock: ManualClock) -> None:
    store = new_store(clock=clock, maxbytes=4 * 1024 * 1024)
    big = b"x" * 70000 + b"\r\n"  # class 31: 12 per 1 MiB page... 4 pages at most
    for i in range(60):
        store.store(SET, b"b%d" % i, 0, 0, big)
    assert store.lru.pages[31] == 4 and store.class_stats[31].evicted > 0
    small = b"y" * 20000 + b"\r\n"
    for i in range(60):
        store.store(SET, b"s%d" % i, 0, 0, small)
    assert store.class_stats[25].evicted > 0  # its first page is granted, then it evicts
    assert store.reassign(31, 25) == ReassignResult.OK
    assert (store.lru.pages[31], store.lru.pages[25], store.lru.slabs_moved) == (3, 2, 1)
    assert store.reassign(25, 25) == ReassignResult.SAME
    assert store.reassign(99, 1) == ReassignResult.BADCLASS


def test_automove_returns_unneeded_pages_and_frees_them_over_the_limit(clock: ManualClock) -> None:
    store = new_store(clock=clock, maxbytes=16 * 1024 * 1024)
    big = b"x" * 66560 + b"\r\n"  # 12 per page
    for i in range(150):
        store.store(SET, b"k%d" % i, 0, 0, big)
    malloced = store.lru.malloced
    store.set_maxbytes(8 * 1024 * 1024)
    for i in range(150):
        store.delete(b"k%d" % i)
    store.maintain()
    assert store.lru.malloced < malloced and store.lru.malloced <= 8 * 1024 * 1024
    assert store.lru.slabs_moved > 0


# -- the text get's tails ---------------------------------------------------------------------


def test_get_one_returns_the_reply_tail_after_value_key(store: Store) -> None:
    store.store(SET, b"k", 5, 0, b"abc\r\n")
    assert store.get_one(b"k") == b" 5 3\r\nabc\r\n"  # first read: the general path
    assert store.get_one(b"k") == b" 5 3\r\nabc\r\n"  # FETCHED, then ACTIVE: the fast path
    assert store.get_one(b"k") == b" 5 3\r\nabc\r\n"
    assert store.get_one(b"nope") is None
    assert (store.get_cmds, store.stats.get_misses) == (4, 1)
    assert sum(c.get_hits for c in store.class_stats) == 3


def test_large_tails_are_memoryviews_of_the_same_bytes(store: Store) -> None:
    value = b"x" * 5000
    store.store(SET, b"big", 0, 0, value + b"\r\n")
    tail = store.get_one(b"big")
    assert isinstance(tail, memoryview)
    assert bytes(tail) == b" 0 5000\r\n" + value + b"\r\n"
    [(key, multi_tail)] = store.get_multi([b"big"])
    assert key == b"big" and bytes(multi_tail) == bytes(tail)


def test_get_multi_in_request_order_with_the_stats_and_bumps_of_get(store: Store, clock: ManualClock) -> None:
    store.store(SET, b"a", 1, 0, b"x\r\n")
    store.store(SET, b"b", 22, 100, b"yy\r\n")
    assert store.get_multi([b"b", b"missing", b"a", b"b"]) == [
        (b"b", b" 22 2\r\nyy\r\n"), (b"a", b" 1 1\r\nx\r\n"), (b"b", b" 22 2\r\nyy\r\n"),
    ]
    assert (store.get_cmds, store.stats.get_misses) == (4, 1)
    info = store.debug(b"a")
    assert info is not None and info[3]  # fetched, as after get
    clock.advance(100)
    assert store.get_multi([b"a", b"b"]) == [(b"a", b" 1 1\r\nx\r\n")]  # b expired
    assert store.stats.get_expired == 1


def test_get_multi_cas_renders_the_cas_per_hit(store: Store) -> None:
    store.store(SET, b"a", 7, 0, b"hello\r\n")
    store.store(SET, b"b", 0, 0, b"\r\n")
    assert store.get_multi_cas([b"a", b"zz", b"b"]) == [
        (b"a", b" 7 5 1\r\n", b"hello\r\n"), (b"b", b" 0 0 2\r\n", b"\r\n"),
    ]
    assert store.get([b"a"]) == [(b"a", 7, 1, b"hello\r\n")]  # the other protocols: (flags, cas, data)


def test_every_new_record_gets_its_suffix(store: Store) -> None:
    store.store(SET, b"k", 3, 0, b"ab\r\n")
    store.store(APPEND, b"k", 0, 0, b"cde\r\n")
    assert store.get_one(b"k") == b" 3 5\r\nabcde\r\n"
    store.store(PREPEND, b"k", 0, 0, b"_\r\n")
    assert store.get_one(b"k") == b" 3 6\r\n_abcde\r\n"
    store.store(SET, b"n", 0, 0, b"99\r\n")
    store.delta(b"n", True, 1)  # longer: a new record
    assert store.get_one(b"n") == b" 0 3\r\n100\r\n"
    store.delta(b"n", False, 95)  # shorter: in place, padded, same length
    assert store.get_one(b"n") == b" 0 3\r\n5  \r\n"
    assert store.meta_arith(b"c", True, 1, [], compare_cas=None, vivify=True, initial=41, binary=False,
                            new_cas=None)[:2] == (DeltaResult.OK, 41)
    assert store.get_one(b"c") == b" 0 2\r\n41\r\n"
    store.meta_delete(b"k", compare_cas=None, stale=True, ttl=None, drop_value=True, new_cas=None)
    assert store.get_one(b"k") == b" 3 0\r\n\r\n"


def test_the_suffix_is_memory_but_not_memcacheds_item_size(store: Store) -> None:
    store.store(SET, b"k", 0, 0, b"abc\r\n")
    assert store.bytes == item_total_size(1, 0, 5, True) == 48 + 1 + 1 + 5 + 8
    assert store.item_clsid(1, 0, 5) == store.slabs.clsid(store.bytes)
    store.store(SET, b"k", 123456789, 0, b"abc\r\n")  # a longer suffix, one more flags field
    assert store.bytes == item_total_size(1, 123456789, 5, True)
    assert store.mem_used > store.bytes  # the Python objects, suffix included


# -- typed results ------------------------------------------------------------------------------


def test_results_are_plain_ints() -> None:
    values = [StoreResult.STORED, StoreResult.NOT_STORED, StoreResult.EXISTS, StoreResult.NOT_FOUND,
              StoreResult.NO_MEMORY]
    assert all(type(v) is int for v in values) and len(set(values)) == 5
    assert type(DeltaResult.OK) is int and type(DeleteResult.DELETED) is int and type(ReassignResult.OK) is int


def test_meta_delete_results(store: Store) -> None:
    store.store(SET, b"k", 0, 0, b"x\r\n")
    cas = store.get([b"k"])[0][2]
    md = store.meta_delete
    assert md(b"none", compare_cas=None, stale=False, ttl=None, drop_value=False, new_cas=None) == DeleteResult.NOT_FOUND
    assert md(b"k", compare_cas=cas + 1, stale=False, ttl=None, drop_value=False, new_cas=None) == DeleteResult.EXISTS
    assert md(b"k", compare_cas=cas, stale=False, ttl=None, drop_value=False, new_cas=None) == DeleteResult.DELETED
    assert store.get_one(b"k") is None


def test_ttl_operations_apply_in_request_order(store: Store, clock: ManualClock) -> None:
    store.store(SET, b"k", 0, 0, b"x\r\n")

    def ttl(ops: list[tuple[int, int]]) -> int | None:
        item = store.meta_get(b"k", ops, vivify=False, bump=True, touched=False, binary=False, new_cas=None)
        assert item is not None
        return item.ttl

    assert ttl([(TTL_REPORT, 0), (TTL_SET, 100)]) == -1  # t before T sees "never"
    assert ttl([(TTL_REPORT, 0)]) == 100
    clock.advance(30)
    assert ttl([(TTL_SET, 10), (TTL_REPORT, 0)]) == 10
    item = store.meta_get(b"k", [(TTL_RECACHE, 30)], vivify=False, bump=True, touched=False, binary=False,
                          new_cas=None)
    assert item is not None and item.won  # 10 s left is below 30: this client recaches
    vivified = store.meta_get(b"new", [(TTL_VIVIFY, 50), (TTL_REPORT, 0)], vivify=True, bump=True,
                              touched=False, binary=False, new_cas=None)
    assert vivified is not None and vivified.won and vivified.ttl == 50


# -- the coarse clock ------------------------------------------------------------------------------


def test_operations_read_the_clock_as_of_the_last_tick() -> None:
    now = [1000.0]
    clock = Clock(source=lambda: now[0], wall=lambda: 1_700_000_000.0)
    store = new_store(clock=clock)
    assert clock.current == 62
    store.store(SET, b"k", 0, 10, b"x\r\n")  # expires at 72
    now[0] += 20
    assert clock.current == 62 and store.get_one(b"k") is not None  # nobody ticked yet
    assert clock.tick() == 82 and clock.current == 82
    assert store.get_one(b"k") is None


def test_background_passes_tick_themselves() -> None:
    now = [0.0]
    clock = Clock(source=lambda: now[0], wall=lambda: 1_700_000_000.0)
    store = new_store(clock=clock)
    store.store(SET, b"k", 0, 5, b"x\r\n")
    now[0] += 6
    assert store.reclaim_step() == 1 and clock.current == 68
    now[0] += 1
    store.maintain()
    assert clock.current == 69


def test_manual_clock_and_shift_tick(clock: ManualClock) -> None:
    clock.advance(2.5)
    assert clock.current == 64
    clock.shift(100)
    assert clock.current == 164
