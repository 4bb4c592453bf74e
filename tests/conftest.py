"""Shared fixtures: a server driven in-process, over memory streams or loopback."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator

import pytest
import trio
import trio.testing
from helpers import Client, ClientFactory
from procs import ServerProcess, start_trio_mc
from trio_mc.net.conn import ConnGroup
from trio_mc.server.handlers import open_conn
from trio_mc.net.transport import StreamTransport
from trio_mc.server.serve import make_store
from trio_mc.server.state import ServerState
from trio_mc.settings import Settings
from trio_mc.store.clock import Clock

StreamPairFactory = Callable[[], tuple[trio.abc.Stream, trio.abc.Stream]]


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    """A real ``trio-mc serve -t 4`` process for the module; it must exit cleanly at the end."""
    proc = start_trio_mc("-t", "4")
    try:
        yield proc
    finally:
        code, output = proc.stop(), proc.output()
        proc.close()
        assert code == 0, output


@pytest.fixture
async def server_state() -> ServerState:
    """A server whose store runs on Trio's clock, so MockClock drives expiry."""
    settings = Settings()
    return ServerState(settings, make_store(settings, Clock(source=trio.current_time)))


@pytest.fixture
async def connect(server_state: ServerState, nursery: trio.Nursery) -> AsyncIterator[ClientFactory]:
    """Open an in-memory client connection to ``server_state``.

    All connections share one ``ConnGroup`` (one worker's loop).  ``pair`` makes the two
    ends: the default buffers without bound; ``trio.testing.lockstep_stream_pair`` has no
    buffer, so the server's sends wait until the client reads (a peer that does not read).
    """

    group = ConnGroup(server_state.settings, server_state.store.clock, server_state.new_thread_stats(),
                      server_state)

    async def factory(pair: StreamPairFactory = trio.testing.memory_stream_pair) -> Client:
        client, server = pair()
        conn = open_conn(server_state, StreamTransport(server), group, fd=100 + len(server_state.conns),
                         addr="tcp:127.0.0.1:1", listen_addr="tcp:127.0.0.1:11211")
        nursery.start_soon(conn.run)
        await trio.testing.wait_all_tasks_blocked()
        return Client(client)

    yield factory
