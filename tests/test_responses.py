"""The sans-IO response reader: backend bytes in, responses out, any split the same."""

from __future__ import annotations

import itertools
import socket
import time
from collections.abc import Iterator, Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from procs import ServerProcess, start_memcached
from procs import ask

from trio_mc.protocol import requests as rq
from trio_mc.protocol import responses as rs
from trio_mc import modes
from trio_mc.protocol.responses import BadResponse, Response, ResponseReader

Result = Response | BadResponse


def read(kinds: Sequence[int], *chunks: bytes) -> list[Result]:
    reader = ResponseReader()
    for kind in kinds:
        reader.expect(kind)
    out: list[Result] = []
    for chunk in chunks:
        out += reader.feed(chunk)
    return out


def one(kind: int, data: bytes) -> Response:
    [r] = read([kind], data)
    assert isinstance(r, Response) and r.kind == kind and r.raw == data
    return r


def bad(kind: int, data: bytes) -> str:
    reader = ResponseReader()
    reader.expect(kind)
    out = reader.feed(data)
    assert len(out) == 1 and isinstance(out[0], BadResponse), out
    assert reader.broken and reader.feed(b"STORED\r\n") == []
    return out[0].reason


# -- one kind at a time --------------------------------------------------------------------

def test_storage_replies() -> None:
    for word in (b"STORED", b"NOT_STORED", b"EXISTS", b"NOT_FOUND"):
        assert one(rs.STORAGE, word + b"\r\n").status == word
    assert one(rs.STORAGE, b"STORED\r\n").raw is one(rs.STORAGE, b"STORED\r\n").raw  # a constant


def test_retrieval_values_up_to_end() -> None:
    data = b"VALUE a 0 3\r\nabc\r\nVALUE bb 7 4 99\r\n\r\nx\n\r\nEND\r\n"
    r = one(rs.RETRIEVAL, data)
    assert r.status == b"END" and r.end
    assert [bytes(v) for v in r.values] == [b"VALUE a 0 3\r\nabc\r\n", b"VALUE bb 7 4 99\r\n\r\nx\n\r\n"]
    empty = one(rs.RETRIEVAL, b"END\r\n")
    assert empty.end and empty.values == []


def test_values_are_views_into_raw_and_state_is_reported() -> None:
    reader = ResponseReader()
    reader.expect(rs.RETRIEVAL)
    reader.expect(rs.STORAGE)
    assert reader.pending == 2
    assert reader.feed(b"VALUE k 0 5\r\nab") == [] and reader.buffered == 15
    [r] = reader.feed(b"cde\r\nEND\r\nSTO")
    assert isinstance(r, Response) and r.spans == [(0, 20)] and r.values[0].obj is r.raw
    assert reader.pending == 1 and reader.buffered == 3
    assert [x.status for x in reader.feed(b"RED\r\n")] == [b"STORED"]  # type: ignore[union-attr]
    assert reader.pending == 0 and reader.buffered == 0


def test_retrieval_cut_short_by_an_error_keeps_its_blocks() -> None:
    r = one(rs.RETRIEVAL, b"VALUE a 0 1\r\nx\r\nSERVER_ERROR out of memory writing get response\r\n")
    assert r.status == b"SERVER_ERROR" and not r.end
    assert [bytes(v) for v in r.values] == [b"VALUE a 0 1\r\nx\r\n"]


def test_arith_numbers() -> None:
    assert one(rs.ARITH, b"18446744073709551615\r\n").status == rs.NUMBER
    assert one(rs.ARITH, b"0  \r\n").status == rs.NUMBER  # twemproxy's test vector
    assert one(rs.ARITH, b"NOT_FOUND\r\n").status == b"NOT_FOUND"
    bad(rs.ARITH, b"-1\r\n")


def test_delete_touch_version() -> None:
    assert one(rs.DELETE, b"DELETED\r\n").status == b"DELETED"
    assert one(rs.DELETE, b"NOT_FOUND\r\n").status == b"NOT_FOUND"
    assert one(rs.TOUCH, b"TOUCHED\r\n").status == b"TOUCHED"
    assert one(rs.VERSION, b"VERSION 1.5.22\r\n").status == b"VERSION"
    bad(rs.VERSION, b"VERSION\r\n")


