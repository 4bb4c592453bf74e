"""The proxy's counters, named and grouped exactly as twemproxy's stats JSON.

Each worker loop counts into its own :class:`PoolStats` and :class:`ServerStats` (no lock
on the request path); the stats listener sums them into :class:`PoolTotals` and
:class:`ServerTotals` every interval, with the gauges (connections, queue lengths) read
from the live objects at that moment, and renders them with :func:`render`.

The JSON text is nutcracker's byte for byte: ``", "`` between fields, ``","`` between two
servers and two pools, ``": {"`` after a pool or server name, and one ``"\\n"`` at the end,
because some collectors split or match on that text rather than parse it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field

#: A pool's fields in nutcracker's order.
POOL_FIELDS = ("client_eof", "client_err", "client_connections", "server_ejects", "forward_error",
               "fragments")
#: A server's fields in nutcracker's order.
SERVER_FIELDS = ("server_eof", "server_err", "server_timedout", "server_connections",
                 "server_ejected_at", "requests", "request_bytes", "responses", "response_bytes",
                 "in_queue", "in_queue_bytes", "out_queue", "out_queue_bytes")


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


#: ServerStats' counters, summed over loops (``server_ejected_at`` takes the latest).
_SERVER_COUNTERS = ("server_eof", "server_err", "server_timedout", "requests", "request_bytes",
                    "responses", "response_bytes")
_POOL_COUNTERS = ("client_eof", "client_err", "server_ejects", "forward_error", "fragments")


@dataclass(slots=True)
class ServerTotals:
    """One backend's stats summed over every loop."""

    name: str
    values: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SERVER_FIELDS, 0))

    def add(self, stats: ServerStats) -> None:
        values = self.values
        for name in _SERVER_COUNTERS:
            values[name] += getattr(stats, name)
        # Each loop ejects on its own failures: the latest ejection is the server's.
        values["server_ejected_at"] = max(values["server_ejected_at"], stats.server_ejected_at)

    @property
    def connections_made(self) -> int:
        """Connections this server ever had: the open ones plus every one closed (each
        close is an eof, an error or a timeout, a failed connect included)."""
        v = self.values
        return v["server_connections"] + v["server_eof"] + v["server_err"] + v["server_timedout"]


@dataclass(slots=True)
class PoolTotals:
    """One pool's stats summed over every loop, and its servers' in nutcracker's order."""

    name: str
    servers: list[ServerTotals]
    values: dict[str, int] = field(default_factory=lambda: dict.fromkeys(POOL_FIELDS, 0))

    def add(self, stats: PoolStats) -> None:
        values = self.values
        for name in _POOL_COUNTERS:
            values[name] += getattr(stats, name)


def nutcracker_pool_order(name: str) -> tuple[int, bytes]:
    """nutcracker lists pools as it sorts them to find duplicate names: shorter names
    first, then bytewise (observed: pools ``alpha, zz, beta, b, aaaa`` are listed
    ``b, zz, aaaa, beta, alpha``); the config keeps servers in the same order."""
    raw = name.encode()
    return len(raw), raw


def _string(text: str) -> str:
    """A JSON string.  nutcracker copies names unescaped; a quote or backslash in a name
    would break its JSON, trio-mc's stays valid (identical for every other name)."""
    return json.dumps(text, ensure_ascii=False)


def _members(pairs: Sequence[tuple[str, str | int]]) -> str:
    return ", ".join(f"{_string(k)}:{_string(v) if isinstance(v, str) else v}" for k, v in pairs)


def render(header: Sequence[tuple[str, str | int]], pools: Sequence[PoolTotals]) -> bytes:
    """The stats listener's reply: one JSON object and a newline, in nutcracker's text."""
    rendered = []
    for pool in pools:
        servers = ",".join(f"{_string(s.name)}: {{{_members(list(s.values.items()))}}}"
                           for s in pool.servers)
        body = _members(list(pool.values.items()))
        rendered.append(f"{_string(pool.name)}: {{{body}, {servers}}}" if servers
                        else f"{_string(pool.name)}: {{{body}}}")
    text = _members(header)
    if rendered:
        text += ", " + ",".join(rendered)
    return ("{" + text + "}\n").encode()
