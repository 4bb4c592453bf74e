"""Per-worker counters, memcached's ``thread_stats``.

Each worker thread writes only its own (no lock on the request path); ``stats`` sums them.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class ThreadStats:
    """Per-worker counters; written only by the owning worker thread."""

    bytes_read: int = 0
    bytes_written: int = 0
    cmd_flush: int = 0
    cmd_meta: int = 0
    conn_yields: int = 0
    idle_kicks: int = 0
    auth_cmds: int = 0
    auth_errors: int = 0
    response_obj_oom: int = 0

