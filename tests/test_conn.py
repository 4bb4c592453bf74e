"""A connection driven over memory streams; Trio's MockClock moves time instantly."""

from __future__ import annotations

import random
import struct

import pytest
import trio
import trio.testing
from helpers import ClientFactory, frame, response_frames

from trio_mc.server.state import ServerState


async def test_set_get_pipelined_in_one_reply(connect: ClientFactory) -> None:
    c = await connect()
    await c.send(b"set a 0 0 1\r\nx\r\nset b 3 0 2\r\nyy\r\nget a b zz\r\ngets a\r\n")
    reply = await c.read_until(b"1\r\nx\r\nEND\r\n")
    assert reply == (
        b"STORED\r\nSTORED\r\nVALUE a 0 1\r\nx\r\nVALUE b 3 2\r\nyy\r\nEND\r\n"
        b"VALUE a 0 1 1\r\nx\r\nEND\r\n"
    )


async def test_expiry_with_mock_clock(connect: ClientFactory, autojump_clock: trio.testing.MockClock) -> None:
    c = await connect()
    assert await c.ask(b"set k 0 10 1\r\nv\r\n") == b"STORED\r\n"
    await trio.sleep(9.5)
    assert await c.ask(b"get k\r\n", b"END\r\n") == b"VALUE k 0 1\r\nv\r\nEND\r\n"
    await trio.sleep(1)
    assert await c.ask(b"get k\r\n", b"END\r\n") == b"END\r\n"


async def test_flush_all_delay(connect: ClientFactory, autojump_clock: trio.testing.MockClock) -> None:
    c = await connect()
    await c.ask(b"set k 0 0 1\r\nv\r\n")
    assert await c.ask(b"flush_all 30\r\n") == b"OK\r\n"
    await trio.sleep(28)
    assert await c.ask(b"get k\r\n", b"END\r\n") == b"VALUE k 0 1\r\nv\r\nEND\r\n"
    await trio.sleep(3)
    assert await c.ask(b"get k\r\n", b"END\r\n") == b"END\r\n"


async def test_touch_and_gat(connect: ClientFactory, autojump_clock: trio.testing.MockClock) -> None:
    c = await connect()
    await c.ask(b"set k 0 5 1\r\nv\r\n")
    assert await c.ask(b"touch k 100\r\n") == b"TOUCHED\r\n"
    await trio.sleep(50)
    assert await c.ask(b"gat 20 k\r\n", b"END\r\n") == b"VALUE k 0 1\r\nv\r\nEND\r\n"
    await trio.sleep(21)
    assert await c.ask(b"touch k 1\r\n") == b"NOT_FOUND\r\n"


async def test_input_split_byte_by_byte(connect: ClientFactory) -> None:
    c = await connect()
    for byte in b"set k 0 0 5\r\nhello\r\nget k\r\n":
        await c.send(bytes([byte]))
        await trio.testing.wait_all_tasks_blocked()
    assert await c.read_until(b"END\r\n") == b"STORED\r\nVALUE k 0 5\r\nhello\r\nEND\r\n"


async def test_noreply_and_errors(connect: ClientFactory) -> None:
    c = await connect()
    await c.send(b"set k 0 0 1 noreply\r\nx\r\nincr k 1 noreply\r\ndelete nope noreply\r\n")
    assert await c.ask(b"version\r\n") == b"VERSION 1.6.18\r\n"
    assert await c.ask(b"incr k 1\r\n") == b"CLIENT_ERROR cannot increment or decrement non-numeric value\r\n"
    assert await c.ask(b"bogus\r\n") == b"ERROR\r\n"


async def test_quit_sends_pending_replies_then_closes(connect: ClientFactory) -> None:
    c = await connect()
    await c.send(b"version\r\nquit\r\nversion\r\n")
    assert await c.read_until(b"\r\n") == b"VERSION 1.6.18\r\n"
    with trio.fail_after(5):
        assert await c.stream.receive_some() == b""


async def test_too_large_value_is_swallowed(connect: ClientFactory, server_state: ServerState) -> None:
    c = await connect()
    await c.ask(b"set k 0 0 1\r\nv\r\n")
    big = b"x" * (1024 * 1024)
    assert await c.ask(b"set k 0 0 %d\r\n%b\r\n" % (len(big), big)) == b"SERVER_ERROR object too large for cache\r\n"
    assert await c.ask(b"get k\r\n", b"END\r\n") == b"END\r\n"  # the failed set dropped the old value
    assert server_state.store.stats.store_too_large == 1


async def test_value_just_under_the_limit(connect: ClientFactory) -> None:
    c = await connect()
    value = b"y" * 1048516
    assert await c.ask(b"set k 0 0 %d\r\n%b\r\n" % (len(value), value)) == b"STORED\r\n"
    reply = await c.ask(b"get k\r\n", b"END\r\n")
    assert reply == b"VALUE k 0 1048516\r\n" + value + b"\r\nEND\r\n"


