"""Incremental, sans-IO parser for memcached's text protocol.

Theory of operation
-------------------
:meth:`Parser.feed` takes whatever one ``recv`` returned and gives back every command that is
now complete, in order, so the server can answer a whole pipelined batch with one ``send``.
It never touches a socket or a clock.  The parser has the same three input states as a
memcached connection:

* ``conn_parse_cmd``: looking for a ``\\n``-terminated command line;
* ``conn_nread``: a storage command was parsed and its ``<bytes>+2`` data block is being read;
* ``conn_swallow``: a storage command was rejected (too large) and its data block is being
  discarded as it streams in, without buffering it.

Validation follows ``proto_text.c`` in 1.6.18 to the byte: memcached's tokenizer (spaces
only, at most 23 tokens), token-count checks that answer a bare ``ERROR`` (the data line is
then parsed as a command), ``CLIENT_ERROR`` strings, ``noreply`` (exactly the last token,
silencing errors found after the line was tokenized), C number parsing with 32-bit
truncation, and the 2048-byte line limit that closes the connection unless the line is a
``get``/``gets``.
"""

from __future__ import annotations

from collections.abc import Callable

from trio_mc.modes import ADD, APPEND, CAS, PREPEND, REPLACE, SET
from trio_mc.numbers import safe_strtol, safe_strtoul, safe_strtoull
from trio_mc.protocol import commands as cmd
from trio_mc.protocol import replies
from trio_mc.protocol.meta import parse_meta
from trio_mc.sizes import too_large

KEY_MAX_LENGTH = 250
#: What ``watch`` may ask for (memcached's log types).
WATCH_KINDS = frozenset({
    b"fetchers", b"mutations", b"evictions", b"connevents", b"rawcmds", b"sysevents",
    b"proxyreqs", b"proxyevents", b"proxyuser",
})
#: memcached tokenizes at most this many tokens; the rest of a line stays unsplit.
MAX_TOKENS = 23
#: Bytes without a newline after which a non-get line closes the connection.
LINE_LIMIT = 2048
_INT_MAX = (1 << 31) - 1

_ERROR = cmd.Reply(replies.ERROR)
_FORMAT = cmd.Reply(replies.CLIENT_ERROR_FORMAT)
_EXPTIME = cmd.Reply(replies.CLIENT_ERROR_EXPTIME)
_DELTA = cmd.Reply(replies.CLIENT_ERROR_DELTA)
_BAD_CHUNK = cmd.Reply(replies.CLIENT_ERROR_BAD_CHUNK)
_DELETE_USAGE = cmd.Reply(replies.CLIENT_ERROR_DELETE_USAGE)
_NOREPLY = b"noreply"


