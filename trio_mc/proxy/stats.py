"""The proxy's counters, named and grouped exactly as twemproxy's stats JSON.

Each worker loop counts into its own :class:`PoolStats` and :class:`ServerStats` (no lock
on the request path); the stats listener sums them.  Gauges (connections, queue lengths)
are read from the live objects when a snapshot is taken.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class ServerStats:
    """One backend's counters in one loop (twemproxy's per-server stats)."""

    server_eof: int = 0
    server_err: int = 0
    server_timedout: int = 0
    server_ejected_at: int = 0  # µs since the epoch of the last ejection; 0: never
    requests: int = 0
    request_bytes: int = 0
    responses: int = 0
    response_bytes: int = 0


@dataclass(slots=True)
class PoolStats:
    """One pool's counters in one loop (twemproxy's per-pool stats)."""

    client_eof: int = 0
    client_err: int = 0
    server_ejects: int = 0
    forward_error: int = 0
    fragments: int = 0  # as in 0.5.0: never incremented
