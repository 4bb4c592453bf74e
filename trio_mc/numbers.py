"""Number parsing with the exact semantics of memcached's ``safe_strto*`` helpers.

memcached parses numeric tokens with C's ``strtol``/``strtoul`` and then stores them into
narrower integers, so it accepts leading white space, a sign, and silently truncates to 32
bits.  Clients (and memcached's own tests) depend on these quirks, so they are reproduced
here rather than using Python's more permissive ``int()`` (which would accept ``1_000``).
"""

from __future__ import annotations

import re

# strtol: optional leading white space, optional sign, at least one digit, then either the
# end of the string (a NUL in C) or a white-space character; safe_strto* reject any other
# trailing byte.  Stored values end in "\r\n", so incr/decr read "1 2" as 1, as memcached does.
_NUMBER = re.compile(rb"[ \t\n\v\f\r]*([+-]?)([0-9]+)(?:[ \t\n\v\f\r\x00]|\Z)")

_U64 = 1 << 64
_I64_MAX = (1 << 63) - 1


def _parse(token: bytes) -> tuple[bool, int] | None:
    """Return ``(negative, magnitude)`` or ``None`` when strtol would see no number."""
    m = _NUMBER.match(token)
    if m is None:
        return None
    return m.group(1) == b"-", int(m.group(2))


def safe_strtoull(token: bytes) -> int | None:
    """Unsigned 64-bit value, or ``None`` (memcached's ``safe_strtoull``)."""
    if token.isdigit():
        value = int(token)
        return value if value < _U64 else None
    parsed = _parse(token)
    if parsed is None:
        return None
    negative, magnitude = parsed
    if magnitude >= _U64:
        return None  # ERANGE
    value = (-magnitude) % _U64 if negative else magnitude
    if value > _I64_MAX and b"-" in token:
        # memcached looks for a '-' anywhere in the string (not only in the number) when
        # the value would be negative as a signed number: "-5" wraps and is refused, and
        # so is "9223372036854775808 -5".
        return None
    return value


def safe_strtoul(token: bytes) -> int | None:
    """``safe_strtoul``: parsed as unsigned long, stored into a uint32 (truncated)."""
    value = safe_strtoull(token)
    return None if value is None else value & 0xFFFFFFFF


def safe_strtoll(token: bytes) -> int | None:
    """Signed 64-bit value, or ``None`` on overflow or garbage."""
    if token.isdigit():
        value = int(token)
        return value if value <= _I64_MAX else None
    parsed = _parse(token)
    if parsed is None:
        return None
    negative, magnitude = parsed
    if negative:
        return -magnitude if magnitude <= _I64_MAX + 1 else None
    return magnitude if magnitude <= _I64_MAX else None


def safe_strtol(token: bytes) -> int | None:
    """``safe_strtol``: parsed as a 64-bit long, stored into an int32 (truncated)."""
    value = safe_strtoll(token)
    if value is None:
        return None
    value &= 0xFFFFFFFF
    return value - (1 << 32) if value & 0x80000000 else value
