"""twemproxy 0.5.0's twelve key hashes (src/hashkit), bit-exact on x86-64.

A key must land on the server twemproxy would pick, so each function reproduces what
twemproxy's C computes, quirks included:

* twemproxy passes keys as ``char *`` and ``char`` is signed on x86-64, so several functions
  see a byte >= 0x80 sign-extended (0xFFFFFFxx); ``_signed`` gives those values.
* "fnv1a_64" is not 64-bit at all: its state is a ``uint32_t`` seeded and multiplied with the
  64-bit constants cut to 32 bits.  "fnv1_64" does keep 64 bits, but only the low 32 are
  returned, and those never depend on the high half, so 32-bit arithmetic gives the same value.
* "crc32" is libmemcached's 15-bit variant; "crc32a" is the real CRC-32.
* "crc16" is the XMODEM table walk with the state never cut to 16 bits.
* "murmur" is MurmurHash2 with the seed ``0xdeadbeef * len`` (MurmurHash3 differs).
* "jenkins" is lookup3's ``hashlittle`` with initval 13.

Everything is computed mod 2**32 (``_M32``).  The functions run on every request, so the
per-byte loops are kept to one or two statements and a C routine from the stdlib does the work
wherever one gives the same value (md5, CRC-32, the 16-bit part of crc16).
"""

from __future__ import annotations

import binascii
import hashlib
import struct
import zlib
from collections.abc import Callable, Iterable

__all__ = [
    "HASHES",
    "HashFn",
    "crc16",
    "crc32",
    "crc32a",
    "fnv1_32",
    "fnv1_64",
    "fnv1a_32",
    "fnv1a_64",
    "hsieh",
    "jenkins",
    "md5",
    "murmur",
    "new_md5",
    "one_at_a_time",
]

HashFn = Callable[[bytes], int]

_M32 = 0xFFFFFFFF

# What ``(uint32_t) c`` gives for a signed ``char c`` holding each byte value.
_SIGNED_BYTE = tuple(b | 0xFFFFFF00 if b & 0x80 else b for b in range(256))


def _signed(key: bytes) -> Iterable[int]:
    """The key's bytes as twemproxy's signed ``char`` reads see them, widened to 32 bits."""
    return key if key.isascii() else map(_SIGNED_BYTE.__getitem__, key)


# Unpackers for 0..64 little-endian words: every memcached key (<= 250 bytes) has one ready.
_WORD_UNPACKERS = tuple(struct.Struct(f"<{n}I").unpack for n in range(65))


def _le32_words(data: bytes) -> tuple[int, ...]:
    """``data`` (a multiple of 4 bytes) as little-endian uint32 words, as x86 reads them."""
    n = len(data) >> 2
    if n < len(_WORD_UNPACKERS):
        return _WORD_UNPACKERS[n](data)
    return struct.unpack(f"<{n}I", data)


def one_at_a_time(key: bytes) -> int:
    """Bob Jenkins' one-at-a-time hash over signed bytes (``h += h << 10`` is ``h *= 1025``)."""
    h = 0
    for c in _signed(key):
        h = (h + c) * 1025 & _M32
        h ^= h >> 6
    h = h * 9 & _M32
    h ^= h >> 11
    return h * 32769 & _M32


try:
    # CPython's own MD5 costs a third of OpenSSL's per call on short keys (no EVP set-up).
    from _md5 import md5 as new_md5  # type: ignore[import-not-found]
except ImportError:  # an interpreter built without it
    new_md5 = hashlib.md5

_LE32 = struct.Struct("<I").unpack_from


def md5(key: bytes) -> int:
    """The first four bytes of the key's MD5 digest, read little-endian."""
    return int(_LE32(new_md5(key).digest())[0])


# crc16's table is the XMODEM one (polynomial 0x1021); crc_hqx of one byte from 0 is its entry.
_CRC16_TABLE = tuple(binascii.crc_hqx(bytes((i,)), 0) for i in range(256))


def crc16(key: bytes) -> int:
    """XMODEM CRC-16 whose 32-bit state keeps the bits shifted past 16.

    The table index only ever uses state bits 8-15, so the low 16 bits follow the standard
    CRC (``binascii.crc_hqx``), and anything shifted in more than four bytes before the end has
    left the 32-bit state.  Only the last four steps need the wide state.
    """
    crc = binascii.crc_hqx(key[:-4], 0)
    table = _CRC16_TABLE
    for b in key[-4:]:
        crc = crc << 8 ^ table[(crc >> 8 ^ b) & 0xFF]
    return crc & _M32


def crc32(key: bytes) -> int:
    """libmemcached's CRC hash: bits 16-30 of the standard CRC-32 (15 bits only)."""
    return zlib.crc32(key) >> 16 & 0x7FFF


def crc32a(key: bytes) -> int:
    """The standard CRC-32 (zlib's)."""
    return zlib.crc32(key)


def _fnv1(name: str, basis: int, prime: int) -> HashFn:
    """An FNV-1 hash (multiply, then xor the byte) over signed bytes, mod 2**32."""
    def fnv1(key: bytes) -> int:
        h = basis
        for c in _signed(key):
            h = h * prime & _M32 ^ c
        return h
    fnv1.__name__ = fnv1.__qualname__ = name
    return fnv1


def _fnv1a(name: str, basis: int, prime: int) -> HashFn:
    """An FNV-1a hash (xor the byte, then multiply) over signed bytes, mod 2**32."""
    def fnv1a(key: bytes) -> int:
        h = basis
        for c in _signed(key):
            h = (h ^ c) * prime & _M32
        return h
    fnv1a.__name__ = fnv1a.__qualname__ = name
    return fnv1a


