"""Meta commands over an in-memory connection, with Trio's MockClock for TTL behaviour."""

from __future__ import annotations

import re

import trio
import trio.testing
from helpers import ClientFactory
from hypothesis import given, settings
from hypothesis import strategies as st

from trio_mc.protocol import commands as cmd
from trio_mc.protocol import replies
from trio_mc.protocol.parser import Parser


async def test_ttl_flags_follow_the_clock(connect: ClientFactory, autojump_clock: trio.testing.MockClock) -> None:
    c = await connect()
    assert await c.ask(b"ms k 2 T100\r\nhi\r\n") == b"HD\r\n"
    await trio.sleep(40)
    assert await c.ask(b"mg k t v\r\n", b"hi\r\n") == b"VA 2 t60\r\nhi\r\n"
    assert await c.ask(b"mg k t t\r\n") == b"CLIENT_ERROR duplicate flag\r\n"
    assert await c.ask(b"mg k T10\r\n") == b"HD\r\n"
    await trio.sleep(11)
    assert await c.ask(b"mg k v\r\n") == b"EN\r\n"


async def test_t_before_and_after_T(connect: ClientFactory, autojump_clock: trio.testing.MockClock) -> None:
    c = await connect()
    await c.ask(b"ms k 1 T100\r\nx\r\n")
    assert await c.ask(b"mg k t T10\r\n") == b"HD t100\r\n"
    assert await c.ask(b"mg k T50 t\r\n") == b"HD t50\r\n"
    assert await c.ask(b"ms n 1\r\nx\r\n") == b"HD\r\n"
    assert await c.ask(b"mg n t\r\n") == b"HD t-1\r\n"


async def test_recache_win_and_stale_invalidation(connect: ClientFactory, autojump_clock: trio.testing.MockClock) -> None:
    a = await connect()
    b = await connect()
    await a.ask(b"ms k 1 T100\r\nx\r\n")
    assert await a.ask(b"mg k R30 v\r\n", b"x\r\n") == b"VA 1\r\nx\r\n"  # 100s left: no win
    await trio.sleep(75)
    assert await a.ask(b"mg k R30 v\r\n", b"x\r\n") == b"VA 1 W\r\nx\r\n"  # 25s left: a wins
    assert await b.ask(b"mg k R30 v\r\n", b"x\r\n") == b"VA 1 Z\r\nx\r\n"  # b sees it taken
    # Invalidate: the item stays, marked stale; the next reader wins the recache.
    assert await a.ask(b"md k I T30\r\n") == b"HD\r\n"
    assert await b.ask(b"mg k v c\r\n", b"x\r\n") == b"VA 1 c2 X W\r\nx\r\n"
    assert await a.ask(b"mg k v\r\n", b"x\r\n") == b"VA 1 Z X\r\nx\r\n"
    await trio.sleep(31)
    assert await a.ask(b"mg k v\r\n") == b"EN\r\n"


async def test_lease_on_miss_with_N(connect: ClientFactory, autojump_clock: trio.testing.MockClock) -> None:
    a = await connect()
    b = await connect()
    assert await a.ask(b"mg k N30 v t\r\n", b"\r\n\r\n") == b"VA 0 t30 W\r\n\r\n"
    assert await b.ask(b"mg k N30 v\r\n", b"\r\n\r\n") == b"VA 0 Z\r\n\r\n"
    await trio.sleep(31)
    assert await b.ask(b"mg k v\r\n") == b"EN\r\n"


async def test_me_reports_exp_la_and_fetch(connect: ClientFactory, autojump_clock: trio.testing.MockClock) -> None:
    c = await connect()
    await c.ask(b"ms k 3 T1000\r\nabc\r\n")
    await trio.sleep(7)
    assert await c.ask(b"me k\r\n") == b"ME k exp=-993 la=7 cas=1 fetch=no cls=1 size=63\r\n"
    await c.ask(b"mg k v\r\n", b"abc\r\n")
    assert (await c.ask(b"me k\r\n")).split()[5] == b"fetch=yes"
    assert await c.ask(b"me nope\r\n") == b"EN\r\n"


async def test_quiet_pipeline_ends_with_mn(connect: ClientFactory) -> None:
    c = await connect()
    await c.send(b"ms a 1 q\r\n1\r\nms b 1 q\r\n2\r\nmg a v q\r\nmg zz v q\r\nmd b q\r\nmd b q\r\nma n q\r\nmn\r\n")
    assert await c.read_until(b"MN\r\n") == b"VA 1\r\n1\r\nNF\r\nNF\r\nMN\r\n"


async def test_ma_modes_create_and_cas(connect: ClientFactory) -> None:
    c = await connect()
    assert await c.ask(b"ma n N0 J10 v\r\n", b"10\r\n") == b"VA 2\r\n10\r\n"
    assert await c.ask(b"ma n MD D3 v\r\n", b"7\r\n") == b"VA 1\r\n7\r\n"
    assert await c.ask(b"ma n C999\r\n") == b"EX\r\n"
    assert await c.ask(b"ma n M*\r\n") == b"CLIENT_ERROR invalid mode for ma M token\r\n"


