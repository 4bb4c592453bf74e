"""memcached's base64 for meta-protocol binary keys (``b`` flag).

The decoder is memcached's, not the stdlib's: bytes outside the alphabet are skipped, the
remaining count must be a multiple of four, decoding stops after the first padded block, and
an empty result counts as a failure (memcached returns length 0 for both).
"""

from __future__ import annotations

import base64

_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
_VALUE = {c: i for i, c in enumerate(_ALPHABET)}
_VALUE[ord("=")] = 0
_SKIP = bytes(c for c in range(256) if c not in _VALUE)


def decode(src: bytes) -> bytes | None:
    """Decode like memcached's ``base64_decode``; ``None`` where it would return 0."""
    data = src.translate(None, _SKIP)
    if not data or len(data) % 4:
        return None
    out = bytearray()
    for i in range(0, len(data), 4):
        block = data[i:i + 4]
        a, b, c, d = (_VALUE[x] for x in block)
        out += bytes(((a << 2 | b >> 4) & 0xFF, (b << 4 | c >> 2) & 0xFF, (c << 6 | d) & 0xFF))
        pad = block.count(b"=")
        if pad:
            if pad > 2:
                return None
            del out[-pad:]
            break
    return bytes(out) or None


def encode(data: bytes) -> bytes:
    return base64.b64encode(data)
