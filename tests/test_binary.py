"""The binary protocol: ``BinaryParser`` on bytes, and quiet opcodes against real memcached."""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import Iterator
from contextlib import closing

import pytest
from helpers import frame, response_frames
from hypothesis import given, settings
from hypothesis import strategies as st
from procs import HOST, ServerProcess, start_memcached, start_trio_mc

from trio_mc.protocol import binary as bp
from trio_mc.protocol import commands as cmd
from trio_mc.protocol.binary import BinaryParser

ITEM_SIZE_MAX = 1024
#: Values declared longer than this are answered from the header and never buffered.
LARGEST_KEPT = ITEM_SIZE_MAX + 1024

SET_EXTRAS = struct.pack(">II", 5, 0)  # flags, exptime


def parse(data: bytes) -> list[cmd.Command]:
    return BinaryParser(item_size_max=ITEM_SIZE_MAX).feed(data)


def _fields(c: cmd.Command) -> tuple[int, bytes, bytes, bytes, int, int, int, bool]:
    assert isinstance(c, cmd.Binary), c
    return c.opcode, c.key, c.extras, c.value, c.cas, c.opaque, c.bodylen, c.too_large


_STREAM = b"".join([
    frame(bp.SET, b"k", SET_EXTRAS, b"hello", cas=9, opaque=1),
    frame(bp.GETK, b"k", opaque=2),
    frame(0x09, b"miss", opaque=3),  # getq
    frame(bp.INCREMENT, b"n", struct.pack(">QQI", 1, 10, 0), opaque=4),
    frame(bp.SET, b"big", SET_EXTRAS, b"x" * (LARGEST_KEPT + 1), opaque=5),  # swallowed
    frame(bp.APPEND, b"k", value=b"!", opaque=6),
    frame(bp.NOOP, opaque=7),
])
_EXPECTED = [
    (bp.SET, b"k", SET_EXTRAS, b"hello", 9, 1, 8 + 1 + 5, False),
    (bp.GETK, b"k", b"", b"", 0, 2, 1, False),
    (0x09, b"miss", b"", b"", 0, 3, 4, False),
    (bp.INCREMENT, b"n", struct.pack(">QQI", 1, 10, 0), b"", 0, 4, 20 + 1, False),
    (bp.SET, b"big", SET_EXTRAS, b"", 0, 5, 8 + 3 + LARGEST_KEPT + 1, True),
    (bp.APPEND, b"k", b"", b"!", 0, 6, 2, False),
    (bp.NOOP, b"", b"", b"", 0, 7, 0, False),
]


def test_a_stream_of_frames_gives_each_frames_fields() -> None:
    assert [_fields(c) for c in parse(_STREAM)] == _EXPECTED


def test_frames_split_at_every_byte_give_the_same_commands() -> None:
    whole = parse(_STREAM)
    for cut in range(len(_STREAM) + 1):
        p = BinaryParser(item_size_max=ITEM_SIZE_MAX)
        assert p.feed(_STREAM[:cut]) + p.feed(_STREAM[cut:]) == whole, cut
    p = BinaryParser(item_size_max=ITEM_SIZE_MAX)
    one_by_one = [c for i in range(len(_STREAM)) for c in p.feed(_STREAM[i:i + 1])]
    assert one_by_one == whole and p.buffered == 0


_frames = st.lists(st.tuples(
    st.sampled_from(sorted({bp.GET, bp.SET, bp.DELETE, bp.INCREMENT, bp.NOOP, bp.STAT, bp.TOUCH,
                            *bp.QUIET})),
    st.binary(max_size=30), st.binary(max_size=20),
    st.binary(max_size=40) | st.integers(LARGEST_KEPT - 2, LARGEST_KEPT + 40).map(b"z".__mul__),
    st.integers(0, 2**64 - 1), st.integers(0, 2**32 - 1),
), min_size=1, max_size=6)