# "fnv1_64" is 64-bit FNV-1 returning its low 32 bits.  Multiplication and xor never carry
# information from high bits down, so the low halves of the 64-bit offset basis (0x84222325)
# and prime (0x1b3) give the same result on a 32-bit state.  "fnv1a_64", twemproxy's default,
# is coded on a 32-bit state with those same truncated constants to begin with.
fnv1_64 = _fnv1("fnv1_64", 0x84222325, 0x1B3)
fnv1a_64 = _fnv1a("fnv1a_64", 0x84222325, 0x1B3)
fnv1_32 = _fnv1("fnv1_32", 0x811C9DC5, 0x01000193)
fnv1a_32 = _fnv1a("fnv1a_32", 0x811C9DC5, 0x01000193)


def hsieh(key: bytes) -> int:
    """Paul Hsieh's SuperFastHash, seed 0, as twemproxy builds it on x86-64.

    The 16-bit reads are unsigned little-endian; only the odd byte of a 3-byte tail is read
    through a signed ``char``.  An empty key hashes to 0.
    """
    n = len(key)
    if not n:
        return 0
    rem = n & 3
    end = n - rem
    h = 0
    words = _le32_words(key[:end])
    for w in words:
        h = h + (w & 0xFFFF) & _M32
        h = (h << 16 ^ (w >> 16) << 11 ^ h) & _M32
        h = h + (h >> 11) & _M32
    if rem == 3:
        h = h + (key[end] | key[end + 1] << 8) & _M32
        h = (h ^ h << 16 ^ _SIGNED_BYTE[key[end + 2]] << 18) & _M32
        h = h + (h >> 11) & _M32
    elif rem == 2:
        h = h + (key[end] | key[end + 1] << 8) & _M32
        h = (h ^ h << 11) & _M32
        h = h + (h >> 17) & _M32
    elif rem == 1:
        h = h + key[end] & _M32
        h = (h ^ h << 10) & _M32
        h = h + (h >> 1) & _M32
    h = (h ^ h << 3) & _M32
    h = h + (h >> 5) & _M32
    h = (h ^ h << 4) & _M32
    h = h + (h >> 17) & _M32
    h = (h ^ h << 25) & _M32
    return h + (h >> 6) & _M32


_MURMUR_M = 0x5BD1E995


def murmur(key: bytes) -> int:
    """MurmurHash2 (32-bit) with twemproxy's length-dependent seed ``0xdeadbeef * len``."""
    m = _MURMUR_M
    n = len(key) & _M32
    h = 0xDEADBEEF * n & _M32 ^ n
    rem = n & 3
    end = n - rem
    for k in _le32_words(key[:end]):
        k = k * m & _M32
        k = (k ^ k >> 24) * m & _M32
        h = h * m & _M32 ^ k
    if rem:
        h = (h ^ int.from_bytes(key[end:], "little")) * m & _M32
    h ^= h >> 13
    h = h * m & _M32
    return h ^ h >> 15


# lookup3's mix() is two rounds of the same three steps, rotating by these amounts.
_JENKINS_MIX_ROTATIONS = ((4, 6, 8), (16, 19, 4))


def jenkins(key: bytes) -> int:
    """Bob Jenkins' lookup3 ``hashlittle`` with initval 13, over unsigned bytes.

    Every 12-byte block but the last is mixed; the last (1 to 12 bytes, zero-padded) goes
    through the final mix.  An empty key returns the initial state.
    """
    n = len(key)
    a = b = c = 0xDEADBEEF + n + 13 & _M32
    if not n:
        return c
    w = _le32_words(key + bytes(-n % 12))
    last = len(w) - 3
    for i in range(0, last, 3):
        a = a + w[i] & _M32
        b = b + w[i + 1] & _M32
        c = c + w[i + 2] & _M32
        for ra, rb, rc in _JENKINS_MIX_ROTATIONS:
            a = (a - c) & _M32 ^ (c << ra | c >> 32 - ra) & _M32
            c = c + b & _M32
            b = (b - a) & _M32 ^ (a << rb | a >> 32 - rb) & _M32
            a = a + c & _M32
            c = (c - b) & _M32 ^ (b << rc | b >> 32 - rc) & _M32
            b = b + a & _M32
    a = a + w[last] & _M32
    b = b + w[last + 1] & _M32
    c = c + w[last + 2] & _M32
    c = (c ^ b) - ((b << 14 | b >> 18) & _M32) & _M32
    a = (a ^ c) - ((c << 11 | c >> 21) & _M32) & _M32
    b = (b ^ a) - ((a << 25 | a >> 7) & _M32) & _M32
    c = (c ^ b) - ((b << 16 | b >> 16) & _M32) & _M32
    a = (a ^ c) - ((c << 4 | c >> 28) & _M32) & _M32
    b = (b ^ a) - ((a << 14 | a >> 18) & _M32) & _M32
    return (c ^ b) - ((b << 24 | b >> 8) & _M32) & _M32


HASHES: dict[str, HashFn] = {
    "one_at_a_time": one_at_a_time,
    "md5": md5,
    "crc16": crc16,
    "crc32": crc32,
    "crc32a": crc32a,
    "fnv1_64": fnv1_64,
    "fnv1a_64": fnv1a_64,
    "fnv1_32": fnv1_32,
    "fnv1a_32": fnv1a_32,
    "hsieh": hsieh,
    "murmur": murmur,
    "jenkins": jenkins,
}
"""The hash functions by their twemproxy config names (the ``hash:`` key)."""