async def test_base64_keys(connect: ClientFactory) -> None:
    c = await connect()
    assert await c.ask(b"ms Zm9v 1 b k\r\nx\r\n") == b"HD kZm9v b\r\n"
    assert await c.ask(b"get foo\r\n", b"END\r\n") == b"VALUE foo 0 1\r\nx\r\nEND\r\n"
    assert await c.ask(b"mg Zm9v b k v\r\n", b"x\r\n") == b"VA 1 kZm9v b\r\nx\r\n"
    assert await c.ask(b"mg !!!! b v\r\n") == b"CLIENT_ERROR error decoding key\r\n"


# -- hypothesis: random flag sets never crash and always answer something well-formed --------

_FLAG_CHARS = "bcCEfFhIJDklMNOqRstTuvxPLSZ!~"
_token = st.tuples(st.sampled_from(_FLAG_CHARS), st.text(alphabet="0123456789-abcSEAPRDI+", max_size=4)).map(
    lambda t: (t[0] + t[1]).encode())
_REPLY = re.compile(
    rb"(VA \d+[^\r\n]*\r\n.*|HD[^\r\n]*\r\n|EN[^\r\n]*\r\n|NS[^\r\n]*\r\n|EX[^\r\n]*\r\n|NF[^\r\n]*\r\n"
    rb"|CLIENT_ERROR [^\r\n]+\r\n|SERVER_ERROR [^\r\n]+\r\n|ERROR\r\n|ME [^\r\n]+\r\n)", re.S)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from([b"mg", b"ms", b"md", b"ma", b"me"]), st.lists(_token, max_size=8))
def test_random_meta_flags_parse_to_commands(op: bytes, flags: list[bytes]) -> None:
    line = b" ".join([op, b"key", *([b"3"] if op == b"ms" else []), *flags]) + b"\r\nabc\r\n"
    parser = Parser()
    out = parser.feed(line)
    assert parser.buffered == 0 and not parser.closed
    if op == b"ms":  # the data block is taken, even behind a refused line (memcached swallows it)
        assert len(out) == 1
    else:  # "abc" is the next command line, an unknown command
        assert len(out) == 2 and out[1] == cmd.Reply(replies.ERROR)
    first = out[0]
    refusal = first.data if isinstance(first, cmd.Reply) else first.reply if isinstance(first, cmd.MetaSwallow) else None
    assert refusal is None or refusal.startswith(b"CLIENT_ERROR ") and refusal.endswith(b"\r\n")


async def test_random_meta_flags_answer_well_formed(connect: ClientFactory) -> None:
    c = await connect()
    await c.ask(b"set key 0 0 2\r\n10\r\n")

    @settings(max_examples=150, deadline=None)
    @given(st.sampled_from([b"mg", b"ms", b"md", b"ma", b"me"]), st.lists(_token, max_size=6))
    def build(op: bytes, flags: list[bytes]) -> None:
        lines.append(b" ".join([op, b"key", *([b"2"] if op == b"ms" else []), *flags])
                     + (b"\r\n10\r\n" if op == b"ms" else b"\r\n"))

    lines: list[bytes] = []
    build()
    for line in lines:
        await c.send(line + b"mn\r\n")
        reply = await c.read_until(b"MN\r\n")
        body = reply[: -len(b"MN\r\n")]
        assert body == b"" or _REPLY.fullmatch(body), (line, reply)


async def test_newer_flags_beyond_1_6_18(connect: ClientFactory) -> None:
    """E, md x, ms s, mg C and ms N (append) as current memcached has them."""
    c = await connect()
    assert await c.ask(b"ms k 2 E500 c s\r\nab\r\n") == b"HD c500 s2\r\n"  # E sets the CAS
    assert await c.ask(b"mg k c v C500\r\n") == b"HD c500\r\n"  # C matches: no value
    assert await c.ask(b"mg k v C1\r\n", b"ab\r\n") == b"VA 2\r\nab\r\n"
    assert await c.ask(b"md k x\r\n") == b"HD\r\n"  # drop the value, keep the item
    assert await c.ask(b"mg k v\r\n", b"\r\n\r\n") == b"VA 0\r\n\r\n"
    assert await c.ask(b"mg k x\r\n") == b"CLIENT_ERROR invalid flag\r\n"  # x is md only
    assert await c.ask(b"ms new 1 MA N30\r\nz\r\n") == b"HD\r\n"  # append creates on a miss
    assert await c.ask(b"mg new v t\r\n", b"z\r\n") == b"VA 1 t30\r\nz\r\n"


async def test_ma_autovivify_keeps_its_ttl(connect: ClientFactory) -> None:
    c = await connect()
    assert await c.ask(b"ma mu N90\r\n") == b"HD\r\n"
    assert await c.ask(b"mg mu t v\r\n", b"0\r\n") == b"VA 1 t90\r\n0\r\n"
