"""Server settings: memcached's ``struct settings``, filled from its command line.

Field names follow memcached's own so that ``stats settings`` (rendered from this object)
and the command-line flags map one to one.  Defaults are memcached 1.6.18's, except:

* ``inter`` (``-l``) defaults to 127.0.0.1, not all interfaces: an open cache on every
  interface is a known exposure; ``-l 0.0.0.0`` opens it deliberately.
* ``num_threads`` (``-t``) defaults to 1: under CPython's GIL extra worker loops add no
  throughput and cost CPU per request (see README, "Worker threads").
"""

from __future__ import annotations

from dataclasses import dataclass, field

from trio_mc.store.slabs import SLAB_PAGE_SIZE

DEFAULT_PORT = 11211


@dataclass(slots=True)
class Settings:
    port: int = DEFAULT_PORT
    udpport: int = 0
    inter: list[str] = field(default_factory=lambda: ["127.0.0.1"])
    socketpath: str | None = None
    access: int = 0o700
    maxbytes: int = 64 * 1024 * 1024
    evict_to_free: bool = True  # -M turns it off
    maxconns: int = 1024
    num_threads: int = 1
    item_size_max: int = 1024 * 1024
    reqs_per_event: int = 20
    binding_protocol: str = "auto-negotiate"
    backlog: int = 1024
    use_cas: bool = True
    shutdown_command: bool = False
    flush_enabled: bool = True
    dump_enabled: bool = True
    watch_enabled: bool = True
    verbose: int = 0
    username: str | None = None
    pidfile: str | None = None
    daemonize: bool = False
    factor: float = 1.25
    chunk_size: int = 48
    prefix_delimiter: str = ":"
    detail_enabled: bool = False
    maxconns_fast: bool = True
    hashpower_init: int = 0
    slab_reassign: bool = True
    slab_automove: int = 1
    slab_automove_ratio: float = 0.8
    slab_automove_window: int = 30
    slab_chunk_size_max: int = SLAB_PAGE_SIZE // 2
    lru_crawler: bool = True
    lru_crawler_sleep: int = 100
    lru_crawler_tocrawl: int = 0
    lru_maintainer_thread: bool = True
    lru_segmented: bool = True
    tail_repair_time: int = 0
    hash_algorithm: str = "murmur3"
    hot_lru_pct: int = 20
    warm_lru_pct: int = 40
    hot_max_factor: float = 0.2
    warm_max_factor: float = 2.0
    temp_lru: bool = False
    temporary_ttl: int = 61
    idle_timeout: int = 0
    logger_watcher_buf_size: int = 256 * 1024
    logger_buf_size: int = 64 * 1024
    read_buf_mem_limit: int = 0
    track_sizes: bool = False
    #: memcached's debug-build commands (``debugtime``), on with ``-o relaxed_privileges``.
    debug_commands: bool = False
    auth_file: str | None = None  # -Y: ASCII authentication
    #: ``-B binary``: only the binary protocol is spoken.
    binary_only: bool = False


#: What one pending response costs against ``read_buf_mem_limit`` (memcached's response
#: object with its small write buffer, rounded up).
RESPONSE_OBJECT_BYTES = 1024


