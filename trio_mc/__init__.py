"""trio-mc: a memcached-compatible cache server written in Python on Trio.

The package is split by role, as memcached itself is:

* :mod:`trio_mc.protocol` -- sans-IO text protocol: bytes in, commands out; replies to bytes.
* :mod:`trio_mc.store` -- the item store (hash table, LRU, slab accounting, CAS); no sockets, no Trio.
* :mod:`trio_mc.server` -- sockets, worker threads, the per-connection state machine.
* :mod:`trio_mc.cli` -- memcached's command line.
"""

__version__ = "0.1.0"

#: The memcached version trio-mc answers as (``version``, ``stats``), because clients and
#: monitoring tools key features off it.
MEMCACHED_VERSION = "1.6.18"
