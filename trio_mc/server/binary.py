"""The binary protocol's requests: the same store calls as the text commands.

Frames are parsed and checked in :mod:`trio_mc.protocol.binary` (which also builds the
response frames); this module decides what each well-formed request does.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

from trio_mc import MEMCACHED_VERSION
from trio_mc.modes import ADD, APPEND, CAS, PREPEND, REPLACE, SET
from trio_mc.net.conn import CLOSE, QUIT, Effect, Out
from trio_mc.protocol import binary as bp
from trio_mc.protocol import commands as cmd
from trio_mc.server import stats
from trio_mc.server.session import Session
from trio_mc.sizes import too_large
from trio_mc.store.results import TTL_VIVIFY, DeleteResult, DeltaResult, StoreResult

_U32 = struct.Struct(">I")
_STORE_EXTRAS = struct.Struct(">II")
_ARITH_EXTRAS = struct.Struct(">QQI")
_U64 = struct.Struct(">Q")
_STORE_MODES = {bp.SET: SET, bp.ADD: ADD, bp.REPLACE: REPLACE, bp.APPEND: APPEND, bp.PREPEND: PREPEND}
_STORE_STATUS = {StoreResult.EXISTS: bp.KEY_EEXISTS, StoreResult.NOT_FOUND: bp.KEY_ENOENT,
                 StoreResult.NO_MEMORY: bp.ENOMEM}
_DELTA_STATUS = {DeltaResult.NOT_FOUND: bp.KEY_ENOENT, DeltaResult.NON_NUMERIC: bp.DELTA_BADVAL,
                 DeltaResult.CAS_MISMATCH: bp.KEY_EEXISTS, DeltaResult.NO_MEMORY: bp.ENOMEM}
#: An arithmetic request's exptime of all ones: do not create a missing counter.
_NO_CREATE = 0xFFFFFFFF


def do_binary(c: cmd.Binary, s: Session, out: Out) -> Effect:
    """One binary-protocol request."""
    if not bp.known(c.opcode):
        out += bp.error(c.opcode, c.opaque, bp.UNKNOWN_COMMAND)
        return None
    if not bp.well_formed(c):
        out += bp.error(c.opcode, c.opaque, bp.EINVAL)  # malformed frame: memcached hangs up
        return CLOSE
    base = bp.base_opcode(c.opcode)
    return _BINARY[base](c, base, c.opcode in bp.QUIET, s, out)


def _get(c: cmd.Binary, base: int, quiet: bool, s: Session, out: Out) -> Effect:
    touching = base in (bp.GAT, bp.GATK)
    hits = s.store.get([c.key], _U32.unpack(c.extras)[0] if touching else None)
    with_key = base in (bp.GETK, bp.GATK)
    if hits:
        _, flags, cas, data = hits[0]
        out += bp.response(c.opcode, c.opaque, cas=cas, extras=_U32.pack(flags),
                           key=c.key if with_key else b"", value=data[:-2])
    elif not quiet:
        if with_key:
            out += bp.response(c.opcode, c.opaque, bp.KEY_ENOENT, key=c.key)
        else:
            out += bp.error(c.opcode, c.opaque, bp.KEY_ENOENT)
    return None


def _touch(c: cmd.Binary, base: int, quiet: bool, s: Session, out: Out) -> Effect:
    if s.store.touch(c.key, _U32.unpack(c.extras)[0]):
        out += bp.response(c.opcode, c.opaque)
    else:
        out += bp.error(c.opcode, c.opaque, bp.KEY_ENOENT)
    return None


def _store(c: cmd.Binary, base: int, quiet: bool, s: Session, out: Out) -> Effect:
    appending = base in (bp.APPEND, bp.PREPEND)
    flags, exptime = (0, 0) if appending else _STORE_EXTRAS.unpack(c.extras)
    mode = _STORE_MODES[base]
    settings = s.settings
    if c.too_large or (not appending and too_large(len(c.key), flags, len(c.value) + 2, settings.use_cas,
                                                   settings.item_size_max)):
        s.store.too_large(SET, c.key)
        out += bp.error(c.opcode, c.opaque, bp.E2BIG)
        return None
    if c.cas and not appending:
        mode = CAS
    result, cas, _ = s.store.store(mode, c.key, flags, exptime, c.value + b"\r\n", c.cas)
    if result == StoreResult.STORED:
        if not quiet:
            out += bp.response(c.opcode, c.opaque, cas=cas)
        return None
    if result == StoreResult.NOT_STORED:
        status = {ADD: bp.KEY_EEXISTS, REPLACE: bp.KEY_ENOENT}.get(mode, bp.NOT_STORED)
    else:
        status = _STORE_STATUS[result]
    out += bp.error(c.opcode, c.opaque, status)
    return None


def _delete(c: cmd.Binary, base: int, quiet: bool, s: Session, out: Out) -> Effect:
    code = s.store.meta_delete(c.key, compare_cas=c.cas or None, stale=False, ttl=None,
                               drop_value=False, new_cas=None)
    if code == DeleteResult.DELETED:
        if not quiet:
            out += bp.response(c.opcode, c.opaque)
    else:
        out += bp.error(c.opcode, c.opaque, bp.KEY_ENOENT if code == DeleteResult.NOT_FOUND else bp.KEY_EEXISTS)
    return None


def _arith(c: cmd.Binary, base: int, quiet: bool, s: Session, out: Out) -> Effect:
    delta, initial, exptime = _ARITH_EXTRAS.unpack(c.extras)
    create = exptime != _NO_CREATE
    result, value, cas, _, _ = s.store.meta_arith(
        c.key, base == bp.INCREMENT, delta, [(TTL_VIVIFY, exptime)] if create else [],
        compare_cas=c.cas or None, vivify=create, initial=initial, binary=False, new_cas=None,
    )
    if result == DeltaResult.OK:
        if not quiet:
            out += bp.response(c.opcode, c.opaque, cas=cas, value=_U64.pack(value))
        return None
    out += bp.error(c.opcode, c.opaque, _DELTA_STATUS[result])
    return None


def _flush(c: cmd.Binary, base: int, quiet: bool, s: Session, out: Out) -> Effect:
    s.tstats.cmd_flush += 1
    if not s.settings.flush_enabled:
        out += bp.error(c.opcode, c.opaque, bp.EINVAL)
        return None
    s.store.flush_all(_U32.unpack(c.extras)[0] if c.extras else 0)
    if not quiet:
        out += bp.response(c.opcode, c.opaque)
    return None


def _simple(c: cmd.Binary, base: int, quiet: bool, s: Session, out: Out) -> Effect:
    """noop, version, quit: no arguments at all."""
    if base == bp.QUIT:
        if not quiet:
            out += bp.response(c.opcode, c.opaque)
        return QUIT
    out += bp.response(c.opcode, c.opaque, value=MEMCACHED_VERSION.encode() if base == bp.VERSION else b"")
    return None


def _stat(c: cmd.Binary, base: int, quiet: bool, s: Session, out: Out) -> Effect:
    group = stats.group(s.server, c.key)
    if group is None:
        out += bp.error(c.opcode, c.opaque, bp.KEY_ENOENT)
        return None
    for name, value in group:
        out += bp.response(c.opcode, c.opaque, key=name.encode(), value=str(value).encode())
    out += bp.response(c.opcode, c.opaque)
    return None


_BINARY: dict[int, Callable[[cmd.Binary, int, bool, Session, Out], Effect]] = {
    bp.GET: _get, bp.GETK: _get, bp.GAT: _get, bp.GATK: _get, bp.TOUCH: _touch,
    bp.SET: _store, bp.ADD: _store, bp.REPLACE: _store, bp.APPEND: _store,
    bp.PREPEND: _store, bp.DELETE: _delete, bp.INCREMENT: _arith,
    bp.DECREMENT: _arith, bp.FLUSH: _flush, bp.NOOP: _simple, bp.VERSION: _simple,
    bp.QUIT: _simple, bp.STAT: _stat,
}

HANDLERS: dict[type, Callable[[Any, Session, Out], Effect]] = {cmd.Binary: do_binary}
