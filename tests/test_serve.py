"""The server assembled in-process: acceptor, worker threads, idle timeout, graceful drain."""

from __future__ import annotations

import threading

import trio
import trio.testing
from helpers import ClientFactory

from trio_mc.server.serve import serve
from trio_mc.server.state import ServerState
from trio_mc.settings import Settings


def _port(state: ServerState) -> int:
    return int(state.listeners[0].addr.rsplit(":", 1)[1])


async def _ask(stream: trio.SocketStream, request: bytes, end: bytes = b"\r\n") -> bytes:
    await stream.send_all(request)
    data = b""
    with trio.fail_after(10):
        while not data.endswith(end):
            chunk = await stream.receive_some()
            if not chunk:
                break
            data += chunk
    return data


async def test_idle_timeout_closes_idle_clients(
    connect: ClientFactory, server_state: ServerState, autojump_clock: trio.testing.MockClock, nursery: trio.Nursery,
) -> None:
    server_state.settings.idle_timeout = 5
    c = await connect()
    group = next(iter(server_state.conns.values())).group
    nursery.start_soon(group.sweep_idle)
    assert await c.ask(b"version\r\n") == b"VERSION 1.6.18\r\n"
    await trio.sleep(4)
    assert await c.ask(b"version\r\n") == b"VERSION 1.6.18\r\n"  # activity resets the clock
    await trio.sleep(10)
    with trio.fail_after(1):
        assert await c.stream.receive_some() == b""
    assert group.tstats.idle_kicks == 1


async def test_worker_threads_round_robin_and_clean_stop() -> None:
    settings = Settings(port=-1, num_threads=3)
    before = threading.active_count()
    async with trio.open_nursery() as nursery:
        state: ServerState = await nursery.start(serve, settings)
        streams = [await trio.open_tcp_stream("127.0.0.1", _port(state)) for _ in range(30)]
        for i, stream in enumerate(streams):
            assert await _ask(stream, b"set k%d 0 0 1\r\n%d\r\n" % (i, i % 10)) == b"STORED\r\n"
        reply = await _ask(streams[0], b"get " + b" ".join(b"k%d" % i for i in range(30)) + b"\r\n", b"END\r\n")
        assert reply == b"".join(b"VALUE k%d 0 1\r\n%d\r\n" % (i, i % 10) for i in range(30)) + b"END\r\n"
        assert sorted(len(g.conns) for g in _groups(state)) == [10, 10, 10]
        assert threading.active_count() == before + 3
        nursery.cancel_scope.cancel()
    assert threading.active_count() == before
    for stream in streams:
        await stream.aclose()


def _groups(state: ServerState) -> set:  # type: ignore[type-arg]
    return {conn.group for conn in state.conns.values()}


async def test_graceful_shutdown_finishes_in_flight_commands() -> None:
    settings = Settings(port=-1, num_threads=2, shutdown_command=True)
    async with trio.open_nursery() as nursery:
        state: ServerState = await nursery.start(serve, settings)
        port = _port(state)
        idle = await trio.open_tcp_stream("127.0.0.1", port)
        busy = await trio.open_tcp_stream("127.0.0.1", port)
        await _ask(idle, b"version\r\n")
        await busy.send_all(b"set k 0 0 10\r\n12345")  # a command half sent
        admin = await trio.open_tcp_stream("127.0.0.1", port)
        await admin.send_all(b"shutdown graceful\r\n")
        with trio.fail_after(10):
            assert await idle.receive_some() == b""  # idle: closed at once
            assert await _ask(busy, b"67890\r\n") == b"STORED\r\n"  # in flight: finished
            assert await busy.receive_some() == b""  # then closed
    for stream in (idle, busy, admin):
        await stream.aclose()