class Parser:
    """Turns a byte stream into :mod:`~trio_mc.protocol.commands` objects.

    Args:
      item_size_max: ``-I``; larger storage commands are answered without buffering data.
      use_cas: whether CAS is on (``-C`` off); the 8-byte CAS field counts toward ``-I``.
    """

    __slots__ = (
        "_buf", "_pos", "_search_from", "_pending", "_need", "_parts", "_have", "_swallow",
        "closed", "item_size_max", "use_cas", "require_auth", "_auth_need",
    )

    def __init__(self, *, item_size_max: int = 1024 * 1024, use_cas: bool = True,
                 require_auth: bool = False) -> None:
        self.item_size_max = item_size_max
        self.use_cas = use_cas
        #: ``-Y``: until the server clears this, only authentication attempts are read.
        self.require_auth = require_auth
        self._auth_need = 0
        self._buf = b""
        self._pos = 0
        self._search_from = 0  # where the newline search resumes in an unterminated line
        # A storage command waiting for its data block of _need bytes ("\r\n" included).
        self._pending: cmd.Store | cmd.MetaSet | None = None
        self._need = 0
        self._parts: list[bytes] = []  # pieces of a data block still arriving
        self._have = 0
        self._swallow = 0  # bytes of a rejected data block still to discard
        self.closed = False  # after quit or a fatal line: ignore everything

    @property
    def state(self) -> str:
        """memcached's name for what the connection waits for (for ``stats conns``)."""
        if self._pending is not None:
            return "conn_nread"
        if self._swallow:
            return "conn_swallow"
        return "conn_waiting"

    @property
    def buffered(self) -> int:
        """Bytes held for an incomplete command (a data block being collected included)."""
        return len(self._buf) - self._pos + self._have

    def feed(self, data: bytes) -> list[cmd.Command]:
        """Add the bytes of one read; return every command completed by them, in order."""
        out: list[cmd.Command] = []
        if self.closed:
            return out
        if self.require_auth:
            return self._feed_auth(data)
        if self._swallow:
            taken = min(self._swallow, len(data))
            self._swallow -= taken
            if self._swallow:
                return out
            data = data[taken:]
        if self._pending is not None:
            # Collect a data block without re-copying the buffer on every read.
            self._parts.append(data)
            self._have += len(data)
            if self._have < self._need:
                return out
            buf = b"".join(self._parts)
            self._parts = []
            self._have = 0
        elif self._pos < len(self._buf):
            buf = self._buf[self._pos:] + data
        else:
            buf = data
        pos = 0
        end_of_buf = len(buf)
        while pos < end_of_buf:
            pending = self._pending
            if pending is not None:
                need = self._need
                if end_of_buf - pos < need:
                    self._parts = [buf[pos:]]
                    self._have = end_of_buf - pos
                    self._buf = b""
                    self._pos = 0
                    return out
                block = buf[pos:pos + need]
                pos += need
                self._pending = None
                if block.endswith(b"\r\n"):
                    pending.data = block
                    out.append(pending)
                elif pending.__class__ is cmd.MetaSet or not pending.noreply:  # type: ignore[union-attr]
                    out.append(_BAD_CHUNK)  # meta commands always report it
                continue
            nl = buf.find(b"\n", pos + self._search_from)
            if nl < 0:
                if end_of_buf - pos > LINE_LIMIT and not _is_multiget_prefix(buf, pos):
                    out.append(cmd.Close("line too long"))
                    self.closed = True
                    break
                self._search_from = end_of_buf - pos
                break
            self._search_from = 0
            end = nl - 1 if nl - pos > 1 and buf[nl - 1] == 13 else nl
            if buf.startswith(b"get ", pos):
                # The most common request: a plain single-key get is its key, untokenized.
                key = buf[pos + 4:end]
                if 0 < len(key) <= KEY_MAX_LENGTH and b" " not in key and b"\0" not in key:
                    out.append(key)
                    pos = nl + 1
                    continue
            command = self._parse_line(buf[pos:end])
            pos = nl + 1
            if command is not None:
                out.append(command)
                if command.__class__ is cmd.Quit or command.__class__ is cmd.Close:
                    self.closed = True
                    break
            if self._swallow:
                taken = min(self._swallow, end_of_buf - pos)
                pos += taken
                self._swallow -= taken
        if self.closed:
            self._buf = b""
            self._pos = 0
        else:
            self._buf = buf
            self._pos = pos
        return out

    def _feed_auth(self, data: bytes) -> list[cmd.Command]:
        """memcached's ``try_read_command_asciiauth``: one attempt at a time."""
        buf = self._buf[self._pos:] + data
        self._pos = 0
        out: list[cmd.Command] = []
        while True:
            if not self._auth_need:
                nl = buf.find(b"\n")
                if nl < 0:
                    if len(buf) > LINE_LIMIT:
                        out.append(cmd.Close("line too long"))
                        self.closed = True
                        buf = b""
                    break
                tokens = [t for t in buf[:nl].split(b" ") if t]
                buf = buf[nl + 1:]
                size = safe_strtoul(tokens[4]) if len(tokens) >= 5 else None
                if tokens[:1] != [b"set"] or size is None:
                    out.append(cmd.Reply(replies.CLIENT_ERROR_UNAUTHENTICATED))
                    continue
                self._auth_need = size + 2
            if len(buf) < self._auth_need:
                break
            block, buf = buf[:self._auth_need], buf[self._auth_need:]
            self._auth_need = 0
            if not block.endswith(b"\r\n"):
                out.append(cmd.Reply(replies.CLIENT_ERROR_AUTH_TERMINATION))
                continue
            words = [t for t in block[:-2].split(b" ") if t]
            if len(words) < 2:
                out.append(cmd.Reply(replies.CLIENT_ERROR_AUTH_FORMAT))
                continue
            out.append(cmd.Auth(words[0], words[1]))
            break  # the server decides; what follows is parsed in the new mode
        self._buf = buf
        return out

    # -- command lines ---------------------------------------------------------------------

    def _parse_line(self, line: bytes) -> cmd.Command | None:
        if b"\0" in line:  # memcached works on a C string: a NUL ends the command
            line = line[: line.index(b"\0")]
        tokens = line.split(b" ")
        if b"" in tokens:
            tokens = [t for t in tokens if t]
        if not tokens or len(tokens[0]) < 2:
            return _ERROR
        handler = _HANDLERS.get(tokens[0])
        if handler is None:
            return _unknown(tokens)
        if len(tokens) > MAX_TOKENS and handler not in _UNBOUNDED:
            # memcached would see 23 tokens plus an unsplit remainder: too many for any
            # command but the get family.
            tokens = [*tokens[:MAX_TOKENS], b""]
        return handler(self, tokens)

    def _get(self, tokens: list[bytes], with_cas: bool, touch: bool) -> cmd.Command:
        if len(tokens) < 2:
            return _ERROR
        exptime = None
        keys = tokens[1:]
        if touch:
            exptime = safe_strtol(tokens[1])
            if exptime is None:
                return _EXPTIME
            keys = tokens[2:]
        for key in keys:
            if len(key) > KEY_MAX_LENGTH:
                return _FORMAT
        return cmd.Get(keys, with_cas, exptime)

    def _store(self, tokens: list[bytes], mode: int) -> cmd.Command | None:
        base = 6 if mode == CAS else 5
        ntok = len(tokens)
        if ntok != base and ntok != base + 1:
            return _ERROR
        noreply = tokens[-1] == _NOREPLY
        key = tokens[1]
        if len(key) > KEY_MAX_LENGTH:
            return None if noreply else _FORMAT
        # Tokens of at most 9 digits (the usual case) fit every field as they are; only
        # others need the emulation of strtol's rules.
        t = tokens[2]
        flags = int(t) if len(t) < 10 and t.isdigit() else safe_strtoul(t)
        t = tokens[3]
        exptime = int(t) if len(t) < 10 and t.isdigit() else safe_strtol(t)
        t = tokens[4]
        vlen = int(t) if len(t) < 10 and t.isdigit() else safe_strtol(t)
        if flags is None or exptime is None or vlen is None:
            return None if noreply else _FORMAT
        cas = 0
        if base == 6:
            cas_value = safe_strtoull(tokens[5])
            if cas_value is None:
                return None if noreply else _FORMAT
            cas = cas_value
        if vlen < 0 or vlen > _INT_MAX - 2:
            return None if noreply else _FORMAT
        need = vlen + 2
        if self._too_large(len(key), flags, need):
            self._swallow = need
            return cmd.TooLarge(mode, key, noreply)
        self._pending = cmd.Store(mode, key, flags, exptime, b"", cas, noreply)
        self._need = need
        return None

    def _arith(self, tokens: list[bytes], incr: bool) -> cmd.Command | None:
        if len(tokens) not in (3, 4):
            return _ERROR
        noreply = tokens[-1] == _NOREPLY
        if len(tokens[1]) > KEY_MAX_LENGTH:
            return None if noreply else _FORMAT
        delta = safe_strtoull(tokens[2])
        if delta is None:
            return None if noreply else _DELTA
        return cmd.Arith(tokens[1], incr, delta, noreply)

    def _touch(self, tokens: list[bytes]) -> cmd.Command | None:
        if len(tokens) not in (3, 4):
            return _ERROR
        noreply = tokens[-1] == _NOREPLY
        if len(tokens[1]) > KEY_MAX_LENGTH:
            return None if noreply else _FORMAT
        exptime = safe_strtol(tokens[2])
        if exptime is None:
            return None if noreply else _EXPTIME
        return cmd.Touch(tokens[1], exptime, noreply)

    def _delete(self, tokens: list[bytes]) -> cmd.Command | None:
        ntok = len(tokens)
        if ntok < 2 or ntok > 4:
            return _ERROR
        noreply = False
        if ntok > 2:
            # "delete <key> 0" is accepted for old clients; any other hold time is refused.
            hold_is_zero = tokens[2] == b"0"
            noreply = tokens[-1] == _NOREPLY
            if not ((ntok == 3 and (hold_is_zero or noreply)) or (ntok == 4 and hold_is_zero and noreply)):
                return None if noreply else _DELETE_USAGE
        if len(tokens[1]) > KEY_MAX_LENGTH:
            return None if noreply else _FORMAT
        return cmd.Delete(tokens[1], noreply)

    def _flush_all(self, tokens: list[bytes]) -> cmd.Command:
        ntok = len(tokens)
        if ntok > 3:
            return _ERROR
        noreply = tokens[-1] == _NOREPLY
        delay: int | None = 0
        if ntok != (2 if noreply else 1):
            delay = safe_strtol(tokens[1])
        return cmd.FlushAll(delay, noreply)

    def _verbosity(self, tokens: list[bytes]) -> cmd.Command | None:
        if len(tokens) not in (2, 3):
            return _ERROR
        noreply = tokens[-1] == _NOREPLY
        level = safe_strtoul(tokens[1])
        if level is None:
            return None if noreply else _FORMAT
        return cmd.Verbosity(level, noreply)

    def _memlimit(self, tokens: list[bytes]) -> cmd.Command:
        if len(tokens) not in (2, 3):
            return _ERROR
        return cmd.MemLimit(safe_strtoul(tokens[1]), tokens[-1] == _NOREPLY)

    def _shutdown(self, tokens: list[bytes]) -> cmd.Command:
        if len(tokens) == 1:
            return cmd.Shutdown(b"")
        if len(tokens) == 2 and tokens[1] == b"graceful":
            return cmd.Shutdown(b"graceful")
        return cmd.Shutdown(None)

    def _meta(self, tokens: list[bytes]) -> cmd.Command | None:
        command = parse_meta(tokens, self._too_large)
        if command.__class__ is cmd.MetaSwallow:
            self._swallow = command.need
        elif command.__class__ is cmd.MetaSet:
            self._pending = command
            self._need = command.need
            return None
        return command

    def _watch(self, tokens: list[bytes]) -> cmd.Command:
        kinds = tokens[1:] or [b"fetchers"]
        if not all(kind in WATCH_KINDS for kind in kinds):
            return _ERROR
        return cmd.Watch(kinds)

    def _too_large(self, key_length: int, flags: int, value_length: int) -> bool:
        return too_large(key_length, flags, value_length, self.use_cas, self.item_size_max)


