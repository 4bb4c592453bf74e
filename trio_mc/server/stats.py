"""``stats`` and its sub-commands, rendered as memcached 1.6.18 renders them.

Names, order and formats are memcached's, because monitoring tools (memcached-tool,
Prometheus exporters, dashboards) parse them.  Values are real where trio-mc has the
concept; where it has none (libevent, NAPI, extstore) memcached's idle value is reported.
"""

from __future__ import annotations

import resource
from dataclasses import fields
from typing import TYPE_CHECKING

import trio

from trio_mc import MEMCACHED_VERSION
from trio_mc.numbers import safe_strtoul
from trio_mc.protocol import replies
from trio_mc.settings import settings_stats
from trio_mc.store.items import COLD, HOT, TEMP, WARM
from trio_mc.store.store import ClassStats, StoreStats

if TYPE_CHECKING:
    from trio_mc.server.state import ServerState

#: memcached's reserved file descriptors, reported as-is and used by the maxconns rule.
RESERVED_FDS = 20

_Stats = list[tuple[str, object]]


def _rusage(seconds: float) -> str:
    whole = int(seconds)
    return f"{whole}.{int((seconds - whole) * 1_000_000):06d}"


def general(state: ServerState) -> _Stats:
    """Plain ``stats``: 92 keys, or 83 with no_lru_crawler and no_lru_maintainer."""
    s = state.settings
    store = state.store
    st = store.stats
    t = state.thread_totals()
    now = store.clock.current
    usage = resource.getrusage(resource.RUSAGE_SELF)
    classes = store.class_stats
    hashpower = s.hashpower_init or 16
    nlisteners = len(state.listeners)

    def total(name: str) -> int:
        return sum(getattr(c, name) for c in classes)

    out: _Stats = [
        ("pid", state.pid),
        ("uptime", now - 60),
        ("time", now + store.clock.process_started),
        ("version", MEMCACHED_VERSION),
        ("libevent", f"trio-{trio.__version__}"),
        ("pointer_size", 64),
        ("rusage_user", _rusage(usage.ru_utime)),
        ("rusage_system", _rusage(usage.ru_stime)),
        ("max_connections", s.maxconns),
        ("curr_connections", state.curr_conns + nlisteners - 1),
        ("total_connections", state.total_conns + nlisteners),
        ("rejected_connections", state.rejected_conns),
        ("connection_structures", state.max_conns_seen + nlisteners),
        ("response_obj_oom", t.response_obj_oom),
        ("response_obj_count", 1),
        ("response_obj_bytes", 65536),
        ("read_buf_count", 8),
        ("read_buf_bytes", 131072),
        ("read_buf_bytes_free", 49152),
        ("read_buf_oom", 0),
        ("reserved_fds", RESERVED_FDS),
        ("cmd_get", store.get_cmds),
        ("cmd_set", total("cmd_set")),
        ("cmd_flush", t.cmd_flush),
        ("cmd_touch", st.touch_cmds),
        ("cmd_meta", t.cmd_meta),
        ("get_hits", total("get_hits")),
        ("get_misses", st.get_misses),
        ("get_expired", st.get_expired),
        ("get_flushed", st.get_flushed),
        ("delete_misses", st.delete_misses),
        ("delete_hits", total("delete_hits")),
        ("incr_misses", st.incr_misses),
        ("incr_hits", total("incr_hits")),
        ("decr_misses", st.decr_misses),
        ("decr_hits", total("decr_hits")),
        ("cas_misses", st.cas_misses),
        ("cas_hits", total("cas_hits")),
        ("cas_badval", total("cas_badval")),
        ("touch_hits", total("touch_hits")),
        ("touch_misses", st.touch_misses),
        ("store_too_large", st.store_too_large),
        ("store_no_memory", st.store_no_memory),
        ("auth_cmds", t.auth_cmds),
        ("auth_errors", t.auth_errors),
    ]
    if s.idle_timeout:
        out.append(("idle_kicks", t.idle_kicks))
    out += [
        ("bytes_read", t.bytes_read),
        ("bytes_written", t.bytes_written),
        ("limit_maxbytes", s.maxbytes),
        ("accepting_conns", 1 if state.accepting else 0),
        ("listen_disabled_num", 0),
        ("time_in_listen_disabled_us", 0),
        ("threads", s.num_threads),
        ("conn_yields", t.conn_yields),
        ("hash_power_level", hashpower),
        ("hash_bytes", 8 << hashpower),
        ("hash_is_expanding", 0),
        ("slab_reassign_rescues", 0),
        ("slab_reassign_chunk_rescues", 0),
        ("slab_reassign_evictions_nomem", 0),
        ("slab_reassign_inline_reclaim", 0),
        ("slab_reassign_busy_items", 0),
        ("slab_reassign_busy_deletes", 0),
        ("slab_reassign_running", 0),
        ("slabs_moved", store.lru.slabs_moved),
    ]
    if s.lru_crawler:
        out += [("lru_crawler_running", 0), ("lru_crawler_starts", 0)]
    if s.lru_maintainer_thread:
        out.append(("lru_maintainer_juggles", 0))
    out += [
        ("malloc_fails", 0),
        ("log_worker_dropped", 0),
        ("log_worker_written", 0),
        ("log_watcher_skipped", 0),
        ("log_watcher_sent", 0),
        ("log_watchers", state.logger.watchers),
        ("unexpected_napi_ids", 0),
        ("round_robin_fallback", 0),
        ("bytes", store.bytes),
        ("curr_items", store.curr_items),
        ("total_items", st.total_items),
        ("slab_global_page_pool", store.lru.global_pool),
        ("expired_unfetched", st.expired_unfetched),
        ("evicted_unfetched", st.evicted_unfetched),
    ]
    if s.lru_maintainer_thread:
        out.append(("evicted_active", 0))
    out += [
        ("evictions", st.evictions),
        ("reclaimed", st.reclaimed),
        ("crawler_reclaimed", st.crawler_reclaimed),
        ("crawler_items_checked", st.crawler_items_checked),
        ("lrutail_reflocked", 0),
    ]
    if s.lru_maintainer_thread:
        out += [("moves_to_cold", total("moves_to_cold")), ("moves_to_warm", total("moves_to_warm")),
                ("moves_within_lru", total("moves_within_lru")), ("direct_reclaims", 0),
                ("lru_bumps_dropped", 0)]
    return out