@pytest.mark.parametrize("kind", [rs.STORAGE, rs.RETRIEVAL, rs.ARITH, rs.DELETE, rs.TOUCH, rs.VERSION])
def test_a_text_reply_is_framed_by_its_shape_not_by_the_request(kind: int) -> None:
    """As twemproxy: a reply that belongs to another command (a backend out of step, or
    a buggy one) is still read, by its own shape, and forwarded as it is."""
    for reply, status in [(b"STORED\r\n", b"STORED"), (b"TOUCHED\r\n", b"TOUCHED"), (b"END\r\n", b"END"),
                          (b"5\r\n", rs.NUMBER), (b"VERSION 1.6.18\r\n", b"VERSION"),
                          (b"VALUE k 0 1\r\nv\r\nEND\r\n", b"END"), (b"ERROR\r\n", b"ERROR")]:
        response = one(kind, reply)
        assert (response.status, response.raw) == (status, reply)


def test_meta_replies() -> None:
    va = one(rs.META, b"VA 5 f3 t-1 kfoo\r\nhe\r\no\r\n")
    assert va.status == b"VA" and va.values == []
    assert one(rs.META, b"VA 0\r\n\r\n").status == b"VA"
    for line in (b"HD", b"HD c12 Oabc", b"EN", b"EN kmiss", b"NF", b"NS", b"EX c0", b"MN"):
        assert one(rs.META, line + b"\r\n").status == line[:2]
    me = one(rs.META, b"ME foo exp=-1 la=3 cas=2 fetch=no cls=1 size=63\r\n")
    assert me.status == b"ME"
    for line in (b"VA x", b"VA", b"HDX", b"H", b"STORED", b"END"):
        bad(rs.META, line + b"\r\n")


@pytest.mark.parametrize("kind", [rs.STORAGE, rs.RETRIEVAL, rs.ARITH, rs.DELETE, rs.TOUCH,
                                  rs.VERSION, rs.META])
def test_errors_end_any_kind(kind: int) -> None:
    assert one(kind, b"ERROR\r\n").status == b"ERROR"
    assert one(kind, b"CLIENT_ERROR bad command line format\r\n").status == b"CLIENT_ERROR"
    assert one(kind, b"SERVER_ERROR out of memory\r\n").status == b"SERVER_ERROR"
    assert one(kind, b"SERVER_ERROR\r\n").status == b"SERVER_ERROR"
    bad(kind, b"ERRORS\r\n")


def test_pipelined_replies_in_one_read() -> None:
    out = read([rs.STORAGE, rs.RETRIEVAL, rs.ARITH, rs.META],
               b"STORED\r\nVALUE k 0 1\r\nx\r\nEND\r\n5\r\nHD\r\n")
    assert [r.status for r in out if isinstance(r, Response)] == [b"STORED", b"END", rs.NUMBER, b"HD"]


# -- bad responses ---------------------------------------------------------------------------

def test_an_empty_read_is_no_reply() -> None:
    reader = ResponseReader()
    assert reader.feed(b"") == [] and not reader.broken


def test_a_reply_nobody_asked_for() -> None:
    reader = ResponseReader()
    assert reader.feed(b"STORED\r\n") == [BadResponse(None, "a reply nobody asked for")]
    reader = ResponseReader()
    reader.expect(rs.STORAGE)
    out = reader.feed(b"STORED\r\nSTORED\r\n")
    assert isinstance(out[0], Response) and out[1] == BadResponse(None, "a reply nobody asked for")


