"""Per-prefix statistics: ``stats detail on|off|dump`` and ``-D``.

A key's prefix is everything before the first delimiter (``:`` unless ``-D``); keys without
one are not counted.  The dump lists prefixes in memcached's order (its 256 hash buckets by
murmur3 of the prefix, newest first within a bucket) so the output matches byte for byte.
"""

from __future__ import annotations

import threading

_HASH_SIZE = 256
_M32 = 0xFFFFFFFF


def murmur3_32(data: bytes) -> int:
    """MurmurHash3 x86_32 with seed 0, memcached's default hash."""
    h = 0
    n = len(data)
    end = n - n % 4
    for i in range(0, end, 4):
        k = int.from_bytes(data[i:i + 4], "little")
        k = (k * 0xCC9E2D51) & _M32
        k = ((k << 15) | (k >> 17)) & _M32
        k = (k * 0x1B873593) & _M32
        h ^= k
        h = ((h << 13) | (h >> 19)) & _M32
        h = (h * 5 + 0xE6546B64) & _M32
    k = 0
    for shift, byte in enumerate(data[end:]):
        k ^= byte << (8 * shift)
    if k:
        k = (k * 0xCC9E2D51) & _M32
        k = ((k << 15) | (k >> 17)) & _M32
        k = (k * 0x1B873593) & _M32
        h ^= k
    h ^= n
    h ^= h >> 16
    h = (h * 0x85EBCA6B) & _M32
    h ^= h >> 13
    h = (h * 0xC2B2AE35) & _M32
    h ^= h >> 16
    return h


class PrefixStats:
    """Counters per key prefix, shared by all workers (a lock, as memcached's STATS_LOCK)."""

    def __init__(self, delimiter: str = ":") -> None:
        self.delimiter = delimiter.encode()
        self._lock = threading.Lock()
        # prefix -> [gets, hits, sets, deletes]; dict order is creation order.
        self._counts: dict[bytes, list[int]] = {}

    def _find(self, key: bytes) -> list[int] | None:
        cut = key.find(self.delimiter)
        if cut < 0:
            return None
        prefix = key[:cut]
        counts = self._counts.get(prefix)
        if counts is None:
            counts = self._counts[prefix] = [0, 0, 0, 0]
        return counts

    def record_get(self, key: bytes, hit: bool) -> None:
        with self._lock:
            counts = self._find(key)
            if counts is not None:
                counts[0] += 1
                counts[1] += hit

    def record_set(self, key: bytes) -> None:
        with self._lock:
            counts = self._find(key)
            if counts is not None:
                counts[2] += 1

    def record_delete(self, key: bytes) -> None:
        with self._lock:
            counts = self._find(key)
            if counts is not None:
                counts[3] += 1

    def clear(self) -> None:
        with self._lock:
            self._counts.clear()

    def dump(self) -> bytes:
        """``PREFIX <p> get <n> hit <n> set <n> del <n>`` lines, then ``END``."""
        with self._lock:
            buckets: list[list[bytes]] = [[] for _ in range(_HASH_SIZE)]
            for prefix in self._counts:
                buckets[murmur3_32(prefix) % _HASH_SIZE].insert(0, prefix)
            lines = []
            for bucket in buckets:
                for prefix in bucket:
                    gets, hits, sets, deletes = self._counts[prefix]
                    lines.append(b"PREFIX %b get %d hit %d set %d del %d\r\n" % (prefix, gets, hits, sets, deletes))
        return b"".join(lines) + b"END\r\n"
