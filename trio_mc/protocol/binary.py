"""memcached's binary protocol, sans-IO: request frames in, response frames out.

The binary protocol is deprecated since memcached 1.6 (the meta commands replace it), but
1.6.18 still speaks it on any connection whose first byte is the request magic ``0x80``,
and tools such as libmemcached's ``memccapable`` test it.  A frame is a 24-byte header
(magic, opcode, key length, extras length, data type, vbucket/status, body length, opaque,
CAS) followed by extras, key and value.
"""

from __future__ import annotations

import struct

from trio_mc.protocol import commands as cmd

HEADER = struct.Struct(">BBHBBHIIQ")
REQUEST_MAGIC = 0x80
RESPONSE_MAGIC = 0x81

# Opcodes; the quiet variants map to their loud base with ``quiet`` set.
GET, SET, ADD, REPLACE, DELETE, INCREMENT, DECREMENT, QUIT, FLUSH = range(9)
NOOP, VERSION, GETK, APPEND, PREPEND, STAT = 0x0A, 0x0B, 0x0C, 0x0E, 0x0F, 0x10
TOUCH, GAT, GATK = 0x1C, 0x1D, 0x23
QUIET = {
    0x09: GET, 0x0D: GETK, 0x11: SET, 0x12: ADD, 0x13: REPLACE, 0x14: DELETE,
    0x15: INCREMENT, 0x16: DECREMENT, 0x17: QUIT, 0x18: FLUSH, 0x19: APPEND, 0x1A: PREPEND,
    0x1E: GAT, 0x24: GATK,
}

# Response status codes and memcached's texts for them.
SUCCESS, KEY_ENOENT, KEY_EEXISTS, E2BIG, EINVAL, NOT_STORED, DELTA_BADVAL = range(7)
UNKNOWN_COMMAND, ENOMEM = 0x81, 0x82
ERRORS = {
    KEY_ENOENT: b"Not found", KEY_EEXISTS: b"Data exists for key.", E2BIG: b"Too large.",
    EINVAL: b"Invalid arguments", NOT_STORED: b"Not stored.",
    DELTA_BADVAL: b"Non-numeric server-side value for incr or decr",
    UNKNOWN_COMMAND: b"Unknown command", ENOMEM: b"Out of memory",
}


# How a well-formed request of each (loud) opcode looks: the extras lengths it may carry,
# whether it needs a key (None: either way) and whether it may carry a value.
_SHAPES: dict[int, tuple[tuple[int, ...], bool | None, bool]] = {
    GET: ((0,), True, False), GETK: ((0,), True, False),
    GAT: ((4,), True, False), GATK: ((4,), True, False), TOUCH: ((4,), True, True),
    SET: ((8,), True, True), ADD: ((8,), True, True), REPLACE: ((8,), True, True),
    APPEND: ((0,), True, True), PREPEND: ((0,), True, True),
    DELETE: ((0,), True, False), INCREMENT: ((20,), True, False), DECREMENT: ((20,), True, False),
    FLUSH: ((0, 4), False, False), NOOP: ((0,), False, False), VERSION: ((0,), False, False),
    QUIT: ((0,), False, False), STAT: ((0,), None, True),
}
KEY_MAX_LENGTH = 250


def base_opcode(opcode: int) -> int:
    """The loud opcode of a quiet one (the opcode itself otherwise)."""
    return QUIET.get(opcode, opcode)


def known(opcode: int) -> bool:
    return base_opcode(opcode) in _SHAPES


def well_formed(c: cmd.Binary) -> bool:
    """Whether a request of a known opcode has the extras, key and value its opcode
    allows; memcached answers any other frame EINVAL and hangs up."""
    extras, needs_key, has_value = _SHAPES[base_opcode(c.opcode)]
    if len(c.key) > KEY_MAX_LENGTH or len(c.extras) not in extras:
        return False
    if needs_key is not None and bool(c.key) != needs_key:
        return False
    return has_value or not (c.value or c.too_large)


def response(opcode: int, opaque: int, status: int = SUCCESS, *, cas: int = 0, extras: bytes = b"",
             key: bytes = b"", value: bytes | memoryview = b"") -> list[bytes | memoryview]:
    """One response frame, as pieces for the connection's single send."""
    head = HEADER.pack(RESPONSE_MAGIC, opcode, len(key), len(extras), 0, status,
                       len(extras) + len(key) + len(value), opaque, cas)
    return [head + extras + key, value] if value else [head + extras + key]


def error(opcode: int, opaque: int, status: int) -> list[bytes | memoryview]:
    return response(opcode, opaque, status, value=ERRORS[status])


class BinaryParser:
    """Reads request frames from a byte stream (the binary counterpart of the text parser).

    A value that can never fit ``-I`` is not buffered: its frame is answered from the
    header and the body is discarded as it arrives.
    """

    def __init__(self, *, item_size_max: int) -> None:
        self.item_size_max = item_size_max
        self._buf = b""
        self._swallow = 0
        self.closed = False

    @property
    def state(self) -> str:
        if self._swallow:
            return "conn_swallow"
        return "conn_nread" if len(self._buf) >= HEADER.size else "conn_waiting"

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def feed(self, data: bytes) -> list[cmd.Command]:
        out: list[cmd.Command] = []
        if self.closed:
            return out
        if self._swallow:
            taken = min(self._swallow, len(data))
            self._swallow -= taken
            data = data[taken:]
        buf = self._buf + data if self._buf else data
        pos = 0
        while len(buf) - pos >= HEADER.size:
            magic, opcode, keylen, extlen, _, _, bodylen, opaque, cas = HEADER.unpack_from(buf, pos)
            if magic != REQUEST_MAGIC:
                out.append(cmd.Close("bad binary magic"))
                self.closed = True
                break
            vlen = bodylen - keylen - extlen
            if vlen > self.item_size_max + 1024:  # declared too large: do not buffer it
                body_start = pos + HEADER.size
                head = buf[body_start:body_start + extlen + keylen]
                if len(head) < extlen + keylen:
                    break
                out.append(cmd.Binary(opcode, head[extlen:], head[:extlen], b"", cas, opaque, bodylen, True))
                rest = len(buf) - body_start - extlen - keylen
                self._swallow = max(0, vlen - rest)
                pos = len(buf) if self._swallow else body_start + bodylen
                continue
            end = pos + HEADER.size + bodylen
            if len(buf) < end:
                break
            body = buf[pos + HEADER.size:end]
            out.append(cmd.Binary(opcode, body[extlen:extlen + keylen], body[:extlen],
                                  body[extlen + keylen:], cas, opaque, bodylen, False))
            pos = end
        self._buf = buf[pos:] if pos < len(buf) and not self.closed else b""
        return out
