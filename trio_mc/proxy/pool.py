"""A server pool in one worker loop: its backends, the key-to-server map and ejection.

Backend connections belong to the loop that uses them (a Trio socket cannot cross loops),
so each worker builds its own :class:`Pool` per configured pool, the first time one of its
clients needs it; every worker computes the same placement from the same config.

Ejection is twemproxy's: with ``auto_eject_hosts``, a server whose connections fail
``server_failure_limit`` times in a row (a reply resets the count) leaves the continuum
for ``server_retry_timeout`` ms, so its keys go to the other servers; after that the next
request puts it back blindly.  With trio-mc's ``server_probe``, it is put back only once
it answers ``version`` (probed in the background), instead of taking live traffic to find
out.  Time is the loop's Trio clock, so tests drive it with ``MockClock``.

A live reload (:meth:`Pool.reconfigure`) keeps every server whose line is unchanged, with
its connections, counters and ejection state; a server that is gone, or whose
connections the new settings change (``timeout``, ``server_connections``), has its
connections retired: they answer what is queued on them and close.  Clients keep their
connections throughout, and a request routed before the reload is answered by the server
it was routed to.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

import trio

from trio_mc.protocol.requests import VERSION
from trio_mc.proxy.config import PoolConfig, ServerConfig
from trio_mc.proxy.distribution import Continuum, NoLiveServers
from trio_mc.proxy.server import Server, ServerConn, connect
from trio_mc.proxy.stats import PoolStats

#: twemproxy forwards ``version`` to the server that holds this key.
VERSION_KEY = b"placeholder"
#: How long a health probe waits for ``VERSION`` when the pool has no timeout.
PROBE_TIMEOUT = 1.0


class Pool:
    """twemproxy's ``server_pool``: backends in config order, their continuum, ejections."""

    __slots__ = ("config", "servers", "continuum", "stats", "nursery", "ejected", "_probing")

    def __init__(self, config: PoolConfig, nursery: trio.Nursery) -> None:
        self.config = config
        self.nursery = nursery
        self.servers = [self._new_server(server) for server in config.servers]
        self.continuum = _continuum(config)
        self.stats = PoolStats()
        self.ejected: set[Server] = set()
        self._probing: set[Server] = set()

    def _new_server(self, server: ServerConfig) -> Server:
        config = self.config
        return Server(server, self.nursery, config.server_connections, _seconds(config), self)

    def reconfigure(self, config: PoolConfig) -> None:
        """Take a reloaded config of this pool (see the module docstring)."""
        old, self.config = self.config, config
        if config == old:
            return
        same_conns = (config.timeout, config.server_connections) == (old.timeout, old.server_connections)
        kept = {server.config: server for server in self.servers}
        servers = []
        for line in config.servers:
            server = kept.pop(line, None)
            if server is None:
                server = self._new_server(line)
            elif not same_conns:
                server.retire()
                server.max_conns = config.server_connections
                server.timeout = _seconds(config)
            servers.append(server)
        for gone in kept.values():
            gone.retire()
        self.servers = servers
        self.ejected.intersection_update(servers)
        if not config.auto_eject_hosts:
            self.ejected.clear()
        self.continuum = _continuum(config)
        self._rebuild()

    def index_for(self, key: bytes) -> int | None:
        """The index of the server that holds ``key``; ``None`` while every server is
        ejected (the request fails at once, as in twemproxy)."""
        if self.ejected:
            self._retry_due()
        try:
            return self.continuum.server_for(key)
        except NoLiveServers:
            return None

    def only_index(self) -> int | None:
        """The index of the pool's one server while it is live (see ``Continuum.only``)."""
        if self.ejected:
            self._retry_due()
        return self.continuum.only

    def conn_for(self, key: bytes) -> ServerConn | None:
        """The connection a request for ``key`` is queued on (``None``: see index_for)."""
        index = self.index_for(key)
        return None if index is None else self.servers[index].conn()

    # -- health (the Health protocol of .server) -----------------------------------------

    def server_ok(self, server: Server) -> None:
        server.failures = 0

    def server_failed(self, server: Server) -> None:
        config = self.config
        if not config.auto_eject_hosts or server in self.ejected:
            return
        server.failures += 1
        if server.failures < config.server_failure_limit:
            return
        server.failures = 0
        server.next_retry = trio.current_time() + config.server_retry_timeout / 1000
        server.stats.server_ejected_at = time.time_ns() // 1000
        self.stats.server_ejects += 1
        self.ejected.add(server)
        self._rebuild()

    def _retry_due(self) -> None:
        """Servers whose retry time has come rejoin (or, with ``server_probe``, are
        probed first)."""
        now = trio.current_time()
        due = [s for s in self.ejected if s.next_retry <= now and s not in self._probing]
        if not due:
            return
        if self.config.server_probe:
            for server in due:
                self._probing.add(server)
                self.nursery.start_soon(self._probe, server)
            return
        self.ejected.difference_update(due)
        self._rebuild()

    async def _probe(self, server: Server) -> None:
        """``version`` on a fresh connection: rejoin on an answer, else wait again."""
        timeout = server.timeout if server.timeout is not None else PROBE_TIMEOUT
        answered = False
        try:
            with trio.move_on_after(timeout):
                transport = await connect(server.config)
                try:
                    await transport.send(VERSION)
                    answered = (await transport.receive()).startswith(b"VERSION ")
                finally:
                    await transport.aclose()
        except OSError:
            pass
        finally:
            self._probing.discard(server)
        if answered:
            self.ejected.discard(server)
            self._rebuild()
        else:
            server.next_retry = trio.current_time() + self.config.server_retry_timeout / 1000

    def _rebuild(self) -> None:
        self.continuum.rebuild(i for i, s in enumerate(self.servers) if s not in self.ejected)


def _seconds(config: PoolConfig) -> float | None:
    """The pool's ``timeout`` (ms) in seconds; ``None``: wait forever."""
    return config.timeout / 1000 if config.timeout is not None else None


def _continuum(config: PoolConfig) -> Continuum:
    return Continuum(config.servers, hash=config.hash, distribution=config.distribution,
                     hash_tag=config.hash_tag)


class Pools:
    """The pools of one worker loop, by name, built on first use."""

    __slots__ = ("nursery", "by_name")

    def __init__(self, nursery: trio.Nursery) -> None:
        self.nursery = nursery
        self.by_name: dict[str, Pool] = {}

    def get(self, config: PoolConfig) -> Pool:
        """The pool named as ``config``, built or brought up to date with it."""
        pool = self.by_name.get(config.name)
        if pool is None:
            pool = self.by_name[config.name] = Pool(config, self.nursery)
        elif pool.config is not config:
            pool.reconfigure(config)
        return pool

    def reconfigure(self, configs: Iterable[PoolConfig]) -> None:
        """A reload: each pool of this loop takes its new config.  A pool no longer
        configured keeps serving the clients it has (its listener is closed)."""
        for config in configs:
            pool = self.by_name.get(config.name)
            if pool is not None:
                pool.reconfigure(config)