@settings(max_examples=200, deadline=None)
@given(_frames, st.data())
def test_any_frames_at_any_cuts_parse_to_their_fields(
    frames: list[tuple[int, bytes, bytes, bytes, int, int]], data: st.DataObject,
) -> None:
    stream = b"".join(frame(op, key, extras, value, cas, opaque) for op, key, extras, value, cas, opaque in frames)
    expected = [
        (op, key, extras, b"" if len(value) > LARGEST_KEPT else value, cas, opaque,
         len(extras) + len(key) + len(value), len(value) > LARGEST_KEPT)
        for op, key, extras, value, cas, opaque in frames
    ]
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=8)))
    p = BinaryParser(item_size_max=ITEM_SIZE_MAX)
    got: list[cmd.Command] = []
    for start, end in zip([0, *cuts], [*cuts, len(stream)]):
        got += p.feed(stream[start:end])
    assert [_fields(c) for c in got] == expected
    assert p.buffered == 0 and p.state == "conn_waiting"


def test_bad_magic_closes_after_the_good_frames() -> None:
    p = BinaryParser(item_size_max=ITEM_SIZE_MAX)
    response_magic = bytes([bp.RESPONSE_MAGIC]) + frame(bp.NOOP)[1:]
    out = p.feed(frame(bp.NOOP, opaque=1) + response_magic + frame(bp.NOOP, opaque=2))
    assert [_fields(c) for c in out[:1]] == [(bp.NOOP, b"", b"", b"", 0, 1, 0, False)]
    assert out[1:] == [cmd.Close("bad binary magic")]
    assert p.closed and p.buffered == 0
    assert p.feed(frame(bp.NOOP)) == []  # nothing more is read


def test_bad_magic_is_seen_only_with_a_whole_header() -> None:
    p = BinaryParser(item_size_max=ITEM_SIZE_MAX)
    garbage = b"GET / HTTP/1.1\r\nHost: x\r\n"
    assert p.feed(garbage[:23]) == [] and p.state == "conn_waiting" and p.buffered == 23
    assert p.feed(garbage[23:]) == [cmd.Close("bad binary magic")]


def test_too_large_value_is_swallowed_not_buffered() -> None:
    p = BinaryParser(item_size_max=ITEM_SIZE_MAX)
    value = b"x" * (LARGEST_KEPT + 1)
    big = frame(bp.SET, b"big", SET_EXTRAS, value, opaque=5)
    head = 24 + len(SET_EXTRAS) + 3
    out = p.feed(big[:head + 10])
    assert [_fields(c) for c in out] == [(bp.SET, b"big", SET_EXTRAS, b"", 0, 5, head - 24 + len(value), True)]
    assert p.state == "conn_swallow" and p.buffered == 0
    assert p.feed(big[head + 10:-1]) == [] and p.state == "conn_swallow" and p.buffered == 0
    out = p.feed(big[-1:] + frame(bp.GET, b"k", opaque=6))
    assert [_fields(c) for c in out] == [(bp.GET, b"k", b"", b"", 0, 6, 1, False)]
    assert p.state == "conn_waiting"


def test_too_large_waits_for_the_extras_and_key() -> None:
    p = BinaryParser(item_size_max=ITEM_SIZE_MAX)
    big = frame(bp.SET, b"big", SET_EXTRAS, b"x" * (LARGEST_KEPT + 1))
    assert p.feed(big[:24 + 8 + 2]) == [] and p.state == "conn_nread"
    [c] = p.feed(big[24 + 8 + 2:24 + 8 + 3])
    assert _fields(c)[1:3] == (b"big", SET_EXTRAS) and _fields(c)[7]


def test_largest_kept_value_is_buffered_whole() -> None:
    value = b"y" * LARGEST_KEPT
    [c] = parse(frame(bp.SET, b"k", SET_EXTRAS, value))
    assert _fields(c)[3] == value and not _fields(c)[7]


def test_quiet_opcodes_map_to_their_loud_base() -> None:
    assert {q: bp.QUIET[q] for q in sorted(bp.QUIET)} == {
        0x09: bp.GET, 0x0D: bp.GETK, 0x11: bp.SET, 0x12: bp.ADD, 0x13: bp.REPLACE, 0x14: bp.DELETE,
        0x15: bp.INCREMENT, 0x16: bp.DECREMENT, 0x17: bp.QUIT, 0x18: bp.FLUSH, 0x19: bp.APPEND,
        0x1A: bp.PREPEND, 0x1E: bp.GAT, 0x24: bp.GATK,
    }


