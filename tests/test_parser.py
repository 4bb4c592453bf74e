"""The sans-IO parser: bytes in, commands out, no I/O and no clock."""

from __future__ import annotations

import ctypes
import errno
from collections.abc import Callable

from hypothesis import given, settings
from hypothesis import strategies as st

from trio_mc.modes import CAS, SET
from trio_mc.numbers import safe_strtol, safe_strtoll, safe_strtoul, safe_strtoull
from trio_mc.protocol import commands as cmd
from trio_mc.protocol import replies
from trio_mc.protocol.parser import Parser


def parse(data: bytes, **kw: object) -> list[cmd.Command]:
    return Parser(**kw).feed(data)  # type: ignore[arg-type]


def test_storage_command_with_data_block() -> None:
    [c] = parse(b"set k 5 10 3\r\nabc\r\n")
    assert c == cmd.Store(SET, b"k", 5, 10, b"abc\r\n", 0, False)


def test_cas_and_noreply() -> None:
    assert parse(b"cas k 0 0 1 77 noreply\r\nx\r\n") == [cmd.Store(CAS, b"k", 0, 0, b"x\r\n", 77, True)]


def test_get_many_keys_and_gat() -> None:
    assert parse(b"get a b c\r\n") == [cmd.Get([b"a", b"b", b"c"], False)]
    assert parse(b"gats 100 a\r\n") == [cmd.Get([b"a"], True, 100)]
    assert parse(b"gat 100\r\n") == [cmd.Get([], False, 100)]  # memcached answers END


def test_multiple_spaces_collapse_and_bare_newline() -> None:
    assert parse(b"get   a  b\n") == [cmd.Get([b"a", b"b"], False)]


def test_tab_is_not_a_separator_and_names_are_case_sensitive() -> None:
    assert parse(b"get\tfoo\r\nGET foo\r\n") == [cmd.Reply(replies.ERROR)] * 2


def test_key_length_limit() -> None:
    assert parse(b"get " + b"k" * 250 + b"\r\n") == [b"k" * 250]  # a plain single-key get is its key
    assert parse(b"get a " + b"k" * 251 + b"\r\n") == [cmd.Reply(replies.CLIENT_ERROR_FORMAT)]


def test_wrong_token_count_is_error_and_data_is_then_a_command() -> None:
    out = parse(b"set k 0 0\r\nhello\r\n")
    assert out == [cmd.Reply(replies.ERROR), cmd.Reply(replies.ERROR)]


def test_bad_numbers_and_noreply_silences_the_error() -> None:
    assert parse(b"set k -1 0 1\r\n") == [cmd.Reply(replies.CLIENT_ERROR_FORMAT)]
    assert parse(b"set k x 0 1 noreply\r\n") == []
    assert parse(b"incr k -1\r\n") == [cmd.Reply(replies.CLIENT_ERROR_DELTA)]
    assert parse(b"touch k x\r\n") == [cmd.Reply(replies.CLIENT_ERROR_EXPTIME)]


def test_32_bit_truncation_quirks() -> None:
    # flags and exptime are stored into 32 bits, the length too (4294967299 -> 3).
    assert parse(b"set a 4294967296 4294967296 4294967299\r\nabc\r\n") == [
        cmd.Store(SET, b"a", 0, 0, b"abc\r\n", 0, False)]
    assert parse(b"set a 0 2147483648 1\r\nx\r\n") == [
        cmd.Store(SET, b"a", 0, -(2**31), b"x\r\n", 0, False)]


def test_bad_data_chunk() -> None:
    out = parse(b"set k 0 0 1\r\nxyz\r\nget k\r\n")
    # "xyz" is one byte too long: 3 bytes consumed (x, y, z), "\r\n" starts a blank line.
    assert out[0] == cmd.Reply(replies.CLIENT_ERROR_BAD_CHUNK)
    assert out[-1] == b"k"


def test_too_large_is_swallowed_without_buffering() -> None:
    p = Parser(item_size_max=1024)
    out = p.feed(b"set k 0 0 5000\r\n" + b"x" * 1000)
    assert out == [cmd.TooLarge(SET, b"k", False)]
    assert p.state == "conn_swallow" and p.buffered == 0
    assert p.feed(b"x" * 4002 + b"get k\r\n") == [b"k"]


