"""The pytest plugin ``trio_mc.testing``, used as an application's tests would use it.

Its fixtures come from the installed package's ``pytest11`` entry point, not from a conftest:
the ``pytester`` test runs a user's test file in a fresh pytest process to prove that.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import pytest
import trio
import trio.testing
from pymemcache.client.base import Client
from pymemcache.exceptions import MemcacheServerError

from trio_mc.testing import ProcessServer, ThreadedServer, TrioServer, server_settings

pytest_plugins = ["pytester"]


@pytest.fixture
def make_client() -> Iterator[Callable[[tuple[str, int]], Client]]:
    clients: list[Client] = []

    def make(address: tuple[str, int]) -> Client:
        client = Client(address, connect_timeout=5, timeout=5, default_noreply=False)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


def test_threaded_server_expiry_moves_with_advance(trio_mc_thread: ThreadedServer, make_client) -> None:
    mc = make_client(trio_mc_thread.address)
    assert mc.set("session", b"alice", expire=30)
    assert mc.set("absolute", b"x", expire=int(time.time()) + 100)  # a Unix time: the real clock's
    trio_mc_thread.advance(29)
    assert mc.get_many(["session", "absolute"]) == {"session": b"alice", "absolute": b"x"}
    trio_mc_thread.advance(1)
    assert mc.get("session") is None
    assert mc.get("absolute") == b"x"
    trio_mc_thread.advance(75)
    assert mc.get("absolute") is None


@pytest.mark.trio_mc("-m 4 -I 2m", "-o", "idle_timeout=60")
def test_marker_flags_configure_the_server(trio_mc_thread: ThreadedServer, make_client) -> None:
    mc = make_client(trio_mc_thread.address)
    settings = mc.stats("settings")
    assert (settings[b"maxbytes"], settings[b"item_size_max"], settings[b"idle_timeout"]) == (4 << 20, 2 << 20, 60)
    assert mc.set("big", b"v" * (1536 << 10))
    assert len(mc.get("big")) == 1536 << 10


def test_factory_starts_independent_servers(trio_mc_factory, make_client) -> None:
    small = trio_mc_factory("-I 512k")
    other = trio_mc_factory()
    a, b = make_client(small.address), make_client(other.address)
    with pytest.raises(MemcacheServerError, match="object too large for cache"):
        a.set("k", b"v" * (600 << 10))
    assert b.set("k", b"v" * (600 << 10), expire=5)
    small.advance(10)  # each server has its own clock
    assert b.get("k") == b"v" * (600 << 10)


def test_threaded_server_stops_and_joins_its_threads() -> None:
    before = threading.active_count()
    with ThreadedServer("-t 3") as server:
        assert threading.active_count() == before + 4  # the server's loop and three workers
        mc = Client(server.address, connect_timeout=5, timeout=5)
        assert mc.version() == b"1.6.18"
        mc.close()
    assert threading.active_count() == before
    with pytest.raises(ConnectionRefusedError):
        Client(server.address, connect_timeout=5).version()


@pytest.mark.parametrize(("flags", "message"), [
    ("-p 11300", "the fixture chooses port"),
    ("-l 0.0.0.0 -d", "the fixture chooses inter, daemonize"),
    ("--no-such-flag", "unrecognized option"),
    ("-m 1", "Cannot set item size limit higher than 1/2 of memory max."),
    ("-V", "print text instead of starting a server"),
])
def test_flags_the_fixture_refuses(flags: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        server_settings(flags)


async def test_in_process_server_under_mock_clock(trio_mc: TrioServer, mock_clock: trio.testing.MockClock) -> None:
    stream = await trio.open_tcp_stream(*trio_mc.address)
    assert await _ask(stream, b"set k 0 10 1\r\nv\r\n") == b"STORED\r\n"
    mock_clock.jump(9)
    assert await _ask(stream, b"get k\r\n") == b"VALUE k 0 1\r\nv\r\nEND\r\n"
    mock_clock.jump(1)
    assert await _ask(stream, b"get k\r\n") == b"END\r\n"
    assert trio_mc.store.clock.current == 72  # memcached's clock starts at 62
    await stream.aclose()


@pytest.mark.trio_mc("-I 512k")
async def test_in_process_server_autojump(trio_mc: TrioServer, autojump_clock: trio.testing.MockClock) -> None:
    assert trio_mc.settings.item_size_max == 512 << 10
    stream = await trio.open_tcp_stream(*trio_mc.address)
    assert await _ask(stream, b"set k 0 100 1\r\nv\r\n") == b"STORED\r\n"
    await trio.sleep(100)
    assert await _ask(stream, b"mg k v\r\n") == b"EN\r\n"
    await stream.aclose()


async def _ask(stream: trio.SocketStream, request: bytes) -> bytes:
    await stream.send_all(request)
    data = b""
    while not data.endswith((b"END\r\n", b"STORED\r\n", b"EN\r\n")):
        data += await stream.receive_some()
    return data


@pytest.mark.trio_mc("-m 8")
def test_process_server_advance_with_debugtime(trio_mc_process: ProcessServer, make_client) -> None:
    mc = make_client(trio_mc_process.address)
    assert int(mc.stats("settings")[b"maxbytes"]) == 8 << 20
    assert mc.set("k", b"v", expire=60)
    trio_mc_process.advance(59)
    assert mc.get("k") == b"v"
    trio_mc_process.advance(1)
    assert mc.get("k") is None


USER_TESTS = '''
import pytest
import trio
from pymemcache.client.base import Client


def test_cache_expires(trio_mc_thread):
    cache = Client(trio_mc_thread.address, default_noreply=False)
    cache.set("greeting", "hello", expire=60)
    trio_mc_thread.advance(61)
    assert cache.get("greeting") is None
    cache.close()


@pytest.mark.trio
async def test_in_trio(trio_mc, mock_clock):
    stream = await trio.open_tcp_stream(*trio_mc.address)
    await stream.send_all(b"version\\r\\n")
    assert await stream.receive_some() == b"VERSION 1.6.18\\r\\n"
    await stream.aclose()
'''


def test_entry_point_registers_the_plugin(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_user=USER_TESTS)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-W", "error", timeout=60)
    result.assert_outcomes(passed=2)
