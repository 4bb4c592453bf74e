"""Request bytes a proxy sends to a memcached backend (text protocol, sans-IO).

The mirror of :mod:`trio_mc.protocol.replies`: every request line trio-mc writes is built
here.  Writers take values already checked by :class:`~trio_mc.protocol.parser.Parser` (keys
of 1-250 bytes without spaces or control characters) and do not check them again.  A data
block is returned as a separate piece, never copied into the line: callers send the list
(``b"".join`` or one ``send`` per piece).

:func:`write` is the parser's inverse: it turns a parsed command back into the bytes that
parse to it, which is what a proxy forwards when it does not keep the client's raw bytes.
"""

from __future__ import annotations

from collections.abc import Sequence

from trio_mc import modes
from trio_mc.protocol import commands as cmd
from trio_mc.protocol.base64 import encode as b64encode

VERSION = b"version\r\n"
MN = b"mn\r\n"

_CRLF = b"\r\n"
_NOREPLY = b" noreply\r\n"

Piece = bytes | memoryview
_META_NAMES = {cmd.MetaGet: b"mg", cmd.MetaDelete: b"md", cmd.MetaArith: b"ma"}


def retrieval(keys: Sequence[bytes], with_cas: bool = False, exptime: int | None = None) -> bytes:
    """``get``/``gets`` (``exptime`` None) or ``gat``/``gats`` for these keys.

    This is also a multi-get fragment: the keys of one backend, in the client's order.
    """
    name = b"gets" if with_cas else b"get"
    if exptime is not None:
        name = b"gats %d" % exptime if with_cas else b"gat %d" % exptime
    return b"%b %b\r\n" % (name, b" ".join(keys))


def storage_line(mode: int, key: bytes, flags: int, exptime: int, nbytes: int,
                 cas: int = 0, noreply: bool = False) -> bytes:
    """The command line of set/add/replace/append/prepend/cas (``cas`` only for CAS)."""
    line = b"%b %b %d %d %d" % (modes.NAMES[mode], key, flags, exptime, nbytes)
    if mode == modes.CAS:
        line += b" %d" % cas
    return line + (_NOREPLY if noreply else _CRLF)


def storage(mode: int, key: bytes, flags: int, exptime: int, value: Piece,
            cas: int = 0, noreply: bool = False) -> list[Piece]:
    """A storage command and its data block (``value`` without its ``\\r\\n``)."""
    return [storage_line(mode, key, flags, exptime, len(value), cas, noreply), value, _CRLF]


def arith(key: bytes, incr: bool, delta: int, noreply: bool = False) -> bytes:
    """``incr``/``decr``."""
    return b"%b %b %d%b" % (b"incr" if incr else b"decr", key, delta,
                            _NOREPLY if noreply else _CRLF)


def delete(key: bytes, noreply: bool = False) -> bytes:
    return b"delete %b%b" % (key, _NOREPLY if noreply else _CRLF)


def touch(key: bytes, exptime: int, noreply: bool = False) -> bytes:
    return b"touch %b %d%b" % (key, exptime, _NOREPLY if noreply else _CRLF)


def meta_line(name: bytes, key: bytes, tokens: Sequence[bytes]) -> bytes:
    """``<name> <key> <tokens>*``: a meta command line as it goes on the wire (``key`` in
    base64 when ``b`` is among the tokens; for ``ms`` the first token is the datalen)."""
    return b" ".join([name, key, *tokens]) + _CRLF


def meta(name: bytes, key: bytes, flags: Sequence[bytes] = (), value: Piece | None = None,
         ) -> list[Piece]:
    """A meta command (``mg``, ``ms``, ``md``, ``ma``, ``me``) with its flag tokens.  For
    ``ms``, ``value`` is the data without its ``\\r\\n``; its length becomes the datalen
    token.  ``mn`` is :data:`MN`."""
    if value is None:
        return [meta_line(name, key, flags)]
    return [meta_line(name, key, [b"%d" % len(value), *flags]), value, _CRLF]


def write(command: cmd.Command) -> list[Piece]:
    """The bytes that :class:`~trio_mc.protocol.parser.Parser` parses back to ``command``.

    For the commands a proxy forwards by key: Get, Store, Arith, Delete, Touch, Version and
    Meta (mg/ms/md/ma).  A stored data block is passed on as the command holds it
    (``\\r\\n`` included), not copied.
    """
    match command:
        case bytes():
            return [retrieval([command])]
        case cmd.Get(keys, with_cas, exptime):
            return [retrieval(keys, with_cas, exptime)]
        case cmd.Store(mode, key, flags, exptime, data, cas, noreply):
            return [storage_line(mode, key, flags, exptime, len(data) - 2, cas, noreply), data]
        case cmd.Arith(key, incr, delta, noreply):
            return [arith(key, incr, delta, noreply)]
        case cmd.Delete(key, noreply):
            return [delete(key, noreply)]
        case cmd.Touch(key, exptime, noreply):
            return [touch(key, exptime, noreply)]
        case cmd.Version():
            return [VERSION]
        case cmd.MetaSet(key, tokens, binary, data=data):
            wire_key = b64encode(key) if binary else key
            return [meta_line(b"ms", wire_key, [b"%d" % (len(data) - 2), *tokens]), data]
        case cmd.MetaGet() | cmd.MetaDelete() | cmd.MetaArith():
            wire_key = b64encode(command.key) if command.binary else command.key
            return [meta_line(_META_NAMES[command.__class__], wire_key, command.tokens)]
    raise ValueError(f"not a forwardable command: {command!r}")
