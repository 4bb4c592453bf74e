"""Request writers: exact bytes, and every request written parses back to its command."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trio_mc.protocol import commands as cmd
from trio_mc.protocol import requests as rq
from trio_mc import modes
from trio_mc.protocol.parser import Parser


def test_retrieval_lines() -> None:
    assert rq.retrieval([b"a"]) == b"get a\r\n"
    assert rq.retrieval([b"a", b"b"], with_cas=True) == b"gets a b\r\n"
    assert rq.retrieval([b"a"], exptime=-1) == b"gat -1 a\r\n"
    assert rq.retrieval([b"a", b"c"], with_cas=True, exptime=30) == b"gats 30 a c\r\n"


def test_storage_keeps_the_value_apart() -> None:
    value = memoryview(b"..hello..")[2:7]
    pieces = rq.storage(modes.SET, b"k", 5, 10, value)
    assert pieces[1] is value  # not copied
    assert b"".join(pieces) == b"set k 5 10 5\r\nhello\r\n"
    assert b"".join(rq.storage(modes.CAS, b"k", 0, 0, b"x", cas=77, noreply=True)) \
        == b"cas k 0 0 1 77 noreply\r\nx\r\n"
    assert rq.storage_line(modes.PREPEND, b"k", 0, 0, 3) == b"prepend k 0 0 3\r\n"


def test_single_key_commands() -> None:
    assert rq.arith(b"n", True, 2**64 - 1) == b"incr n 18446744073709551615\r\n"
    assert rq.arith(b"n", False, 1, noreply=True) == b"decr n 1 noreply\r\n"
    assert rq.delete(b"k") == b"delete k\r\n"
    assert rq.delete(b"k", noreply=True) == b"delete k noreply\r\n"
    assert rq.touch(b"k", 100) == b"touch k 100\r\n"
    assert rq.VERSION == b"version\r\n" and rq.MN == b"mn\r\n"


def test_meta_commands() -> None:
    assert rq.meta(b"mg", b"k", [b"v", b"t"]) == [b"mg k v t\r\n"]
    assert b"".join(rq.meta(b"ms", b"k", [b"T30"], b"abc")) == b"ms k 3 T30\r\nabc\r\n"
    assert rq.meta(b"me", b"k") == [b"me k\r\n"]


def test_write_refuses_what_is_not_forwarded() -> None:
    with pytest.raises(ValueError):
        rq.write(cmd.Stats([]))


def test_multiget_fragment_is_the_keys_of_one_server() -> None:
    """What the proxy sends one backend for ``get a b c`` when b lives elsewhere."""
    [whole] = Parser().feed(b"gets a b c\r\n")
    assert isinstance(whole, cmd.Get)
    fragment = rq.retrieval([k for k in whole.keys if k != b"b"], whole.with_cas, whole.exptime)
    assert Parser().feed(fragment) == [cmd.Get([b"a", b"c"], True)]


# -- round trip: every request written parses to the command it was written from ------------

_key = st.binary(min_size=1, max_size=250).map(
    lambda b: bytes(c for c in b if c > 0x20 and c != 0x7F) or b"k")
_u32 = st.integers(0, 2**32 - 1)
_i32 = st.integers(-(2**31), 2**31 - 1)
_u64 = st.integers(0, 2**64 - 1)
_noreply = st.booleans()

_get = st.builds(cmd.Get, st.lists(_key, min_size=1, max_size=5), st.booleans(),
                 st.none() | _i32).map(
    # A plain single-key get parses to its key (cmd.GetKey).
    lambda g: g.keys[0] if len(g.keys) == 1 and not g.with_cas and g.exptime is None else g)
_store = st.builds(
    lambda mode, key, flags, exptime, data, cas, noreply: cmd.Store(
        mode, key, flags, exptime, data + b"\r\n", cas if mode == modes.CAS else 0, noreply),
    st.sampled_from(sorted(modes.NAMES)), _key, _u32, _i32, st.binary(max_size=100), _u64, _noreply)
_arith = st.builds(cmd.Arith, _key, st.booleans(), _u64, _noreply)
_delete = st.builds(cmd.Delete, _key, _noreply)
_touch = st.builds(cmd.Touch, _key, _i32, _noreply)


@settings(max_examples=500, deadline=None)
@given(st.lists(_get | _store | _arith | _delete | _touch | st.just(cmd.Version()),
                min_size=1, max_size=8))
def test_written_commands_parse_back(commands: list[cmd.Command]) -> None:
    stream = b"".join(piece for c in commands for piece in rq.write(c))
    assert Parser().feed(stream) == commands


# Meta flags with a valid token for each command (memcached's rules, meta.FLAGS).
_META_FLAGS = {
    b"mg": [b"v", b"f", b"t", b"k", b"c", b"s", b"h", b"l", b"q", b"u", b"T30", b"N10",
            b"R5", b"Oab"],
    b"ms": [b"c", b"k", b"q", b"T0", b"F7", b"C12", b"I", b"MS", b"ME", b"MA", b"Ox"],
    b"md": [b"k", b"q", b"C3", b"I", b"T9", b"x", b"O1"],
    b"ma": [b"v", b"t", b"k", b"c", b"q", b"N0", b"J5", b"D2", b"MI", b"MD", b"T1", b"Oz"],
}


@st.composite
def _meta_request(draw: st.DrawFn) -> bytes:
    name = draw(st.sampled_from(sorted(_META_FLAGS)))
    choices = _META_FLAGS[name]
    # One flag per letter: memcached refuses a repeated flag.
    picked = draw(st.lists(st.sampled_from(choices), max_size=6, unique_by=lambda t: t[0]))
    key = draw(_key)
    if draw(st.booleans()):
        key = base64.b64encode(draw(st.binary(min_size=1, max_size=180)))
        picked.append(b"b")
    value = draw(st.binary(max_size=50)) if name == b"ms" else None
    return b"".join(rq.meta(name, key, picked, value))


@settings(max_examples=500, deadline=None)
@given(st.lists(_meta_request(), min_size=1, max_size=6))
def test_meta_requests_parse_and_write_back_the_same(requests: list[bytes]) -> None:
    parsed = Parser().feed(b"".join(requests))
    assert len(parsed) == len(requests) and all(isinstance(m, cmd.Meta) for m in parsed), parsed
    assert [b"".join(rq.write(m)) for m in parsed] == requests