def test_bad_lines() -> None:
    assert bad(rs.RETRIEVAL, b"ENDD\r\n") == "unexpected reply line"
    assert bad(rs.STORAGE, b"STORED\n") == "line not ending in \\r\\n"
    assert bad(rs.STORAGE, b"\n") == "line not ending in \\r\\n"
    assert bad(rs.RETRIEVAL, b"VALUE k 0 x\r\n") == "unexpected reply line"
    assert bad(rs.RETRIEVAL, b"VALUE k 0 -1\r\n") == "unexpected reply line"
    assert bad(rs.RETRIEVAL, b"VALUE k 0 99999999999\r\n") == "unexpected reply line"
    assert bad(rs.RETRIEVAL, b"VALUE " + b"k" * 251 + b" 0 1\r\n") == "unexpected reply line"
    assert bad(rs.RETRIEVAL, b"VALUE k 0 1 2 3\r\n") == "unexpected reply line"
    assert bad(rs.RETRIEVAL, b"VALUE k 0 1\r\nxy\r\n") == "data block not ending in \\r\\n"
    assert bad(rs.META, b"VA 1\r\nxyz") == "data block not ending in \\r\\n"


def test_line_limit_whole_or_split() -> None:
    long_error = b"SERVER_ERROR " + b"x" * 3000 + b"\r\n"
    assert bad(rs.STORAGE, long_error) == "line too long"
    reader = ResponseReader(line_limit=100)
    reader.expect(rs.STORAGE)
    assert reader.feed(b"x" * 99) == [] and reader.buffered == 99
    assert reader.feed(b"x") == [BadResponse(rs.STORAGE, "line too long")]
    reader = ResponseReader(line_limit=100)
    reader.expect(rs.STORAGE)
    line = b"SERVER_ERROR " + b"x" * 85 + b"\r\n"
    assert len(line) == 100 and reader.feed(line[:99]) == []
    assert [r.status for r in reader.feed(line[99:])] == [b"SERVER_ERROR"]  # type: ignore[union-attr]


def test_large_value_in_many_reads_is_linear() -> None:
    value = bytes(range(256)) * 4096  # 1 MiB
    data = b"VALUE big 0 %d\r\n" % len(value) + value + b"\r\nEND\r\n"
    reader = ResponseReader()
    reader.expect(rs.RETRIEVAL)
    started = time.perf_counter()
    out: list[Result] = []
    for i in range(0, len(data), 1000):
        out += reader.feed(data[i:i + 1000])
        assert len(out) == (1 if i + 1000 >= len(data) else 0)
    elapsed = time.perf_counter() - started
    [r] = out
    assert isinstance(r, Response) and r.raw == data and bytes(r.values[0]) == data[:-5]
    assert reader.buffered == 0 and reader.pending == 0
    assert elapsed < 1.0  # quadratic copying would take far longer


def test_block_terminator_split_between_reads() -> None:
    data = b"VALUE k 0 3\r\nabc\r\nEND\r\n"
    cut = data.index(b"c\r\n") + 2  # between "\r" and "\n"
    [r] = read([rs.RETRIEVAL], data[:cut], data[cut:])
    assert isinstance(r, Response) and r.raw == data
    assert read([rs.RETRIEVAL], data[:cut], b"xEND\r\n") == [
        BadResponse(rs.RETRIEVAL, "data block not ending in \\r\\n")]


# -- any split of a stream parses the same ---------------------------------------------------

_text = st.binary(min_size=1, max_size=20).map(
    lambda b: bytes(c for c in b if c > 0x20 and c != 0x7F) or b"k")
_message = st.binary(max_size=30).map(lambda b: bytes(c for c in b if c not in b"\r\n"))
_error = st.one_of(st.just(b"ERROR\r\n"),
                   _message.map(lambda m: b"CLIENT_ERROR " + m + b"\r\n"),
                   _message.map(lambda m: b"SERVER_ERROR " + m + b"\r\n"))


@st.composite
def _value_block(draw: st.DrawFn) -> bytes:
    data = draw(st.binary(max_size=40) | st.sampled_from([b"\r\n", b"END\r\n", b"VALUE"]))
    cas = draw(st.none() | st.integers(0, 2**64 - 1))
    header = b"VALUE %b %d %d" % (draw(_text), draw(st.integers(0, 2**32 - 1)), len(data))
    if cas is not None:
        header += b" %d" % cas
    return header + b"\r\n" + data + b"\r\n"


