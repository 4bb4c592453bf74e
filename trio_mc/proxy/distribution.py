"""Which server of a pool holds a key: twemproxy 0.5.0's distributions, bit-exact.

A pool maps a key to a server in three steps (twemproxy's ``server_pool_idx``): cut the key
to its hash tag, hash it with the pool's function (:mod:`trio_mc.proxy.hashkit`), and let the
distribution turn the hash into a server index.  twemproxy calls the distribution's table the
*continuum* whatever the distribution, and rebuilds it over the live servers only whenever a
server is ejected or comes back; :class:`Continuum` does the same through :meth:`rebuild`.
Server indices are always positions in the pool's configured server list, live or not.

The three distributions:

* ``ketama``: 160 points per server at equal weights, placed by MD5 of ``"<name>-<i>"``, the
  number of points computed in float32 exactly as twemproxy's C does (double or exact
  arithmetic gives other counts for some weights).  A hash goes to the first point at or
  above it, wrapping to the first point.
* ``modula``: the hash modulo the total live weight, each server owning ``weight`` slots in
  config order.
* ``random``: any live server, weights ignored, the key not even hashed.
"""

from __future__ import annotations

import math
import random
import struct
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterable, Sequence
from itertools import accumulate
from typing import Protocol

from trio_mc.proxy.hashkit import HASHES, HashFn, new_md5

__all__ = [
    "DISTRIBUTIONS",
    "KETAMA_DEFAULT_PORT",
    "Continuum",
    "Dispatch",
    "NoLiveServers",
    "PoolServer",
    "hash_tag_key",
    "ketama",
    "ketama_points",
    "modula",
    "random_dispatch",
    "server_name",
]

Dispatch = Callable[[int], int]
"""A built distribution: key hash (uint32) to server index."""

KETAMA_DEFAULT_PORT = 11211
"""A server on this port is named by its host alone (libmemcached's convention)."""

_KETAMA_POINTS_PER_SERVER = 160
_KETAMA_POINTS_PER_HASH = 4  # one MD5 digest gives four 32-bit points
_KETAMA_MAX_HOSTLEN = 272  # twemproxy formats "<name>-<i>" into a 273-byte buffer
_RING_END = 1 << 32  # above every uint32 hash: the wrap-around sentinel


class PoolServer(Protocol):
    """What the distributions need of a configured server."""

    @property
    def name(self) -> str:
        """The server's name as :func:`server_name` gives it (ketama hashes it)."""
        ...

    @property
    def weight(self) -> int:
        """Its configured weight, >= 1."""
        ...


class NoLiveServers(LookupError):
    """Every server of the pool is ejected: no key has a server (twemproxy: ECONNREFUSED)."""


def server_name(host: str, port: str | None, name: str | None) -> str:
    """The name twemproxy gives a server line ``host:port:weight [name]``: what ketama hashes.

    An explicit name wins.  Otherwise the host alone when the port is 11211, or
    ``host:port`` with both exactly as written.  The weight never counts.  A unix socket line
    ``/path:weight`` has no port (``None``); twemproxy then takes the path *and the colon after
    it*, ``"/path:"``, because it extends the address by one character plus an empty port.
    """
    if name:
        return name
    if port is None:
        return host + ":"
    if int(port) == KETAMA_DEFAULT_PORT:
        return host
    return f"{host}:{port}"


def hash_tag_key(key: bytes, tag: bytes) -> bytes:
    """The part of ``key`` the pool hashes under a two-byte ``hash_tag`` such as ``b"{}"``.

    That is what lies between the first ``tag[0]`` and the next ``tag[1]`` after it, provided
    both are there and it is not empty; otherwise the whole key.
    """
    start = key.find(tag[0])
    if start >= 0:
        end = key.find(tag[1], start + 1)
        if end > start + 1:
            return key[start + 1:end]
    return key


_F32 = struct.Struct("f")


def _f32(x: float) -> float:
    """``x`` rounded to IEEE single precision, as a C ``float`` holds it.

    A single rounding of the double result of +, *, / on two floats gives the float result
    (double carries more than twice float's precision), so float arithmetic is emulated by
    rounding after every operation.
    """
    return float(_F32.unpack(_F32.pack(x))[0])


def ketama_points(weight: int, total_weight: int, nlive: int) -> int:
    """How many continuum points a live server gets: a multiple of 4, 160 at equal weights.

    twemproxy's expression is evaluated in float32 step by step; only the final nudge of
    1e-10 is added in double before the cast back to float and the floor.
    """
    pct = _f32(_f32(weight) / _f32(total_weight))
    x = _f32(_f32(_f32(pct * _KETAMA_POINTS_PER_SERVER) / 4) * _f32(nlive))
    return math.floor(_f32(x + 1e-10)) * _KETAMA_POINTS_PER_HASH


_DIGEST_POINTS = struct.Struct("<4I").unpack


