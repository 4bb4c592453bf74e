"""The proxy's stats listener: twemproxy's stats thread, as a task of the main loop.

Every ``interval`` the task sums the counters of every worker loop into a snapshot
(twemproxy's aggregation); each connection accepted on the stats address is sent that
snapshot as one JSON object and closed, whatever it sends.  The header (``uptime``,
``timestamp``, connection totals) is taken when the connection is accepted, as nutcracker
does, so only the pool counters can be up to one interval old.

The loops' objects are read from this thread without a lock: every container is first
copied with one C-level call (``list(...)``), which the GIL makes atomic, so a worker
adding a pool, a connection or a queued msg meanwhile cannot break the walk; a counter read
mid-update is at most one request behind, which the next snapshot corrects.

trio-mc's choices (README): the listener binds 127.0.0.1 unless ``-a`` says otherwise
(nutcracker: 0.0.0.0); ``service`` stays ``"nutcracker"`` so that dashboards filtering on it
keep working, and ``version`` is trio-mc's own.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import trio

from trio_mc import __version__
from trio_mc.net.conn import ConnGroup
from trio_mc.proxy.client import ClientSession
from trio_mc.proxy.config import PoolConfig
from trio_mc.proxy.pool import Pools
from trio_mc.proxy.stats import PoolTotals, ServerTotals, nutcracker_pool_order, render

#: nutcracker's defaults: port 22222, aggregation every 30 s.
STATS_PORT = 22222
STATS_INTERVAL = 30000  # ms
#: How long a stats client may take to accept the reply before it is dropped.
SEND_TIMEOUT = 5.0


@dataclass(frozen=True, slots=True)
class StatsConfig:
    """``-a``, ``-s``, ``-i``."""

    host: str = "127.0.0.1"
    port: int = STATS_PORT
    interval: int = STATS_INTERVAL  # ms


class ProxyView(Protocol):
    """What the stats listener reads of the running proxy (its ``ProxyState``)."""

    pools: list[PoolConfig]
    groups: list[ConnGroup]
    listeners: int
    curr_connections: int
    total_connections: int


def aggregate(configs: Sequence[PoolConfig], groups: Sequence[ConnGroup]) -> list[PoolTotals]:
    """Every pool's stats summed over the loops, pools and servers in nutcracker's order."""
    totals = {config.name: PoolTotals(config.name, [ServerTotals(s.name) for s in config.servers])
              for config in sorted(configs, key=lambda c: nutcracker_pool_order(c.name))}
    for group in groups:
        for conn in list(group.conns):
            session = conn.session
            if isinstance(session, ClientSession) and not session.closed \
                    and session.pool.config.name in totals:
                totals[session.pool.config.name].values["client_connections"] += 1
        pools = group.context
        if not isinstance(pools, Pools):
            continue  # no client has reached this loop yet
        for pool in list(pools.by_name.values()):
            # A pool or server a reload removed is no longer reported (nor one a loop has
            # not taken yet: the reload reaches each loop soon after).
            pool_totals = totals.get(pool.config.name)
            if pool_totals is None:
                continue
            pool_totals.add(pool.stats)
            by_name = {server_totals.name: server_totals for server_totals in pool_totals.servers}
            for server in list(pool.servers):
                server_totals = by_name.get(server.config.name)
                if server_totals is None:
                    continue
                server_totals.add(server.stats)
                values = server_totals.values
                server_conns = list(server.conns)
                values["server_connections"] += len(server_conns)
                for server_conn in server_conns:
                    imsg_q, omsg_q = list(server_conn.imsg_q), list(server_conn.omsg_q)
                    values["in_queue"] += len(imsg_q)
                    values["in_queue_bytes"] += sum(m.size for m in imsg_q)
                    values["out_queue"] += len(omsg_q)
                    values["out_queue_bytes"] += sum(m.size for m in omsg_q)
    return list(totals.values())


class StatsServer:
    """The listener and its aggregation task; ``run`` until cancelled."""

    def __init__(self, proxy: ProxyView, config: StatsConfig) -> None:
        self.proxy = proxy
        self.config = config
        self.started = time.time()
        self.source = socket.gethostname()
        self.snapshot: list[PoolTotals] = aggregate(proxy.pools, [])

    def header(self) -> list[tuple[str, str | int]]:
        """nutcracker's top-level fields.  Its connection counts cover every connection
        object: listeners, clients and server connections."""
        now = time.time()
        proxy = self.proxy
        servers = [s for pool in self.snapshot for s in pool.servers]
        curr = proxy.listeners + proxy.curr_connections + sum(
            s.values["server_connections"] for s in servers)
        total = proxy.listeners + proxy.total_connections + sum(s.connections_made for s in servers)
        return [("service", "nutcracker"), ("source", self.source), ("version", __version__),
                ("uptime", int(now - self.started)), ("timestamp", int(now)),
                ("total_connections", total), ("curr_connections", curr)]

    def reply(self) -> bytes:
        return render(self.header(), self.snapshot)

    async def run(self, *, task_status: trio.TaskStatus[tuple[str, int]] = trio.TASK_STATUS_IGNORED) -> None:
        """Bind, report the bound address, then aggregate and answer until cancelled."""
        config = self.config
        infos = await trio.socket.getaddrinfo(config.host, config.port, type=socket.SOCK_STREAM,
                                              flags=socket.AI_PASSIVE)
        family, type_, proto, _, address = infos[0]
        listener = trio.socket.socket(family, type_, proto)
        with listener:
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            await listener.bind(address)
            listener.listen(128)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._aggregate_every)
                task_status.started(listener.getsockname()[:2])
                while True:
                    sock, _ = await listener.accept()
                    nursery.start_soon(self._answer, sock)

    async def _aggregate_every(self) -> None:
        interval = self.config.interval / 1000
        while True:
            self.snapshot = aggregate(self.proxy.pools, self.proxy.groups)
            await trio.sleep(interval)

    async def _answer(self, sock: trio.socket.SocketType) -> None:
        with sock:
            data = memoryview(self.reply())
            with trio.move_on_after(SEND_TIMEOUT):
                try:
                    while data:
                        data = data[await sock.send(data):]
                except OSError:
                    pass