@st.composite
def _response(draw: st.DrawFn) -> tuple[int, bytes, list[bytes]]:
    """(kind, the reply's bytes, its VALUE blocks)."""
    kind = draw(st.sampled_from([rs.STORAGE, rs.RETRIEVAL, rs.ARITH, rs.DELETE, rs.TOUCH,
                                 rs.VERSION, rs.META]))
    blocks: list[bytes] = []
    if kind == rs.RETRIEVAL:
        blocks = draw(st.lists(_value_block(), max_size=3))
    if draw(st.integers(0, 5)) == 0:
        return kind, b"".join(blocks) + draw(_error), blocks
    if kind == rs.STORAGE:
        line = draw(st.sampled_from([b"STORED", b"NOT_STORED", b"EXISTS", b"NOT_FOUND"]))
    elif kind == rs.RETRIEVAL:
        line = b"END"
    elif kind == rs.ARITH:
        line = draw(st.sampled_from([b"NOT_FOUND", b"%d" % draw(st.integers(0, 2**64 - 1)),
                                     b"0  "]))
    elif kind == rs.DELETE:
        line = draw(st.sampled_from([b"DELETED", b"NOT_FOUND"]))
    elif kind == rs.TOUCH:
        line = draw(st.sampled_from([b"TOUCHED", b"NOT_FOUND"]))
    elif kind == rs.VERSION:
        line = b"VERSION " + draw(_message)
    else:
        flags = b"".join(b" " + t for t in draw(st.lists(_text, max_size=3)))
        code = draw(st.sampled_from([b"VA", b"HD", b"EN", b"NF", b"NS", b"EX", b"MN", b"ME"]))
        if code == b"VA":
            data = draw(st.binary(max_size=40))
            return kind, b"VA %d%b\r\n%b\r\n" % (len(data), flags, data), blocks
        line = code + flags
    return kind, b"".join(blocks) + line + b"\r\n", blocks


def _split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({0, len(data), *(c % (len(data) + 1) for c in cuts)})
    return [data[a:b] for a, b in itertools.pairwise(points)]


def _summary(out: list[Result]) -> list[object]:
    return [(r.kind, r.status, r.raw, [bytes(v) for v in r.values]) if isinstance(r, Response)
            else r for r in out]


@settings(max_examples=400, deadline=None)
@given(st.lists(_response(), max_size=12), st.lists(st.integers(0, 10**6), max_size=20))
def test_any_split_parses_the_same(responses: list[tuple[int, bytes, list[bytes]]],
                                   cuts: list[int]) -> None:
    kinds = [kind for kind, _, _ in responses]
    stream = b"".join(raw for _, raw, _ in responses)
    whole = read(kinds, stream)
    assert all(isinstance(r, Response) for r in whole), whole
    assert [(r.kind, r.raw, [bytes(v) for v in r.values]) for r in whole] == responses  # type: ignore[union-attr]
    assert b"".join(r.raw for r in whole) == stream  # type: ignore[union-attr]
    assert _summary(read(kinds, *_split(stream, cuts))) == _summary(whole)
    assert _summary(read(kinds, *(stream[i:i + 1] for i in range(len(stream))))) == _summary(whole)


_kinds = st.lists(st.sampled_from([rs.STORAGE, rs.RETRIEVAL, rs.ARITH, rs.DELETE, rs.TOUCH,
                                   rs.VERSION, rs.META]), max_size=6)
_garbage_pieces = st.lists(st.sampled_from([
    b"\r\n", b"\n", b"\r", b" ", b"VALUE", b"VALUE k 0 3", b"VA 2", b"END", b"STORED", b"12",
    b"-1", b"HD", b"SERVER_ERROR", b"x", b"\x00", b"99999999999",
]) | st.binary(max_size=8), max_size=20)


