"""trio-mc: a memcached-compatible cache server and a twemproxy-compatible proxy, in Python on Trio.

The package is split by role, as memcached itself is:

* :mod:`trio_mc.protocol` -- sans-IO text protocol: bytes in, commands out; replies to bytes.
* :mod:`trio_mc.store` -- the item store (hash table, LRU, slab accounting, CAS); no sockets, no Trio.
* :mod:`trio_mc.server` -- sockets, worker threads, the per-connection state machine.
* :mod:`trio_mc.proxy` -- the sharding proxy (nutcracker 0.5.0's pools, hashing and replies).
* :mod:`trio_mc.testing` -- the pytest plugin: a running server for an application's tests.
* :mod:`trio_mc.cli` -- memcached's command line.
"""

#: The one place the package's version is written (``pyproject.toml`` reads it from here).
__version__ = "0.1.0"

#: The memcached version trio-mc answers as (``version``, ``stats``), because clients and
#: monitoring tools key features off it.
MEMCACHED_VERSION = "1.6.18"