def response_budget(s: Settings) -> int:
    """Responses one batch may hold under ``-o read_buf_mem_limit`` (0: unlimited).

    memcached splits the limit between its worker threads and takes one response object
    per reply (one per key of a multi-get); past the budget it refuses the request.
    """
    if not s.read_buf_mem_limit:
        return 0
    return max(1, s.read_buf_mem_limit // max(1, s.num_threads) // RESPONSE_OBJECT_BYTES)


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


def settings_stats(s: Settings, *, oldest: int) -> list[tuple[str, object]]:
    """``stats settings`` in memcached 1.6.18's order (76 keys).

    trio-mc has no extstore, TLS or NAPI: those keys report memcached's disabled defaults so
    tools that parse the full list keep working.
    """
    return [
        ("maxbytes", s.maxbytes),
        ("maxconns", s.maxconns),
        ("tcpport", s.port),
        ("udpport", s.udpport),
        ("inter", ",".join(s.inter) if s.inter else "NULL"),
        ("verbosity", s.verbose),
        ("oldest", oldest),
        ("evictions", "on" if s.evict_to_free else "off"),
        ("domain_socket", s.socketpath or "NULL"),
        ("umask", f"{s.access:o}"),
        ("shutdown_command", _yes(s.shutdown_command)),
        ("growth_factor", f"{s.factor:.2f}"),
        ("chunk_size", s.chunk_size),
        ("num_threads", s.num_threads),
        ("num_threads_per_udp", s.num_threads),
        ("stat_key_prefix", s.prefix_delimiter),
        ("detail_enabled", _yes(s.detail_enabled)),
        ("reqs_per_event", s.reqs_per_event),
        ("cas_enabled", _yes(s.use_cas)),
        ("tcp_backlog", s.backlog),
        ("binding_protocol", s.binding_protocol),
        ("auth_enabled_sasl", "no"),
        ("auth_enabled_ascii", s.auth_file or "no"),
        ("item_size_max", s.item_size_max),
        ("maxconns_fast", _yes(s.maxconns_fast)),
        ("hashpower_init", s.hashpower_init),
        ("slab_reassign", _yes(s.slab_reassign)),
        ("slab_automove", s.slab_automove),
        ("slab_automove_ratio", f"{s.slab_automove_ratio:.2f}"),
        ("slab_automove_window", s.slab_automove_window),
        ("slab_chunk_max", s.slab_chunk_size_max),
        ("lru_crawler", _yes(s.lru_crawler)),
        ("lru_crawler_sleep", s.lru_crawler_sleep),
        ("lru_crawler_tocrawl", s.lru_crawler_tocrawl),
        ("tail_repair_time", s.tail_repair_time),
        ("flush_enabled", _yes(s.flush_enabled)),
        ("dump_enabled", _yes(s.dump_enabled)),
        ("hash_algorithm", s.hash_algorithm),
        ("lru_maintainer_thread", _yes(s.lru_maintainer_thread)),
        ("lru_segmented", _yes(s.lru_segmented)),
        ("hot_lru_pct", s.hot_lru_pct),
        ("warm_lru_pct", s.warm_lru_pct),
        ("hot_max_factor", f"{s.hot_max_factor:.2f}"),
        ("warm_max_factor", f"{s.warm_max_factor:.2f}"),
        ("temp_lru", _yes(s.temp_lru)),
        ("temporary_ttl", s.temporary_ttl),
        ("idle_timeout", s.idle_timeout),
        ("watcher_logbuf_size", s.logger_watcher_buf_size),
        ("worker_logbuf_size", s.logger_buf_size),
        ("read_buf_mem_limit", s.read_buf_mem_limit),
        ("track_sizes", _yes(s.track_sizes)),
        ("inline_ascii_response", "no"),
        ("ext_item_size", 512),
        ("ext_item_age", 4294967295),
        ("ext_low_ttl", 0),
        ("ext_recache_rate", 2000),
        ("ext_wbuf_size", 4194304),
        ("ext_compact_under", 0),
        ("ext_drop_under", 0),
        ("ext_max_sleep", 1000000),
        ("ext_max_frag", "0.80"),
        ("slab_automove_freeratio", "0.010"),
        ("ext_drop_unread", "no"),
        ("ssl_enabled", "no"),
        ("ssl_chain_cert", "(null)"),
        ("ssl_key", "(null)"),
        ("ssl_verify_mode", 0),
        ("ssl_keyformat", 1),
        ("ssl_ciphers", "NULL"),
        ("ssl_ca_cert", "NULL"),
        ("ssl_wbuf_size", 16384),
        ("ssl_session_cache", "no"),
        ("ssl_kernel_tls", "no"),
        ("ssl_min_version", "tlsv1.2"),
        ("num_napi_ids", "(null)"),
        ("memory_file", "(null)"),
    ]