async def test_stats_conns_reports_states(connect: ClientFactory) -> None:
    a = await connect()
    b = await connect()
    await b.send(b"set k 0 0 10\r\nabc")  # waiting for the rest of the data block
    await trio.testing.wait_all_tasks_blocked()
    reply = await a.ask(b"stats conns\r\n", b"END\r\n")
    assert b"STAT 100:state conn_parse_cmd\r\n" in reply
    assert b"STAT 101:state conn_nread\r\n" in reply


async def test_general_stats_keys(connect: ClientFactory) -> None:
    c = await connect()
    await c.ask(b"set k 0 0 1\r\nv\r\n")
    await c.ask(b"get k\r\n", b"END\r\n")
    reply = await c.ask(b"stats\r\n", b"END\r\n")
    stats = dict(line.split(b" ")[1:3] for line in reply.split(b"\r\n") if line.startswith(b"STAT "))
    assert len(stats) == 92
    assert stats[b"cmd_get"] == b"1" and stats[b"get_hits"] == b"1" and stats[b"cmd_set"] == b"1"
    assert stats[b"curr_items"] == b"1" and stats[b"version"] == b"1.6.18"


async def test_lru_crawler_metadump_and_pipelining_rule(connect: ClientFactory) -> None:
    c = await connect()
    await c.ask(b"set a%20b 0 0 1\r\nx\r\n")
    await c.send(b"mg nope v\r\nlru_crawler metadump all\r\n")
    assert await c.read_until(b"metadump\r\n") == b"EN\r\nERROR cannot pipeline other commands before metadump\r\n"
    dump = await c.ask(b"lru_crawler metadump all\r\n", b"END\r\n")
    assert dump.startswith(b"key=a%2520b exp=-1 la=") and b" cas=1 fetch=no cls=1 size=" in dump
    assert await c.ask(b"lru_crawler metadump 99\r\n") == b"BADCLASS invalid class id\r\n"
    assert await c.ask(b"lru_crawler crawl all\r\n") == b"OK\r\n"


async def test_slabs_and_lru_admin_commands(connect: ClientFactory) -> None:
    c = await connect()
    assert await c.ask(b"slabs automove invalid\r\n") == b"CLIENT_ERROR bad command line format\r\n"
    assert await c.ask(b"slabs automove 2\r\n") == b"OK\r\n"
    assert await c.ask(b"slabs automove 3\r\n") == b"ERROR\r\n"
    assert await c.ask(b"slabs reassign 1 1\r\n") == b"SAME src and dst class are identical\r\n"
    assert await c.ask(b"slabs reassign 1 99\r\n") == b"BADCLASS invalid src or dst class id\r\n"
    assert await c.ask(b"lru mode flat\r\n") == b"OK\r\n"
    assert await c.ask(b"debugtime 10\r\n") == b"ERROR\r\n"  # debug builds only


async def test_debugtime_with_relaxed_privileges(connect: ClientFactory, server_state: ServerState) -> None:
    server_state.settings.debug_commands = True
    c = await connect()
    await c.ask(b"set k 0 10 1\r\nv\r\n")
    assert await c.ask(b"debugtime 11\r\n") == b"OK\r\n"
    assert await c.ask(b"get k\r\n", b"END\r\n") == b"END\r\n"
    assert await c.ask(b"debugtime 4294967296\r\n") == b"ERROR\r\n"  # beyond 32-bit time


async def test_watch_streams_fetches_and_mutations(connect: ClientFactory) -> None:
    watcher = await connect()
    client = await connect()
    assert await watcher.ask(b"watch fetchers mutations\r\n") == b"OK\r\n"
    await client.ask(b"set k%1 0 0 2\r\nhi\r\n")
    await client.ask(b"get k%1\r\n", b"END\r\n")
    log = await watcher.read_until(b"size=2\n")
    log += await watcher.read_until(b"size=2\n") if log.count(b"\n") < 3 else b""
    lines = log.decode().splitlines()
    assert any("type=item_store key=k%251 status=stored cmd=set" in line for line in lines)
    assert any("type=item_get key=k%251 status=found" in line for line in lines)
    assert all(line.startswith("ts=") and " gid=" in line for line in lines)
    assert await client.ask(b"watch bogus\r\n") == b"ERROR\r\n"