def test_item_size_rule_matches_memcached() -> None:
    # 48 + 8 (cas) + key+1 + value+2 <= 1 MiB: 1048516 fits with a 1-byte key.
    assert parse(b"set k 0 0 1048516\r\n") == []  # accepted: waiting for its data
    assert parse(b"set k 0 0 1048517\r\n") == [cmd.TooLarge(SET, b"k", False)]
    assert parse(b"set k 0 0 1048524\r\n", use_cas=False) == []


def test_delete_forms() -> None:
    assert parse(b"delete k 0\r\n") == [cmd.Delete(b"k", False)]
    assert parse(b"delete k 0 noreply\r\n") == [cmd.Delete(b"k", True)]
    assert parse(b"delete k 10\r\n") == [cmd.Reply(replies.CLIENT_ERROR_DELETE_USAGE)]


def test_flush_all_forms() -> None:
    assert parse(b"flush_all\r\n") == [cmd.FlushAll(0, False)]
    assert parse(b"flush_all 10 noreply\r\n") == [cmd.FlushAll(10, True)]
    assert parse(b"flush_all noreply extra\r\n") == [cmd.FlushAll(None, False)]
    assert parse(b"flush_all 0 0\r\n") == [cmd.FlushAll(0, False)]


def test_quit_stops_parsing() -> None:
    p = Parser()
    assert p.feed(b"version\r\nquit\r\nget a\r\n") == [cmd.Version(), cmd.Quit()]
    assert p.closed and p.feed(b"get a\r\n") == []


def test_http_request_closes_but_not_in_a_command_family() -> None:
    assert parse(b"GET / HTTP/1.1\r\n") == [cmd.Close("HTTP request")]
    assert parse(b"sget / HTTP/1.1\r\n") == [cmd.Reply(replies.ERROR)]


def test_long_line_without_newline() -> None:
    p = Parser()
    assert p.feed(b"x" * 2049) == [cmd.Close("line too long")]
    p = Parser()
    assert p.feed(b"get " + b"k " * 2000) == []  # a multiget may be long
    assert p.feed(b"\r\n") == [cmd.Get([b"k"] * 2000, False)]


def test_nul_ends_the_command_line() -> None:
    assert parse(b"get a\0b\r\n") == [cmd.Get([b"a"], False)]


def test_number_parsing_is_c_like() -> None:
    assert safe_strtoull(b"18446744073709551615") == 2**64 - 1
    assert safe_strtoull(b"18446744073709551616") is None
    assert safe_strtoull(b"-1") is None and safe_strtoull(b"-0") == 0
    assert safe_strtoull(b"1_000") is None and safe_strtoull(b"12abc") is None
    assert safe_strtoull(b"1 2\r\n") == 1 and safe_strtoull(b"  7\r\n") == 7
    assert safe_strtoul(b"4294967297") == 1
    assert safe_strtol(b"+5") == 5 and safe_strtol(b"-0") == 0


# -- properties -------------------------------------------------------------------------------

_keys = st.binary(min_size=1, max_size=20).map(lambda b: bytes(c % 26 + 97 for c in b))
_values = st.binary(max_size=300)


@st.composite
def _valid_commands(draw: st.DrawFn) -> bytes:
    key = draw(_keys)
    kind = draw(st.sampled_from(["set", "cas", "get", "incr", "delete", "touch", "version", "mn"]))
    if kind == "set":
        value = draw(_values)
        return b"set %b %d %d %d\r\n%b\r\n" % (key, draw(st.integers(0, 2**32 - 1)), 0, len(value), value)
    if kind == "cas":
        value = draw(_values)
        return b"cas %b 0 0 %d %d\r\n%b\r\n" % (key, len(value), draw(st.integers(0, 2**64 - 1)), value)
    if kind == "get":
        return b"get %b %b\r\n" % (key, draw(_keys))
    if kind == "incr":
        return b"incr %b %d\r\n" % (key, draw(st.integers(0, 2**64 - 1)))
    if kind == "delete":
        return b"delete %b\r\n" % key
    if kind == "touch":
        return b"touch %b %d\r\n" % (key, draw(st.integers(-(2**31), 2**31 - 1)))
    return kind.encode() + b"\r\n"