def items(state: ServerState) -> _Stats:
    """``stats items``: per class holding items (segment counts when the LRU is segmented)."""
    store = state.store
    segmented = state.settings.lru_segmented
    temp = state.settings.temp_lru
    out: _Stats = []
    for clsid, cls in enumerate(store.class_stats):
        if clsid == 0 or not cls.number:
            continue
        p = f"items:{clsid}:"
        counts = store.lru.counts[clsid]
        out.append((p + "number", cls.number))
        if segmented:
            out += [(p + "number_hot", counts[HOT]), (p + "number_warm", counts[WARM]),
                    (p + "number_cold", counts[COLD])]
            if temp:
                out.append((p + "number_temp", counts[TEMP]))
            out += [(p + "age_hot", store.class_age(clsid, HOT)), (p + "age_warm", store.class_age(clsid, WARM))]
        out += [
            (p + "age", store.class_age(clsid, COLD)),
            (p + "mem_requested", cls.mem_requested),
            (p + "evicted", cls.evicted),
            (p + "evicted_nonzero", cls.evicted_nonzero),
            (p + "evicted_time", cls.evicted_time),
            (p + "outofmemory", cls.outofmemory),
            (p + "tailrepairs", 0),
            (p + "reclaimed", cls.reclaimed),
            (p + "expired_unfetched", cls.expired_unfetched),
            (p + "evicted_unfetched", cls.evicted_unfetched),
            (p + "evicted_active", 0),
            (p + "crawler_reclaimed", cls.crawler_reclaimed),
            (p + "crawler_items_checked", cls.crawler_items_checked),
            (p + "lrutail_reflocked", 0),
        ]
        if segmented:
            out += [(p + "moves_to_cold", cls.moves_to_cold), (p + "moves_to_warm", cls.moves_to_warm),
                    (p + "moves_within_lru", cls.moves_within_lru), (p + "direct_reclaims", 0),
                    (p + "hits_to_hot", cls.hits_to[HOT]), (p + "hits_to_warm", cls.hits_to[WARM]),
                    (p + "hits_to_cold", cls.hits_to[COLD]), (p + "hits_to_temp", cls.hits_to[TEMP])]
    return out


def slabs(state: ServerState) -> _Stats:
    """``stats slabs``: per class that has pages, then totals."""
    store = state.store
    lru = store.lru
    out: _Stats = []
    active = 0
    for clsid, cls in enumerate(store.class_stats):
        pages = lru.pages[clsid] if clsid else 0
        if not pages:
            continue
        active += 1
        per_page = store.slabs.per_page[clsid - 1]
        used = lru.chunks[clsid]
        p = f"{clsid}:"
        out += [
            (p + "chunk_size", store.slabs.sizes[clsid - 1]),
            (p + "chunks_per_page", per_page),
            (p + "total_pages", pages),
            (p + "total_chunks", pages * per_page),
            (p + "used_chunks", used),
            (p + "free_chunks", pages * per_page - used),
            (p + "free_chunks_end", 0),
            (p + "get_hits", cls.get_hits),
            (p + "cmd_set", cls.cmd_set),
            (p + "delete_hits", cls.delete_hits),
            (p + "incr_hits", cls.incr_hits),
            (p + "decr_hits", cls.decr_hits),
            (p + "cas_hits", cls.cas_hits),
            (p + "cas_badval", cls.cas_badval),
            (p + "touch_hits", cls.touch_hits),
        ]
    out += [("active_slabs", active), ("total_malloced", lru.malloced)]
    return out