async def test_ascii_authentication(server_state: ServerState, connect: ClientFactory) -> None:
    server_state.users = {b"user": b"secret"}
    c = await connect()
    c_conn = max(server_state.conns.values(), key=lambda conn: conn.fd)
    c_conn.parser.require_auth = True
    assert await c.ask(b"get foo\r\n") == b"CLIENT_ERROR unauthenticated\r\n"
    assert await c.ask(b"set a 0 0 8\r\nuser bad\r\n") == b"CLIENT_ERROR authentication failure\r\n"
    # A good attempt with a command pipelined behind it.
    await c.send(b"set a 0 0 11\r\nuser secret\r\nversion\r\n")
    assert await c.read_until(b"VERSION 1.6.18\r\n") == b"STORED\r\nVERSION 1.6.18\r\n"
    stats = await c.ask(b"stats\r\n", b"END\r\n")
    assert b"STAT auth_cmds 2\r\n" in stats and b"STAT auth_errors 1\r\n" in stats


async def test_read_buf_mem_limit_refuses_oversized_batches(server_state: ServerState, connect: ClientFactory) -> None:
    server_state.settings.read_buf_mem_limit = 1024 * 1024
    server_state.settings.num_threads = 32  # a budget of 32 pending replies
    c = await connect()
    assert await c.ask(b"get " + b" ".join([b"k"] * 40) + b"\r\n") == b"SERVER_ERROR out of memory writing get response\r\n"
    await c.send(b"mn\r\n" * 40)
    with trio.fail_after(5):
        assert await c.stream.receive_some() == b""
    assert sum(t.response_obj_oom for t in server_state.thread_stats) == 2


async def test_random_commands_never_break_the_server(
    connect: ClientFactory, server_state: ServerState, caplog: pytest.LogCaptureFixture,
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A seeded stream of command names with arbitrary tokens: every one gets memcached's
    reply or a close, never an internal error, and the server keeps serving."""
    rnd = random.Random(1)
    names = [b"get", b"gets", b"gat", b"set", b"add", b"append", b"cas", b"incr", b"decr", b"touch",
             b"delete", b"flush_all", b"stats", b"verbosity", b"cache_memlimit", b"mg", b"ms", b"md",
             b"ma", b"me", b"slabs", b"lru", b"lru_crawler", b"watch", b"debugtime", b"bget"]
    tokens = [b"k", b"0", b"1", b"-1", b"4294967296", b"99999999999999999999", b"noreply", b"b", b"v",
              b"q", b"T5", b"N5", b"R5", b"C1", b"E2", b"MA", b"D3", b"Oabc", b"t", b"c", b"x", b"I",
              b"all", b"reassign", b"automove", b"mode", b"tune", b"metadump", b"detail", b"cachedump",
              b"\xff", b"Zm9v", b"!!"]
    server_state.settings.debug_commands = True
    c = await connect()
    answered = 0
    for _ in range(600):
        line = b" ".join([rnd.choice(names)] + [rnd.choice(tokens) for _ in range(rnd.randrange(6))])
        extra = bytes(rnd.randrange(256) for _ in range(rnd.randrange(8)))
        reply = b""
        with trio.move_on_after(4):  # virtual time: a data block still open, a watch stream
            await c.send(line + b"\r\n" + extra + b"\r\nversion\r\n")
            reply = await c.read_until(b"VERSION 1.6.18\r\n")
        if reply.endswith(b"VERSION 1.6.18\r\n"):
            answered += 1
        else:  # closed or still waiting: start over
            await c.stream.aclose()
            c = await connect()
    assert answered > 400
    assert await c.ask(b"version\r\n") == b"VERSION 1.6.18\r\n"
    assert not [r for r in caplog.records if "internal error" in r.getMessage()]


async def test_binary_protocol_on_a_connection(connect: ClientFactory) -> None:
    c = await connect()
    await c.send(
        frame(0x01, b"k", struct.pack(">II", 5, 0), b"hello")  # set
        + frame(0x0C, b"k")  # getk
        + frame(0x09, b"missing")  # getq: a miss says nothing
        + frame(0x05, b"n", struct.pack(">QQI", 1, 10, 0))  # incr, created at 10
        + frame(0x05, b"n", struct.pack(">QQI", 5, 0, 0))  # incr by 5
        + frame(0x02, b"k", struct.pack(">II", 0, 0), b"x")  # add on an existing key
        + frame(0x42)  # unknown opcode
        + frame(0x0A)  # noop ends the batch
    )
    data = b""
    with trio.fail_after(5):
        while data.count(b"\x81\x0a") < 1 or len(data) < 24 * 7:
            data += await c.stream.receive_some()
    replies = response_frames(data)
    assert [(r.opcode, r.status, r.opaque) for r in replies] == [
        (0x01, 0, 7), (0x0C, 0, 7), (0x05, 0, 7), (0x05, 0, 7), (0x02, 2, 7), (0x42, 0x81, 7), (0x0A, 0, 7)]
    assert replies[1][4:] == (struct.pack(">I", 5), b"k", b"hello")
    assert replies[2].value == struct.pack(">Q", 10) and replies[3].value == struct.pack(">Q", 15)
    assert replies[4].value == b"Data exists for key." and replies[5].value == b"Unknown command"
