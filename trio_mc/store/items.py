"""The item record: one immutable ``bytes`` per item, header, reply suffix and value together.

A Python object per item would cost more than the value itself (an instance, a dict or
slots, and an int object per field), so an item is one ``bytes``::

    header | clsid | suffix length | suffix | value "\\r\\n"
                                    `------ the tail (TAIL_AT) ----'

The hash table maps the key to this record; that is the whole per-item footprint besides
the key and one LRU queue slot.

Header fields (little endian): client flags (u32), exptime (u32, server time, 0 = never),
time of last access/update (u32, server time), CAS (u64), item flags (u8, below).  A read
or touch rewrites only these (``pack_header(...) + record[HEADER_SIZE:]``).  The rest is
fixed when the record is built (:func:`pack_record`): the slab class (u8), so a hit finds its
class by one index instead of recomputing memcached's item size; and the reply suffix, what
follows ``VALUE <key>`` in a text get reply (memcached's items once carried it too), rendered by
the server's injected function, so a get hit is the tail as it is.  The suffix depends only on
the flags and the value length, which a record never changes.
"""

from __future__ import annotations

import struct

HEADER = struct.Struct("<IIIQB")
HEADER_SIZE = HEADER.size
unpack_header = HEADER.unpack_from
IFLAGS_AT = HEADER_SIZE - 1  # the item flags byte
CLSID_AT = HEADER_SIZE  # the slab class byte
SUFFIX_LENGTH_AT = HEADER_SIZE + 1  # the suffix length byte
TAIL_AT = HEADER_SIZE + 2  # the suffix, then the value
_pack_header = HEADER.pack
_pack_record = struct.Struct("<IIIQBBB").pack

# Item flags, named after memcached's ITEM_* bits.
FETCHED = 0x01  # read at least once since it was stored
ACTIVE = 0x02  # read again after that: kept (moved to WARM) rather than evicted
STALE = 0x04  # marked stale by a meta invalidation
TOKEN_SENT = 0x08  # a meta client already won the right to recache it
KEY_BINARY = 0x10  # stored through the meta protocol with a base64 (binary) key
#: Derived, not memcached's: the exptime is 0.  Kept by every header write, so the hit
#: path reads one byte (``record[IFLAGS_AT] & HOT_HIT == HOT_HIT``) instead of unpacking.
NO_EXPIRY = 0x80
#: A read that needs no bookkeeping beyond the counters: read before (ACTIVE), never expires.
HOT_HIT = ACTIVE | NO_EXPIRY

# Which LRU segment of its class the item sits in (two bits), memcached's HOT/WARM/COLD/TEMP.
SEG_SHIFT = 5
SEG_MASK = 0x60
COLD, HOT, WARM, TEMP = 0, 1, 2, 3  # COLD is 0: flat mode never rewrites the bits
#: The segment of an item by its item flags (``SEGMENT[iflags]``): a table, as cheap as the
#: bit arithmetic it stands for on the hit path.
SEGMENT = bytes((f & SEG_MASK) >> SEG_SHIFT for f in range(256))


def pack_header(flags: int, exptime: int, time: int, cas: int, iflags: int) -> bytes:
    """The header of a record (its item flags' NO_EXPIRY bit follows ``exptime``)."""
    return _pack_header(flags, exptime, time, cas, (iflags & ~NO_EXPIRY) | (0 if exptime else NO_EXPIRY))


def pack_record(flags: int, exptime: int, time: int, cas: int, iflags: int, clsid: int,
                suffix_length: int) -> bytes:
    """Header, slab class and suffix length, packed in one call when a record is built."""
    return _pack_record(flags, exptime, time, cas, (iflags & ~NO_EXPIRY) | (0 if exptime else NO_EXPIRY),
                        clsid, suffix_length)


def with_segment(iflags: int, seg: int) -> int:
    """Item flags moved to another segment."""
    return (iflags & ~SEG_MASK) | (seg << SEG_SHIFT)


def value_at(record: bytes) -> int:
    """Where the value starts (after the suffix)."""
    return TAIL_AT + record[SUFFIX_LENGTH_AT]


def nbytes(record: bytes) -> int:
    """The value's length with its ``\\r\\n`` (memcached's ``it->nbytes``)."""
    return len(record) - TAIL_AT - record[SUFFIX_LENGTH_AT]


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
