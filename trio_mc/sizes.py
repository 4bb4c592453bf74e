"""memcached's item size rule and the ``-I`` limit, shared by the parsers, server and store.

The parser needs it to refuse a value that can never fit ``-I`` before reading its data (so
the data is swallowed, not buffered); the store needs it for the ``bytes`` statistic, the
slab classes and the slab class an item is reported in, and to refuse an append that grows
an item past ``-I``.  All must agree with memcached byte for byte.
"""

from __future__ import annotations

#: ``sizeof(item)`` on 64-bit memcached.
ITEM_HEADER_SIZE = 48


def item_total_size(key_length: int, flags: int, value_length: int, use_cas: bool) -> int:
    """memcached's ``ITEM_ntotal``: header, key and NUL, value with ``\\r\\n``, flags, CAS."""
    return (
        ITEM_HEADER_SIZE + key_length + 1 + value_length + (4 if flags else 0) + (8 if use_cas else 0)
    )


def too_large(key_length: int, flags: int, value_length: int, use_cas: bool, item_size_max: int) -> bool:
    """Whether an item can never be stored under ``-I`` (``value_length`` with ``\\r\\n``)."""
    return item_total_size(key_length, flags, value_length, use_cas) > item_size_max