@settings(max_examples=300, deadline=None)
@given(st.lists(_valid_commands(), min_size=1, max_size=12), st.data())
def test_any_split_parses_the_same(stream: list[bytes], data: st.DataObject) -> None:
    whole = b"".join(stream)
    expected = Parser().feed(whole)
    assert len(expected) == len(stream)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(whole)), max_size=10)))
    p = Parser()
    got: list[cmd.Command] = []
    start = 0
    for cut in [*cuts, len(whole)]:
        got += p.feed(whole[start:cut])
        start = cut
    assert got == expected


_FRAGMENTS = [b"get a\r\n", b"set k 0 0 3\r\n", b"abc\r\n", b"\r\n", b"\n", b"mg k v\r\n", b"ms k 2\r\n",
              b"x" * 300, b"quit\r\n", b" ", b"GET / HTTP/1.1\r\n", b"set k 0 0 5000\r\n"]


@settings(max_examples=500, deadline=None)
@given(st.lists(st.binary(max_size=200) | st.sampled_from(_FRAGMENTS), max_size=10))
def test_garbage_in_any_chunks_parses_as_in_one_piece(chunks: list[bytes]) -> None:
    p = Parser(item_size_max=4096)
    got = [c for chunk in chunks for c in p.feed(chunk)]
    assert got == Parser(item_size_max=4096).feed(b"".join(chunks))
    assert p.buffered <= sum(map(len, chunks))


# -- numbers: memcached's safe_strto* wrappers around the C library's own strto* --------------

_libc = ctypes.CDLL(None, use_errno=True)
#: Our function -> (the libc function under memcached's wrapper, whether it is unsigned).
#: long and long long are both 64 bits here (LP64 Linux).
_STRTO: dict[Callable[[bytes], int | None], tuple[str, bool]] = {
    safe_strtoull: ("strtoull", True),
    safe_strtoul: ("strtoul", True),
    safe_strtoll: ("strtoll", False),
    safe_strtol: ("strtol", False),
}


def _memcached_safe_strto(fn: Callable[[bytes], int | None], token: bytes) -> int | None:
    """memcached's util.c on top of libc: no digits or ERANGE fail; the number must end the
    string or be followed by white space; a value that is negative as a signed number fails
    if the string holds a '-' (unsigned); the 32-bit variants store into 32 bits."""
    name, unsigned = _STRTO[fn]
    strto = getattr(_libc, name)
    strto.restype = ctypes.c_uint64 if unsigned else ctypes.c_int64
    strto.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_void_p), ctypes.c_int]
    buf = ctypes.create_string_buffer(token)
    end = ctypes.c_void_p()
    ctypes.set_errno(0)
    value = int(strto(ctypes.addressof(buf), ctypes.byref(end), 10))
    consumed = (end.value or 0) - ctypes.addressof(buf)
    if ctypes.get_errno() == errno.ERANGE or consumed == 0:
        return None
    rest = token[consumed:]
    if rest and not rest[:1].isspace():
        return None
    if unsigned and value >= 2**63 and b"-" in token:
        return None
    if fn is safe_strtoul:
        return value & 0xFFFFFFFF
    if fn is safe_strtol:
        return (value + 2**31) % 2**32 - 2**31
    return value


_long_numbers = st.tuples(
    st.sampled_from(["", " ", "\t", "+", "-", " -", "00"]), st.integers(0, 2**65),
    st.sampled_from(["", " ", "\t", "\r\n", " 5", "x", "+", "_0"]),
).map(lambda t: f"{t[0]}{t[1]}{t[2]}".encode())


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(list(_STRTO)),
       st.text(alphabet=" 0123456789-+abc\t\n\v\f\r", max_size=12).map(str.encode) | _long_numbers)
def test_numbers_are_parsed_as_memcacheds_safe_strto(fn: Callable[[bytes], int | None], token: bytes) -> None:
    assert fn(token) == _memcached_safe_strto(fn, token)