@settings(max_examples=400, deadline=None)
@given(_kinds, _garbage_pieces, st.lists(st.integers(0, 10**6), max_size=10))
def test_garbage_never_raises_and_splits_the_same(kinds: list[int], pieces: list[bytes],
                                                   cuts: list[int]) -> None:
    data = b"".join(pieces)
    reader = ResponseReader(line_limit=64)
    for kind in kinds:
        reader.expect(kind)
    whole = reader.feed(data)
    assert sum(isinstance(r, BadResponse) for r in whole) <= 1
    assert not any(isinstance(r, BadResponse) for r in whole[:-1])
    split_reader = ResponseReader(line_limit=64)
    for kind in kinds:
        split_reader.expect(kind)
    split: list[Result] = []
    for chunk in _split(data, cuts):
        split += split_reader.feed(chunk)
    assert _summary(split) == _summary(whole)
    assert split_reader.broken == reader.broken


# -- differential: what memcached 1.6.18 really sends ----------------------------------------

@pytest.fixture(scope="module")
def memcached() -> Iterator[ServerProcess]:
    with start_memcached("-I", "1m") as mc:
        yield mc


_FENCE = b"".join(rq.meta(b"mg", b"fence-key", [b"k"]))
_FENCE_REPLY = b"EN kfence-key\r\n"


def _exchange(sock: socket.socket, request: bytes) -> bytes:
    """Send a request and a fence (a miss no reply can end like); return the reply bytes
    that came before the fence's."""
    data = ask(sock, request + _FENCE, _FENCE_REPLY)
    assert data.endswith(_FENCE_REPLY), data
    return data[:-len(_FENCE_REPLY)]


def _requests() -> list[tuple[bytes, int, bytes | None]]:
    """(request as requests.py writes it, kind expected, status expected; None: no reply)."""
    big = b"v" * 500_000
    j = b"".join
    return [
        (j(rq.storage(modes.SET, b"a", 5, 0, b"hello")), rs.STORAGE, b"STORED"),
        (j(rq.storage(modes.ADD, b"a", 0, 0, b"x")), rs.STORAGE, b"NOT_STORED"),
        (j(rq.storage(modes.REPLACE, b"nope", 0, 0, b"x")), rs.STORAGE, b"NOT_STORED"),
        (j(rq.storage(modes.APPEND, b"a", 0, 0, b"!")), rs.STORAGE, b"STORED"),
        (j(rq.storage(modes.PREPEND, b"a", 0, 0, b"<")), rs.STORAGE, b"STORED"),
        (j(rq.storage(modes.CAS, b"a", 0, 0, b"y", cas=999999)), rs.STORAGE, b"EXISTS"),
        (j(rq.storage(modes.CAS, b"nope", 0, 0, b"y", cas=1)), rs.STORAGE, b"NOT_FOUND"),
        (j(rq.storage(modes.SET, b"q", 0, 0, b"z", noreply=True)), rs.STORAGE, None),
        (j(rq.storage(modes.SET, b"bin", 1, 0, b"\r\nEND\r\n\x00")), rs.STORAGE, b"STORED"),
        (j(rq.storage(modes.SET, b"big", 0, 0, big)), rs.STORAGE, b"STORED"),
        (j(rq.storage(modes.SET, b"huge", 0, 0, big * 3)), rs.STORAGE, b"SERVER_ERROR"),
        (rq.retrieval([b"a", b"nope", b"bin", b"a"]), rs.RETRIEVAL, b"END"),
        (rq.retrieval([b"a", b"big"], with_cas=True), rs.RETRIEVAL, b"END"),
        (rq.retrieval([b"nope"]), rs.RETRIEVAL, b"END"),
        (rq.retrieval([b"a"], exptime=100), rs.RETRIEVAL, b"END"),
        (rq.retrieval([b"a"], with_cas=True, exptime=0), rs.RETRIEVAL, b"END"),
        (rq.retrieval([b"a", b"k" * 251]), rs.RETRIEVAL, b"CLIENT_ERROR"),
        (j(rq.storage(modes.SET, b"n", 0, 0, b"41")), rs.STORAGE, b"STORED"),
        (rq.arith(b"n", True, 1), rs.ARITH, rs.NUMBER),
        (rq.arith(b"n", False, 100), rs.ARITH, rs.NUMBER),
        (rq.arith(b"nope", True, 1), rs.ARITH, b"NOT_FOUND"),
        (rq.arith(b"a", True, 1), rs.ARITH, b"CLIENT_ERROR"),
        (rq.arith(b"n", True, 1, noreply=True), rs.ARITH, None),
        (rq.touch(b"a", 100), rs.TOUCH, b"TOUCHED"),
        (rq.touch(b"nope", 100), rs.TOUCH, b"NOT_FOUND"),
        (rq.delete(b"n"), rs.DELETE, b"DELETED"),
        (rq.delete(b"n"), rs.DELETE, b"NOT_FOUND"),
        (rq.VERSION, rs.VERSION, b"VERSION"),
        (j(rq.meta(b"ms", b"m", [b"T0", b"F3"], b"meta")), rs.META, b"HD"),
        (j(rq.meta(b"ms", b"m", [b"c", b"k", b"Oab"], b"meta")), rs.META, b"HD"),
        (j(rq.meta(b"ms", b"m", [b"C1"], b"x")), rs.META, b"EX"),
        (j(rq.meta(b"mg", b"m", [b"v", b"f", b"t", b"k", b"c", b"s"])), rs.META, b"VA"),
        (j(rq.meta(b"mg", b"m")), rs.META, b"HD"),
        (j(rq.meta(b"mg", b"nope", [b"k", b"Ox"])), rs.META, b"EN"),
        (j(rq.meta(b"mg", b"big", [b"v"])), rs.META, b"VA"),
        (j(rq.meta(b"ma", b"cnt", [b"N0", b"J5", b"v"])), rs.META, b"VA"),
        (j(rq.meta(b"ma", b"nope")), rs.META, b"NF"),
        (j(rq.meta(b"ms", b"m", [b"ME"], b"x")), rs.META, b"NS"),
        (j(rq.meta(b"md", b"m", [b"q"])), rs.META, None),
        (j(rq.meta(b"md", b"m")), rs.META, b"NF"),
        (j(rq.meta(b"me", b"a")), rs.META, b"ME"),
        (j(rq.meta(b"mg", b"a", [b"!"])), rs.META, b"CLIENT_ERROR"),
        (rq.MN, rs.META, b"MN"),
        (b"bogus\r\n", rs.STORAGE, b"ERROR"),
    ]