_Handler = Callable[[Parser, list[bytes]], "cmd.Command | None"]

_HANDLERS: dict[bytes, _Handler] = {
    b"get": lambda p, t: p._get(t, False, False),
    b"bget": lambda p, t: p._get(t, False, False),
    b"gets": lambda p, t: p._get(t, True, False),
    b"gat": lambda p, t: p._get(t, False, True),
    b"gats": lambda p, t: p._get(t, True, True),
    b"set": lambda p, t: p._store(t, SET),
    b"add": lambda p, t: p._store(t, ADD),
    b"replace": lambda p, t: p._store(t, REPLACE),
    b"append": lambda p, t: p._store(t, APPEND),
    b"prepend": lambda p, t: p._store(t, PREPEND),
    b"cas": lambda p, t: p._store(t, CAS),
    b"incr": lambda p, t: p._arith(t, True),
    b"decr": lambda p, t: p._arith(t, False),
    b"touch": Parser._touch,
    b"delete": Parser._delete,
    b"flush_all": Parser._flush_all,
    b"verbosity": Parser._verbosity,
    b"cache_memlimit": Parser._memlimit,
    b"shutdown": Parser._shutdown,
    b"quit": lambda p, t: cmd.Quit(),
    b"version": lambda p, t: cmd.Version(),
    b"stats": lambda p, t: cmd.Stats(t[1:]),
    **{b"m" + bytes([op]): Parser._meta for op in b"gsdaen"},
    b"watch": lambda p, t: p._watch(t),
    b"slabs": lambda p, t: cmd.Admin(t[0], t[1:]),
    b"lru_crawler": lambda p, t: cmd.Admin(t[0], t[1:]),
    b"lru": lambda p, t: cmd.Admin(t[0], t[1:]) if len(t) >= 2 else _ERROR,
    b"debugtime": lambda p, t: cmd.Admin(t[0], t[1:]) if len(t) >= 2 else _ERROR,
}
_UNBOUNDED = {_HANDLERS[name] for name in (b"get", b"bget", b"gets", b"gat", b"gats")}

# Command names memcached dispatches on their first byte; an unknown name in these families
# is a plain ERROR, anywhere else a trailing "HTTP/..." token closes the connection.
_FAMILIES = frozenset(b"gsacidt")


def _unknown(tokens: list[bytes]) -> cmd.Command:
    name = tokens[0]
    if (name[0] == 0x6D and len(name) == 2) or name[0] in _FAMILIES:  # 0x6D: 'm'
        return _ERROR
    last = tokens[min(len(tokens), MAX_TOKENS) - 1]
    if last.startswith(b"HTTP/"):
        return cmd.Close("HTTP request")
    return _ERROR


def _is_multiget_prefix(buf: bytes, pos: int) -> bool:
    """Whether an unterminated line may grow without bound (a long get/gets)."""
    start = pos
    limit = min(len(buf), pos + 101)
    while start < limit and buf[start] == 0x20:
        start += 1
    if start - pos > 100:
        return False
    return buf.startswith(b"get ", start) or buf.startswith(b"gets ", start)
