"""A server pool in one worker loop: its backends and the key-to-server map.

Backend connections belong to the loop that uses them (a Trio socket cannot cross loops),
so each worker builds its own :class:`Pool` per configured pool, the first time one of its
clients needs it; every worker computes the same placement from the same config.
"""

from __future__ import annotations

import trio

from trio_mc.proxy.config import PoolConfig
from trio_mc.proxy.distribution import Continuum
from trio_mc.proxy.server import Server, ServerConn

#: twemproxy forwards ``version`` to the server that holds this key.
VERSION_KEY = b"placeholder"


class Pool:
    """twemproxy's ``server_pool``: backends in config order and their continuum."""

    __slots__ = ("config", "servers", "continuum")

    def __init__(self, config: PoolConfig, nursery: trio.Nursery) -> None:
        self.config = config
        self.servers = [Server(server, nursery, config.server_connections) for server in config.servers]
        self.continuum = Continuum(config.servers, hash=config.hash, distribution=config.distribution,
                                   hash_tag=config.hash_tag)

    def server_for(self, key: bytes) -> Server:
        return self.servers[self.continuum.server_for(key)]

    def conn_for(self, key: bytes) -> ServerConn:
        """The connection a request for ``key`` is queued on."""
        return self.servers[self.continuum.server_for(key)].conn()


class Pools:
    """The pools of one worker loop, by name, built on first use."""

    __slots__ = ("nursery", "by_name")

    def __init__(self, nursery: trio.Nursery) -> None:
        self.nursery = nursery
        self.by_name: dict[str, Pool] = {}

    def get(self, config: PoolConfig) -> Pool:
        pool = self.by_name.get(config.name)
        if pool is None:
            pool = self.by_name[config.name] = Pool(config, self.nursery)
        return pool