def test_memcached_replies_parse_exactly(memcached: ServerProcess) -> None:
    cases = _requests()
    with socket.create_connection(("127.0.0.1", memcached.port), timeout=5) as sock:
        sent: list[tuple[int, bytes]] = []  # for the pipelined replay below
        for request, kind, status in cases:
            reply = _exchange(sock, request)
            if status is None:
                assert reply == b"", request
                continue
            r = one(kind, reply)
            assert r.status == status, (request, reply[:200])
            sent.append((kind, reply))
        # The same replies, pipelined in one stream and fed as memcached's reads came.
        stream = b"".join(reply for _, reply in sent)
        out = read([kind for kind, _ in sent], *_split(stream, list(range(0, len(stream), 1448))))
        assert [r.raw for r in out if isinstance(r, Response)] == [reply for _, reply in sent]


def test_memcached_multiget_blocks(memcached: ServerProcess) -> None:
    """A multi-get merge needs each VALUE block as memcached framed it."""
    with socket.create_connection(("127.0.0.1", memcached.port), timeout=5) as sock:
        for key in (b"x1", b"x2"):
            assert _exchange(sock, b"".join(rq.storage(modes.SET, key, 9, 0, key * 3))) \
                == b"STORED\r\n"
        reply = _exchange(sock, rq.retrieval([b"x1", b"missing", b"x2"], with_cas=True))
    r = one(rs.RETRIEVAL, reply)
    assert r.end and [bytes(v).split(b"\r\n")[1] for v in r.values] == [b"x1x1x1", b"x2x2x2"]
    assert b"".join(r.values) + b"END\r\n" == reply
