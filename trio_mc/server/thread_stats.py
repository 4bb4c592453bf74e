"""Per-worker counters, memcached's ``thread_stats``.

Each worker thread writes only its own (no lock on the request path); ``stats`` sums them.
"""

from __future__ import annotations

from dataclasses import dataclass

from trio_mc.net.conn import ConnCounters


@dataclass(slots=True)
class ThreadStats(ConnCounters):
    """Per-worker counters (the connection layer's and the commands'); written only by the
    owning worker thread."""

    cmd_flush: int = 0
    cmd_meta: int = 0
    auth_cmds: int = 0
    auth_errors: int = 0

