"""The item record: one immutable ``bytes`` per item, header and value together.

A Python object per item would cost more than the value itself (an instance, a dict or
slots, and an int object per field), so an item is one ``bytes``: a packed header followed
by the value and its trailing ``\\r\\n``.  The hash table maps the key to this record; that
is the whole per-item footprint besides the key and one LRU queue slot.

Header fields (little endian): client flags (u32), exptime (u32, server time, 0 = never),
time of last access/update (u32, server time), CAS (u64), item flags (u8, below).
"""

from __future__ import annotations

import struct

HEADER = struct.Struct("<IIIQB")
HEADER_SIZE = HEADER.size
unpack_header = HEADER.unpack_from
pack_header = HEADER.pack

# Item flags, named after memcached's ITEM_* bits.
FETCHED = 0x01  # read at least once since it was stored
ACTIVE = 0x02  # read again after that: kept (moved to WARM) rather than evicted
STALE = 0x04  # marked stale by a meta invalidation
TOKEN_SENT = 0x08  # a meta client already won the right to recache it
KEY_BINARY = 0x10  # stored through the meta protocol with a base64 (binary) key

# Which LRU segment of its class the item sits in (two bits), memcached's HOT/WARM/COLD/TEMP.
SEG_SHIFT = 5
SEG_MASK = 0x60
COLD, HOT, WARM, TEMP = 0, 1, 2, 3  # COLD is 0: flat mode never rewrites the bits


def value_length(record: bytes) -> int:
    """The value's length without its ``\\r\\n``."""
    return len(record) - HEADER_SIZE - 2


def _object_size(nbytes: int) -> int:
    """What CPython really allocates for a ``bytes`` of ``nbytes`` (header 33 bytes)."""
    size = 33 + nbytes
    if size <= 512:  # pymalloc: 16-byte size classes
        return (size + 15) & ~15
    return (size + 16 + 15) & ~15  # glibc malloc chunk header, 16-byte aligned


def item_cost(key_length: int, record_length: int) -> int:
    """The Python objects one item owns (key and record).  The hash table and the queue
    are counted as a whole, at their real size (``Store.mem_used``)."""
    return _object_size(key_length) + _object_size(record_length)
