"""Incremental, sans-IO reader for what a memcached backend answers (the proxy's side).

Theory of operation
-------------------
A memcached reply does not say which request it answers.  twemproxy frames a text reply
by its own shape whatever the request was (a ``STORED`` that answers a get reaches the
client as it is; only a multi-get's fragments must be ``VALUE`` blocks and ``END``), and so
does this reader: every text reply is one fixed word (``STORED``, ``END``...), a number,
``VERSION <v>``, an error (``ERROR``, ``CLIENT_ERROR <msg>``, ``SERVER_ERROR <msg>``), or
``VALUE`` blocks up to ``END``.  Meta replies (``HD``, ``VA <size>``...), which twemproxy
never forwards, have a shape of their own, and a quiet meta request fenced with ``mn`` is
answered by whatever comes before ``MN``.  So the proxy tells the reader, in send order,
the kind of each reply it expects (:meth:`ResponseReader.expect`; text kinds are named by
command, and retrievals take a fast path), and :meth:`ResponseReader.feed` turns whatever
one ``recv`` returned into every response now complete, in order.  No socket, no clock.

The reader has two input states, like a memcached connection: reading a ``\\r\\n``-terminated
line (``conn_parse_cmd``) and reading a data block of known length (``conn_nread``, after a
``VALUE`` or meta ``VA`` line).  What a line may say is one table per kind (:data:`_FIXED`
for the fixed words, :data:`_READERS` for the rest).

A :class:`Response` carries the exact bytes the backend sent (a proxy forwards them as is)
and, for retrievals, where each ``VALUE`` block lies inside them, because a multi-get merge
takes blocks from several backends (twemproxy's ``post_coalesce``).  Bytes are copied once:
a response that lies in one read is a slice of it, one that spans reads is joined once from
the pieces (a list, as in :mod:`trio_mc.protocol.parser`, so a 1 MB value is not quadratic).

Anything that does not fit, a reply nobody asked for, a line over :data:`LINE_LIMIT`, a bad
``VALUE`` length, a data block not ending in ``\\r\\n``, gives one :class:`BadResponse`, after
which the reader is ``broken`` and ignores its input: the stream can no longer be framed,
and twemproxy then closes the server connection (``SERVER_ERROR Invalid argument`` to every
request pending on it).
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from trio_mc.protocol import replies
from trio_mc.protocol.parser import KEY_MAX_LENGTH

# -- what a request expects back (plain ints: the proxy passes one per request) ----------------
STORAGE = 1  # set/add/replace/append/prepend/cas
RETRIEVAL = 2  # get/gets/gat/gats
ARITH = 3  # incr/decr
DELETE = 4
TOUCH = 5
VERSION = 6
META = 7  # mg/ms/md/ma/mn/me
#: A quiet meta command fenced by ``mn``: zero or more meta replies, then ``MN`` (the
#: proxy sends the fence because a quiet command's reply may never come).
QUIET = 8

#: :attr:`Response.status` of an incr/decr result (the other statuses are the wire words).
NUMBER = b"NUMBER"
#: Statuses that are errors, whatever the kind.
ERRORS = frozenset({b"ERROR", b"CLIENT_ERROR", b"SERVER_ERROR"})

#: A complete line (``\\r\\n`` included) longer than this is a bad response: memcached's
#: longest is a ``VALUE`` line (a 250-byte key and three numbers) or a meta line with flags.
LINE_LIMIT = 2048
#: memcached refuses ``-I`` above 1 GB, so no value is longer.
VALUE_LIMIT = 1024 * 1024 * 1024

_CRLF = b"\r\n"
_END = replies.END


@dataclass(slots=True)
class Response:
    """One complete reply.

    ``status`` is the reply's first word as sent (``b"STORED"``, ``b"END"``, ``b"VA"``,
    ``b"VERSION"``, ``b"SERVER_ERROR"``...), or :data:`NUMBER`.  ``raw`` is exactly what the
    backend sent for it.  Most replies are forwarded whole, so where each ``VALUE`` block
    lies is found only when asked for (:attr:`spans`, a multi-get merge), in ``raw``, which
    the reader has already framed.
    """

    kind: int
    status: bytes
    raw: bytes

    @property
    def spans(self) -> list[tuple[int, int]]:
        """The ``(start, end)`` offsets in ``raw`` of each ``VALUE`` block, header and data
        with their ``\\r\\n`` (a retrieval cut short by an error: the blocks before it)."""
        raw = self.raw
        spans = []
        pos = 0
        while raw.startswith(b"VALUE ", pos):
            header = _VALUE_HEADER(raw, pos)
            if header is not None:
                end = header.end() + int(header.group(1)) + 2
            else:  # framed by the line reader: a header the fast match does not take
                nl = raw.index(b"\n", pos)
                read = _value_line(raw[pos:nl - 1])
                assert read is not None
                end = nl + 1 + read[1] + 2
            spans.append((pos, end))
            pos = end
        return spans

    @property
    def end(self) -> bool:
        """Whether a retrieval ended with ``END`` (what a multi-get fragment must do)."""
        return self.status == b"END"

    @property
    def values(self) -> list[memoryview]:
        """Each ``VALUE`` block, a view into ``raw`` (what a multi-get merge copies out)."""
        view = memoryview(self.raw)
        return [view[a:b] for a, b in self.spans]


@dataclass(slots=True)
class BadResponse:
    """Bytes that cannot be a reply to what was expected (``kind``; ``None``: nothing was)."""

    kind: int | None
    reason: str


# A line reader gets the line without its "\r\n" and returns (status, data block length) --
# a length of -1: the response ends with this line; 0 or more: a data block of that many
# bytes (plus "\r\n") follows -- or None when the line does not fit the kind.
_Line = tuple[bytes, int] | None


def _error_line(line: bytes) -> _Line:
    """``ERROR``, ``CLIENT_ERROR <msg>``, ``SERVER_ERROR <msg>``: possible after any request."""
    word = line.split(b" ", 1)[0]
    if word in ERRORS:
        return word, -1
    return None


def _value_line(line: bytes) -> _Line:
    """``VALUE <key> <flags> <bytes> [<cas>]`` (``END`` is in the fixed table)."""
    tokens = line.split(b" ")
    if len(tokens) not in (4, 5):
        return None
    key, flags, nbytes = tokens[1], tokens[2], tokens[3]
    if not 0 < len(key) <= KEY_MAX_LENGTH or not flags.isdigit() or not nbytes.isdigit() \
            or (len(tokens) == 5 and not tokens[4].isdigit()):
        return None
    size = int(nbytes)
    return (b"VALUE", size) if size <= VALUE_LIMIT else None


#: The common ``VALUE`` header, matched in C: a key of 1-250 bytes, flags, length (the
#: group) and an optional cas, each of up to 20 digits.  Every header it matches,
#: :func:`_value_line` reads the same way; anything else (an error, ``END``, a header
#: still incomplete) goes through the line tables.
_VALUE_HEADER = re.compile(rb"VALUE [^ \r\n]{1,%d} [0-9]{1,20} ([0-9]{1,20})(?: [0-9]{1,20})?\r\n"
                           % KEY_MAX_LENGTH).match


def _text_line(line: bytes) -> _Line:
    """A text reply that is not a fixed word: ``VALUE`` (a block follows, the reply runs to
    ``END``), ``VERSION <v>``, an incr/decr number (digits, which twemproxy also accepts
    followed by spaces) or an error."""
    if line.startswith(b"VALUE "):
        return _value_line(line)
    if line.startswith(b"VERSION "):
        return b"VERSION", -1
    if line.rstrip(b" ").isdigit():
        return NUMBER, -1
    return _error_line(line)


_META_CODES = frozenset({b"HD", b"EN", b"NF", b"NS", b"EX", b"MN", b"ME"})


def _meta_line(line: bytes) -> _Line:
    """``VA <size> <flags>*`` (a data block follows) or ``HD|EN|NF|NS|EX|MN|ME [...]``."""
    code = line[:2]
    if len(line) > 2 and line[2] != 0x20:
        return _error_line(line)
    if code == b"VA":
        size = line[3:].split(b" ", 1)[0]
        if size.isdigit() and int(size) <= VALUE_LIMIT:
            return b"VA", int(size)
        return None
    if code in _META_CODES:
        return code, -1
    return _error_line(line)


def _fixed(*lines: bytes) -> dict[bytes, tuple[bytes, bytes]]:
    """Line without ``\\r\\n`` -> (status, the reply constant to use as ``raw``)."""
    return {line[:-2]: (line[:-2], line) for line in (*lines, replies.ERROR)}


_TEXT_KINDS = (STORAGE, RETRIEVAL, ARITH, DELETE, TOUCH, VERSION)
_TEXT_FIXED = _fixed(replies.STORED, replies.NOT_STORED, replies.EXISTS, replies.NOT_FOUND,
                     replies.DELETED, replies.TOUCHED, replies.END)
_END_FIXED = _TEXT_FIXED[_END[:-2]]  # what a retrieval's END is, for the fast path
# Kind -> the exact lines that end a reply on their own (the fast path: one dict lookup).
_FIXED: dict[int, dict[bytes, tuple[bytes, bytes]]] = {
    **dict.fromkeys(_TEXT_KINDS, _TEXT_FIXED),
    META: _fixed(replies.MN, replies.EN, b"HD\r\n", b"NF\r\n", b"NS\r\n", b"EX\r\n"),
    QUIET: _fixed(replies.MN),
}
# Kind -> how any other line is read.
_READERS: dict[int, Callable[[bytes], _Line]] = {
    **dict.fromkeys(_TEXT_KINDS, _text_line),
    META: _meta_line,
    QUIET: _meta_line,
}


class ResponseReader:
    """Turns a backend's byte stream into :class:`Response` objects, given what to expect.

    Args:
      line_limit: the longest line accepted, ``\\r\\n`` included.

    The queue of expected kinds is bounded by the caller: it holds one entry per request
    in flight, which the proxy's omsg_q already bounds.
    """

    __slots__ = (
        "_expected", "_have", "_kind", "_line", "_need", "_parts", "broken", "line_limit",
    )

    def __init__(self, *, line_limit: int = LINE_LIMIT) -> None:
        self.line_limit = line_limit
        self._expected: deque[int] = deque()
        self._kind = 0  # kind of the response being read; 0 between responses
        self._line = b""  # head of a line still unterminated at the end of the last read
        # The current response's bytes from earlier reads (before the carried line head).
        self._parts: list[bytes | memoryview] = []
        self._have = 0  # their total length
        self._need = 0  # bytes of a data block still to come
        self.broken = False  # after a bad response: the stream cannot be framed any more

    def expect(self, kind: int) -> None:
        """Queue the kind of the reply to the next request sent (before sending it, so
        the reply cannot arrive first)."""
        self._expected.append(kind)

    @property
    def pending(self) -> int:
        """Replies expected and not yet complete (the one being read included)."""
        return len(self._expected) + (self._kind != 0)

    @property
    def buffered(self) -> int:
        """Bytes held for an incomplete response."""
        return self._have + len(self._line)

    def feed(self, data: bytes) -> list[Response | BadResponse]:
        """Add the bytes of one read; return every response completed by them, in order."""
        out: list[Response | BadResponse] = []
        if self.broken or not data:
            return out
        pos = 0
        if self._need:
            pos = self._finish_block(data, out)
            if pos < 0:
                return out
        if self._line:
            data = self._line + data
            self._line = b""
        buf = data
        end_of_buf = len(buf)
        start = 0  # where the current response starts in buf (0: it began in an earlier read)
        limit = self.line_limit
        expected = self._expected
        while pos < end_of_buf:
            kind = self._kind
            if not kind:
                if not expected:
                    return self._bad(out, None, "a reply nobody asked for")
                kind = self._kind = expected.popleft()
                start = pos
            if kind == RETRIEVAL:  # the fast path: VALUE blocks complete in this read
                header = _VALUE_HEADER(buf, pos)
                while header is not None:
                    block_end = header.end() + int(header.group(1)) + 2
                    if block_end > end_of_buf:
                        break  # ends in a later read (or is too long): the line path sees to it
                    if buf[block_end - 2:block_end] != _CRLF:
                        return self._bad(out, kind, "data block not ending in \\r\\n")
                    pos = block_end
                    header = _VALUE_HEADER(buf, pos)
                if buf.startswith(_END, pos):
                    out.append(self._ended(buf, start, pos, pos + len(_END), _END_FIXED))
                    pos += len(_END)
                    continue
                if pos == end_of_buf:
                    break
            nl = buf.find(b"\n", pos)
            if nl < 0:
                if end_of_buf - pos >= limit:
                    return self._bad(out, kind, "line too long")
                self._spill(buf, start, pos)
                self._line = buf[pos:]
                return out
            if nl - pos + 1 > limit:
                return self._bad(out, kind, "line too long")
            if nl == pos or buf[nl - 1] != 13:
                return self._bad(out, kind, "line not ending in \\r\\n")
            line = buf[pos:nl - 1]
            fixed = _FIXED[kind].get(line)
            if fixed is not None:
                out.append(self._ended(buf, start, pos, nl + 1, fixed))
                pos = nl + 1
                continue
            read = _READERS[kind](line)
            if read is None:
                return self._bad(out, kind, "unexpected reply line")
            status, size = read
            if size < 0:
                pos = nl + 1
                if kind != QUIET:  # (a reply before the fence: it ends at MN, like a VALUE at END)
                    out.append(self._complete(buf, start, pos, status))
                continue
            block_end = nl + 1 + size + 2
            if block_end > end_of_buf:
                self._spill(buf, start, end_of_buf)
                self._need = block_end - end_of_buf
                return out
            if not buf.startswith(_CRLF, block_end - 2):
                return self._bad(out, kind, "data block not ending in \\r\\n")
            pos = block_end
            if kind == META:
                out.append(self._complete(buf, start, pos, status))
        if self._kind:  # a retrieval whose last block ended this read: END is still to come
            self._spill(buf, start, end_of_buf)
        return out

    def _finish_block(self, data: bytes, out: list[Response | BadResponse]) -> int:
        """Continue a data block begun in an earlier read: where it ends in ``data``, or -1
        when it is still incomplete (or bad)."""
        need = self._need
        if len(data) < need:
            self._parts.append(data)
            self._have += len(data)
            self._need -= len(data)
            return -1
        self._need = 0
        if need >= 2:
            ok = data.startswith(_CRLF, need - 2)
        else:  # the "\r" came in the last read
            last = self._parts[-1]
            ok = data[0] == 10 and last[len(last) - 1] == 13
        if not ok:
            self._bad(out, self._kind, "data block not ending in \\r\\n")
            return -1
        if self._kind == META:
            out.append(self._complete(data, 0, need, b"VA"))
        return need

    def _spill(self, buf: bytes, start: int, end: int) -> None:
        """Keep ``buf[start:end]``, the current response's bytes so far, for a later read."""
        if end > start:
            self._parts.append(memoryview(buf)[start:end])
            self._have += end - start

    def _ended(self, buf: bytes, start: int, line: int, end: int,
               fixed: tuple[bytes, bytes]) -> Response:
        """The response that the fixed line ``buf[line:end]`` ends: that line's constant
        if it is the whole reply, else everything since ``start`` (the END after VALUE
        blocks, the MN after quiet replies)."""
        status, raw = fixed
        if line > start or self._parts:
            return self._complete(buf, start, end, status)
        self._kind, kind = 0, self._kind
        return Response(kind, status, raw)

    def _complete(self, buf: bytes, start: int, end: int, status: bytes) -> Response:
        """The response ending at ``buf[end]``, copied once (a slice, or one join)."""
        kind = self._kind
        self._kind = 0
        if self._parts:
            self._parts.append(memoryview(buf)[start:end])
            raw = b"".join(self._parts)
            self._parts = []
            self._have = 0
        else:
            raw = buf[start:end]
        return Response(kind, status, raw)

    def _bad(self, out: list[Response | BadResponse], kind: int | None,
             reason: str) -> list[Response | BadResponse]:
        out.append(BadResponse(kind, reason))
        self.broken = True
        self._kind = 0
        self._line = b""
        self._parts = []
        self._have = 0
        self._need = 0
        return out
