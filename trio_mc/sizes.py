"""memcached's item size rule, shared by the parser and the store.

The parser needs it to refuse a value that can never fit ``-I`` before reading its data (so
the data is swallowed, not buffered); the store needs it for the ``bytes`` statistic and the
slab class an item is reported in.  Both must agree with memcached byte for byte.
"""

from __future__ import annotations

#: ``sizeof(item)`` on 64-bit memcached.
ITEM_HEADER_SIZE = 48


def item_total_size(key_length: int, flags: int, value_length: int, use_cas: bool) -> int:
    """memcached's ``ITEM_ntotal``: header, key and NUL, value with ``\\r\\n``, flags, CAS."""
    return (
        ITEM_HEADER_SIZE + key_length + 1 + value_length + (4 if flags else 0) + (8 if use_cas else 0)
    )