def ketama(servers: Sequence[PoolServer], live: Sequence[int]) -> Dispatch:
    """Build the ketama continuum over the ``live`` servers (indices into ``servers``)."""
    total = sum(servers[i].weight for i in live)
    points: list[tuple[int, int]] = []
    for i in live:
        server = servers[i]
        name = server.name.encode()
        digests = ketama_points(server.weight, total, len(live)) // _KETAMA_POINTS_PER_HASH
        for n in range(digests):
            host = b"%s-%d" % (name, n)
            digest = new_md5(host[:_KETAMA_MAX_HOSTLEN]).digest()
            points.extend((value, i) for value in _DIGEST_POINTS(digest))
    # twemproxy sorts by value alone with qsort; glibc's (2.36 in Debian 12, whose nutcracker
    # we match) is a merge sort, so stable: equal values stay in server order, as ordering
    # the (value, index) pairs does.  Equal values are rare (about 1 in 2**32 per pair).
    points.sort()
    values = [value for value, _ in points]
    owners = [i for _, i in points]
    values.append(_RING_END)
    owners.append(owners[0])

    def dispatch(h: int) -> int:
        return owners[bisect_left(values, h)]

    return dispatch


def modula(servers: Sequence[PoolServer], live: Sequence[int]) -> Dispatch:
    """Build modula: slot ``h % total_weight``, each live server owning ``weight`` slots.

    twemproxy expands the slots into a table; a search over the running weight totals finds
    the same owner without a table as large as the weights.
    """
    ends = list(accumulate(servers[i].weight for i in live))
    total = ends[-1]
    owners = list(live)

    def dispatch(h: int) -> int:
        return owners[bisect_right(ends, h % total)]

    return dispatch


def random_dispatch(servers: Sequence[PoolServer], live: Sequence[int]) -> Dispatch:
    """Build random: a uniformly random live server for every call, the hash unused."""
    owners = list(live)
    choice = random.choice

    def dispatch(h: int) -> int:
        return choice(owners)

    return dispatch


DISTRIBUTIONS: dict[str, Callable[[Sequence[PoolServer], Sequence[int]], Dispatch]] = {
    "ketama": ketama,
    "modula": modula,
    "random": random_dispatch,
}
"""The distribution builders by their twemproxy config names (the ``distribution:`` key)."""


def _no_hash(key: bytes) -> int:
    """Stands in for the hash where twemproxy computes none (one server; random)."""
    return 0


def _no_live_servers(h: int) -> int:
    raise NoLiveServers("every server of the pool is ejected")


class Continuum:
    """A pool's key-to-server map: hash tag, hash function and distribution together.

    Built live over all ``servers``; the pool calls :meth:`rebuild` with the live indices
    whenever that set changes.  :meth:`server_for` is the per-request entry point;
    ``dispatch`` (hash to server index) is exposed for callers that hash themselves.
    Both raise :class:`NoLiveServers` while no server is live.
    """

    __slots__ = ("_build", "_hash", "_tag", "dispatch", "live", "only", "servers")

    def __init__(self, servers: Sequence[PoolServer], *, hash: str = "fnv1a_64",
                 distribution: str = "ketama", hash_tag: bytes | None = None) -> None:
        if not servers:
            raise ValueError("a pool needs at least one server")
        if hash not in HASHES:
            raise ValueError(f"unknown hash {hash!r}")
        if distribution not in DISTRIBUTIONS:
            raise ValueError(f"unknown distribution {distribution!r}")
        if hash_tag is not None and len(hash_tag) != 2:
            raise ValueError(f"hash_tag must be two bytes, not {hash_tag!r}")
        self.servers = tuple(servers)
        self._build = DISTRIBUTIONS[distribution]
        # twemproxy skips hashing for one-server pools and for random; the result is the same.
        self._hash: HashFn = (_no_hash if len(servers) == 1 or distribution == "random"
                              else HASHES[hash])
        self._tag = hash_tag
        self.live: tuple[int, ...] = ()
        self.dispatch: Dispatch = _no_live_servers
        #: 0 while the pool has one server and it is live: every key is on it (and callers
        #: that route many keys, a multi-get, need not look each one up).
        self.only: int | None = None
        self.rebuild(range(len(servers)))

    def rebuild(self, live: Iterable[int]) -> None:
        """Rebuild over the servers at indices ``live`` (any order; config order is used)."""
        self.live = tuple(sorted(set(live)))
        if self.live and not 0 <= self.live[0] <= self.live[-1] < len(self.servers):
            raise IndexError(f"live servers {self.live} out of range")
        self.dispatch = self._build(self.servers, self.live) if self.live else _no_live_servers
        self.only = 0 if len(self.servers) == 1 and self.live else None

    def server_for(self, key: bytes) -> int:
        """The index of the server that holds ``key``, as twemproxy's ``server_pool_idx``
        (which skips hashing in a one-server pool)."""
        only = self.only
        if only is not None:
            return only
        if self._tag is not None:
            key = hash_tag_key(key, self._tag)
        return self.dispatch(self._hash(key) if key else 0)