def conns(state: ServerState) -> _Stats:
    """``stats conns``: listeners and clients by descriptor."""
    now = state.store.clock.current
    rows: list[tuple[int, _Stats]] = []
    for listener in state.listeners:
        rows.append((listener.fd, [
            (f"{listener.fd}:addr", listener.addr),
            (f"{listener.fd}:state", "conn_listening"),
            (f"{listener.fd}:secs_since_last_cmd", 0),
        ]))
    for udp in state.udp:
        rows.append((udp.fd, [
            (f"{udp.fd}:addr", udp.addr),
            (f"{udp.fd}:state", "conn_read"),
            (f"{udp.fd}:secs_since_last_cmd", 0),
        ]))
    for conn in list(state.conns.values()):
        fd = conn.fd
        rows.append((fd, [
            (f"{fd}:addr", conn.addr),
            (f"{fd}:listen_addr", conn.listen_addr),
            (f"{fd}:state", conn.state),
            (f"{fd}:secs_since_last_cmd", int(now - conn.last_cmd_time)),
        ]))
    rows.sort(key=lambda row: row[0])
    return [stat for _, block in rows for stat in block]


def reset(state: ServerState) -> None:
    """``stats reset``: zero the counters that memcached zeroes."""
    store = state.store
    with store.lock:
        store.stats = StoreStats(total_items=store.stats.total_items)
        for cls in store.class_stats:
            for name in ClassStats.RESETTABLE:
                setattr(cls, name, 0)
    for stats in state.thread_stats:
        for f in fields(stats):
            setattr(stats, f.name, 0)
    with state.lock:
        state.total_conns = 0
        state.rejected_conns = 0
    state.prefix_stats.clear()


def _settings(state: ServerState) -> _Stats:
    return settings_stats(state.settings, oldest=0)


#: The plain list-of-stats groups, by sub-command (b"" is plain ``stats``); shared by the
#: text and binary protocols.
_GROUPS = {b"": general, b"settings": _settings, b"items": items, b"slabs": slabs, b"conns": conns}


def group(state: ServerState, name: bytes) -> _Stats | None:
    """A stats group by name for the binary protocol (``None`` if there is no such group)."""
    if name == b"reset":
        reset(state)
        return []
    if name.startswith(b"detail"):
        mode = name[6:]
        if mode == b" dump":
            return [("detailed", state.prefix_stats.dump()[: -len(replies.END)].decode("latin-1"))]
        if mode in (b" on", b" off"):
            state.settings.detail_enabled = mode == b" on"
            return []
        return None
    producer = _GROUPS.get(name)
    return producer(state) if producer is not None else None


def render(state: ServerState, args: list[bytes]) -> bytes:
    """The whole reply to ``stats [args]``."""
    sub = args[0] if args else b""
    producer = _GROUPS.get(sub)
    if producer is not None:
        return replies.stat_lines(producer(state))
    if sub == b"sizes":
        if state.sizes_cas_min is None:
            return b"STAT sizes_status disabled\r\n" + replies.END
        hist = state.store.sizes(state.sizes_cas_min)
        return replies.stat_lines((str(size), hist[size]) for size in sorted(hist))
    if sub == b"sizes_enable":
        if not state.settings.use_cas:
            return b"STAT sizes_status error\r\nSTAT sizes_error cas_support_disabled\r\n"
        if state.sizes_cas_min is None:
            state.sizes_cas_min = state.store.next_cas_hint()
        state.settings.track_sizes = True
        return b"STAT sizes_status enabled\r\n"  # (memcached sends no END here)
    if sub == b"sizes_disable":
        state.sizes_cas_min = None
        state.settings.track_sizes = False
        return b"STAT sizes_status disabled\r\n"
    if sub == b"reset":
        reset(state)
        return replies.RESET
    if sub == b"detail":
        if len(args) < 2 or args[1] not in (b"on", b"off", b"dump"):
            return replies.CLIENT_ERROR_STATS_DETAIL
        if args[1] == b"dump":
            return state.prefix_stats.dump()
        state.settings.detail_enabled = args[1] == b"on"
        return replies.OK
    if sub == b"cachedump":
        return _cachedump(state, args)
    return replies.ERROR


def _cachedump(state: ServerState, args: list[bytes]) -> bytes:
    if not state.settings.dump_enabled:
        return replies.CLIENT_ERROR_CACHEDUMP_DISABLED
    if len(args) < 3:
        return replies.CLIENT_ERROR_BAD_LINE
    clsid = safe_strtoul(args[1])
    limit = safe_strtoul(args[2])
    if clsid is None or limit is None:
        return replies.CLIENT_ERROR_FORMAT
    if clsid >= 64:
        return replies.CLIENT_ERROR_ILLEGAL_SLAB
    lines = [replies.cachedump_line(key, nbytes, exp)
             for key, nbytes, exp in state.store.dump(clsid, limit)]
    return b"".join(lines) + replies.END
