"""The sans-IO parser: bytes in, commands out, no I/O and no clock."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from trio_mc.numbers import safe_strtol, safe_strtoul, safe_strtoull
from trio_mc.modes import SET
from trio_mc.protocol import commands as cmd
from trio_mc.protocol import replies
from trio_mc.protocol.parser import Parser


def parse(data: bytes, **kw: object) -> list[cmd.Command]:
    return Parser(**kw).feed(data)  # type: ignore[arg-type]


def test_storage_command_with_data_block() -> None:
    [c] = parse(b"set k 5 10 3\r\nabc\r\n")
    assert c == cmd.Store(SET, b"k", 5, 10, b"abc\r\n", 0, False)


def test_cas_and_noreply() -> None:
    [c] = parse(b"cas k 0 0 1 77 noreply\r\nx\r\n")
    assert isinstance(c, cmd.Store) and c.cas == 77 and c.noreply


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
    [c] = parse(b"set a 4294967296 4294967296 4294967299\r\nabc\r\n")
    assert isinstance(c, cmd.Store)
    assert (c.flags, c.exptime, c.data) == (0, 0, b"abc\r\n")
    [c] = parse(b"set a 0 2147483648 1\r\nx\r\n")
    assert isinstance(c, cmd.Store) and c.exptime == -(2**31)


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


@settings(max_examples=500, deadline=None)
@given(st.lists(st.binary(max_size=200), max_size=8))
def test_garbage_never_raises(chunks: list[bytes]) -> None:
    p = Parser(item_size_max=4096)
    for chunk in chunks:
        for c in p.feed(chunk):
            assert isinstance(c, cmd.Command.__args__)  # type: ignore[attr-defined]
    assert p.buffered <= sum(map(len, chunks))


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=" 0123456789-+abc\t", max_size=12).map(str.encode))
def test_numbers_never_raise(token: bytes) -> None:
    for fn in (safe_strtol, safe_strtoul, safe_strtoull):
        value = fn(token)
        assert value is None or isinstance(value, int)