# -- quiet opcodes: the same bytes to memcached and to trio-mc ---------------------------------

def _quiet_session() -> bytes:
    """Each quiet opcode on success, on a miss and on an error, then noop and quitq."""
    arith = struct.Struct(">QQI")  # delta, initial, exptime
    return b"".join([
        frame(0x11, b"k1", SET_EXTRAS, b"v1", opaque=1),  # setq: silent
        frame(0x09, b"k1", opaque=2),  # getq hit: answered
        frame(0x0D, b"nope", opaque=3),  # getkq miss: silent
        frame(0x09, b"nope", opaque=4),  # getq miss: silent
        frame(0x12, b"k1", SET_EXTRAS, b"x", opaque=5),  # addq on an existing key: error
        frame(0x12, b"k2", SET_EXTRAS, b"x", opaque=6),  # addq: silent
        frame(0x13, b"nope", SET_EXTRAS, b"x", opaque=7),  # replaceq miss: not found
        frame(0x19, b"k1", value=b"++", opaque=8),  # appendq: silent
        frame(0x1A, b"nope", value=b"--", opaque=9),  # prependq miss: error
        frame(0x15, b"n", arith.pack(1, 10, 0), opaque=10),  # incrq creates: silent
        frame(0x15, b"n", arith.pack(5, 0, 0), opaque=11),  # incrq: silent
        frame(0x16, b"k1", arith.pack(1, 0, 0), opaque=12),  # decrq on a non-number: error
        frame(0x16, b"nope", arith.pack(1, 0, 0xFFFFFFFF), opaque=13),  # decrq miss, no create: error
        frame(bp.GETK, b"n", opaque=14),  # loud: 15
        frame(0x14, b"k2", opaque=15),  # deleteq: silent
        frame(0x14, b"k2", opaque=16),  # deleteq miss: error
        frame(0x1E, b"k1", struct.pack(">I", 100), opaque=17),  # gatq hit: answered
        frame(0x24, b"nope", struct.pack(">I", 100), opaque=18),  # gatkq miss: silent
        frame(0x11, b"k1", SET_EXTRAS, b"v2", cas=12345, opaque=19),  # setq, wrong cas: error
        frame(0x11, b"k1", SET_EXTRAS, b"v" * 2_000_000, opaque=20),  # setq too large: error
        frame(0x18, opaque=21),  # flushq: silent
        frame(0x09, b"k1", opaque=22),  # getq after the flush: silent
        frame(bp.NOOP, opaque=23),
        frame(0x17, opaque=24),  # quitq: closes without a reply
    ])


def _replies(server: ServerProcess, request: bytes) -> bytes:
    """Everything the server sends until it closes (bounded: 10 s)."""
    with closing(socket.create_connection((HOST, server.port), timeout=10)) as s:
        s.sendall(request)
        data = b""
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
        return data


@pytest.fixture(scope="module")
def servers() -> Iterator[tuple[ServerProcess, ServerProcess]]:
    with start_memcached() as memcached, start_trio_mc() as trio_mc:
        yield memcached, trio_mc


def test_quiet_opcodes_answer_as_memcached(servers: tuple[ServerProcess, ServerProcess]) -> None:
    memcached, trio_mc = servers
    session = _quiet_session()
    expected = _replies(memcached, session)
    # memcached answers hits, errors and noop; quiet successes and misses say nothing.
    assert [(r.opaque, r.opcode, r.status) for r in response_frames(expected)] == [
        (2, 0x09, bp.SUCCESS), (5, 0x12, bp.KEY_EEXISTS), (7, 0x13, bp.KEY_ENOENT),
        (9, 0x1A, bp.NOT_STORED), (12, 0x16, bp.DELTA_BADVAL), (13, 0x16, bp.KEY_ENOENT),
        (14, bp.GETK, bp.SUCCESS), (16, 0x14, bp.KEY_ENOENT), (17, 0x1E, bp.SUCCESS),
        (19, 0x11, bp.KEY_EEXISTS), (20, 0x11, bp.E2BIG), (23, bp.NOOP, bp.SUCCESS),
    ]
    assert _replies(trio_mc, session) == expected
