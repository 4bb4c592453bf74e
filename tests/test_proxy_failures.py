"""The proxy's failure model, over real sockets on 127.0.0.1.

In-process tests run ``proxy(pools, threads=0)`` and fake backends (trio tasks written here:
one answers like memcached, one stays silent, one sends garbage, one resets or closes)
under ``MockClock``, so timeouts, ejection and retries run on virtual time: exact, and no
test sleeps.  The last tests send the same failures through real nutcracker 0.5.0 and
trio-mc with real memcached backends (killed or stopped) and compare what clients see.
"""

from __future__ import annotations

import collections
import shutil
import signal
import socket
import struct
import sys
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import trio
import trio.testing
from helpers import InLoopProxy, proxy_in_loop
from procs import REPO_ROOT, ServerProcess, ask, free_port, read_quiet, start_memcached

from trio_mc.proxy.config import ListenConfig, PoolConfig, load, parse_server
from trio_mc.proxy.distribution import Continuum
from trio_mc.proxy.serve import ProxyState
from trio_mc.proxy.stats_server import aggregate

READ_TIMEOUT = 600.0  # virtual seconds a client waits for a reply before the test fails
# Every test runs on pytest-trio's ``autojump_clock`` (MockClock, threshold 0): the fake
# backends live in the test's loop, so no real I/O is pending when the clock jumps.


# -- fake backends ------------------------------------------------------------------------

Behaviour = Callable[["Backend", trio.SocketStream], Awaitable[None]]


@dataclass
class Backend:
    """A fake memcached on 127.0.0.1: ``behaviour`` serves each connection."""

    behaviour: Behaviour
    port: int = 0
    lines: list[bytes] = field(default_factory=list)  # every request line received
    connections: int = 0

    async def serve(self, *, task_status: trio.TaskStatus[list[trio.SocketListener]]
                    = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]

        async def handler(stream: trio.SocketStream) -> None:
            self.connections += 1
            try:
                await self.behaviour(self, stream)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass

        await trio.serve_listeners(handler, listeners, task_status=task_status)


class _lines:
    """Request lines as they arrive (a set's data line is a line too), recorded on the
    backend.  (A class, not an async generator, so an abandoned one needs no cleanup.)"""

    def __init__(self, backend: Backend, stream: trio.SocketStream) -> None:
        self.backend = backend
        self.stream = stream
        self.buffer = b""

    def __aiter__(self) -> _lines:
        return self

    async def __anext__(self) -> bytes:
        while b"\r\n" not in self.buffer:
            data = await self.stream.receive_some()
            if not data:
                raise StopAsyncIteration
            self.buffer += data
        line, self.buffer = self.buffer.split(b"\r\n", 1)
        self.backend.lines.append(line)
        return line


async def memcached_like(backend: Backend, stream: trio.SocketStream) -> None:
    """get: END; set: STORED (after its data line); version: VERSION."""
    data_next = False
    async for line in _lines(backend, stream):
        if data_next:
            data_next = False
            await stream.send_all(b"STORED\r\n")
        elif line.startswith(b"set "):
            data_next = True
        elif line.startswith(b"get "):
            await stream.send_all(b"END\r\n")
        elif line == b"version":
            await stream.send_all(b"VERSION 1.6.18\r\n")


async def silent(backend: Backend, stream: trio.SocketStream) -> None:
    async for _ in _lines(backend, stream):
        pass


async def garbage(backend: Backend, stream: trio.SocketStream) -> None:
    async for _ in _lines(backend, stream):
        await stream.send_all(b"BOGUS REPLY\r\n")


async def resets(backend: Backend, stream: trio.SocketStream) -> None:
    async for _ in _lines(backend, stream):
        stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        stream.socket.close()
        return


async def closes(backend: Backend, stream: trio.SocketStream) -> None:
    async for _ in _lines(backend, stream):
        await stream.aclose()
        return


async def error_lines(backend: Backend, stream: trio.SocketStream) -> None:
    """memcached's own error replies: set -> SERVER_ERROR, get -> CLIENT_ERROR."""
    data_next = False
    async for line in _lines(backend, stream):
        if data_next:
            data_next = False
            await stream.send_all(b"SERVER_ERROR out of memory storing object\r\n")
        elif line.startswith(b"set "):
            data_next = True
        elif line.startswith(b"get "):
            await stream.send_all(b"CLIENT_ERROR bad command line format\r\n")


# -- the proxy under test -----------------------------------------------------------------

def pool_config(*ports: int, **options: object) -> PoolConfig:
    """Pool ``alpha`` listening on any port, servers ``s1``, ``s2``... in that order."""
    servers = tuple(parse_server(f"127.0.0.1:{port}:1 s{i}") for i, port in enumerate(ports, 1))
    listen = ListenConfig("127.0.0.1", 0, None, "127.0.0.1:0")
    return PoolConfig(name="alpha", listen=listen, servers=servers, **options)  # type: ignore[arg-type]


@dataclass
class Running:
    px: InLoopProxy
    config: PoolConfig

    @property
    def state(self) -> ProxyState:
        return self.px.state

    async def client(self) -> trio.SocketStream:
        """A client connection, closed when the proxy stops."""
        return await self.px.connect()

    def stats(self) -> tuple[dict[str, int], list[dict[str, int]]]:
        """The pool's and its servers' stats now (the listener's aggregation)."""
        (pool,) = aggregate(self.state.pools, self.state.groups)
        return pool.values, [server.values for server in pool.servers]

    def server_for(self, key: bytes, live: tuple[int, ...] | None = None) -> int:
        continuum = Continuum(self.config.servers, hash=self.config.hash,
                              distribution=self.config.distribution)
        if live is not None:
            continuum.rebuild(live)
        return continuum.server_for(key)


@asynccontextmanager
async def running(config: PoolConfig, *backends: Backend) -> AsyncIterator[Running]:
    async with proxy_in_loop([config]) as px:
        yield Running(px, config)


@asynccontextmanager
async def started(*behaviours: Behaviour) -> AsyncIterator[list[Backend]]:
    backends = [Backend(b) for b in behaviours]
    async with trio.open_nursery() as nursery:
        for backend in backends:
            await nursery.start(backend.serve)
        yield backends
        nursery.cancel_scope.cancel()


async def read_reply(stream: trio.SocketStream, lines: int = 1) -> bytes:
    """``lines`` reply lines (bounded by READ_TIMEOUT virtual seconds)."""
    data = b""
    with trio.fail_after(READ_TIMEOUT):
        while data.count(b"\r\n") < lines:
            chunk = await stream.receive_some()
            assert chunk, f"connection closed after {data!r}"
            data += chunk
    return data


# -- failures -----------------------------------------------------------------------------

async def test_timeout_fails_everything_queued_after_exactly_timeout(autojump_clock: trio.testing.MockClock) -> None:
    async with started(silent) as (backend,), running(pool_config(backend.port, timeout=400)) as px:
        client = await px.client()
        start = trio.current_time()
        await client.send_all(b"get a\r\nget b\r\nset c 0 0 1\r\nx\r\n")
        assert await read_reply(client, 3) == b"SERVER_ERROR Connection timed out\r\n" * 3
        assert trio.current_time() - start == pytest.approx(0.4, abs=1e-6)
        pool, (server,) = px.stats()
        assert server["server_timedout"] == 1 and server["requests"] == 3
        assert server["responses"] == 0 and server["server_connections"] == 0
        assert pool["forward_error"] == 3
        # The connection is rebuilt on demand: the next request times out on a new one.
        await client.send_all(b"get d\r\n")
        assert await read_reply(client) == b"SERVER_ERROR Connection timed out\r\n"
        assert backend.connections == 2


async def test_without_timeout_a_silent_backend_is_waited_for(autojump_clock: trio.testing.MockClock) -> None:
    async with started(silent) as (backend,), running(pool_config(backend.port)) as px:
        client = await px.client()
        await client.send_all(b"get a\r\n")
        with trio.move_on_after(3600) as waited:
            await client.receive_some()
        assert waited.cancelled_caught  # nothing, for an hour
        _, (server,) = px.stats()
        assert server["requests"] - server["responses"] == 1
        assert server["out_queue"] == 1 and server["out_queue_bytes"] == len(b"get a\r\n")
        assert server["server_timedout"] == 0


@pytest.mark.parametrize(("behaviour", "text", "counter"), [
    (resets, b"Connection reset by peer", "server_err"),
    (closes, b"unknown", "server_eof"),
    (garbage, b"Invalid argument", "server_err"),
])
async def test_backend_failure_fails_every_pending_request_with_its_errno(
        behaviour: Behaviour, text: bytes, counter: str, autojump_clock: trio.testing.MockClock) -> None:
    async with started(behaviour) as (backend,), running(pool_config(backend.port)) as px:
        client = await px.client()
        await client.send_all(b"get a\r\nget b\r\nget c\r\n")
        assert await read_reply(client, 3) == (b"SERVER_ERROR " + text + b"\r\n") * 3
        pool, (server,) = px.stats()
        assert server[counter] == 1 and server["requests"] == 3
        assert pool["forward_error"] == 3 and server["server_connections"] == 0


async def test_refused_backend(autojump_clock: trio.testing.MockClock) -> None:
    async with running(pool_config(free_port())) as px:
        client = await px.client()
        await client.send_all(b"get a\r\nset b 0 0 1\r\nx\r\nversion\r\n")
        assert await read_reply(client, 3) == b"SERVER_ERROR Connection refused\r\n" * 3
        pool, (server,) = px.stats()
        assert server["server_err"] == 1 and pool["forward_error"] == 3


async def test_backend_error_lines_pass_through(autojump_clock: trio.testing.MockClock) -> None:
    async with started(error_lines) as (backend,), running(pool_config(backend.port)) as px:
        client = await px.client()
        await client.send_all(b"set a 0 0 1\r\nx\r\nget a\r\n")
        assert await read_reply(client, 2) == (b"SERVER_ERROR out of memory storing object\r\n"
                                               b"CLIENT_ERROR bad command line format\r\n")
        pool, (server,) = px.stats()
        assert pool["forward_error"] == 0 and server["responses"] == 2
        assert server["server_err"] == 0


# -- ejection -----------------------------------------------------------------------------

EJECT = {"auto_eject_hosts": True, "server_failure_limit": 2, "server_retry_timeout": 2000}


def keys_on(px: Running, index: int, count: int) -> list[bytes]:
    keys = [b"key:%d" % i for i in range(200)]
    return [k for k in keys if px.server_for(k) == index][:count]


async def test_auto_eject_remaps_then_rejoins_blindly(autojump_clock: trio.testing.MockClock) -> None:
    dead = free_port()
    async with started(memcached_like) as (live,), \
            running(pool_config(dead, live.port, **EJECT)) as px:
        key = keys_on(px, 0, 1)[0]  # held by the dead server s1
        client = await px.client()
        for _ in range(2):  # the failure limit
            await client.send_all(b"get " + key + b"\r\n")
            assert await read_reply(client) == b"SERVER_ERROR Connection refused\r\n"
        await client.send_all(b"get " + key + b"\r\n")
        assert await read_reply(client) == b"END\r\n"  # remapped to s2
        assert live.lines == [b"get " + key]
        pool, servers = px.stats()
        assert pool["server_ejects"] == 1 and servers[0]["server_ejected_at"] > 0
        assert servers[0]["server_err"] == 2 and pool["forward_error"] == 2
        # After server_retry_timeout, the next request puts s1 back without a check.
        await trio.sleep(2.0)
        await client.send_all(b"get " + key + b"\r\n")
        assert await read_reply(client) == b"SERVER_ERROR Connection refused\r\n"
        await client.send_all(b"get " + key + b"\r\n")
        assert await read_reply(client) == b"SERVER_ERROR Connection refused\r\n"
        await client.send_all(b"get " + key + b"\r\n")
        assert await read_reply(client) == b"END\r\n"
        assert px.stats()[0]["server_ejects"] == 2


async def test_every_server_ejected_fails_at_once(autojump_clock: trio.testing.MockClock) -> None:
    async with running(pool_config(free_port(), free_port(), **EJECT)) as px:
        client = await px.client()
        keys = keys_on(px, 0, 2) + keys_on(px, 1, 2)
        for key in keys:
            await client.send_all(b"get " + key + b"\r\n")
            assert await read_reply(client) == b"SERVER_ERROR Connection refused\r\n"
        pool, servers = px.stats()
        assert pool["server_ejects"] == 2
        requests = sum(s["requests"] for s in servers)
        start = trio.current_time()
        await client.send_all(b"get x\r\nset y 0 0 1\r\nz\r\nversion\r\nget a b c\r\n")
        assert await read_reply(client, 4) == b"SERVER_ERROR Connection refused\r\n" * 4
        assert trio.current_time() == start  # no connect tried
        assert sum(s["requests"] for s in px.stats()[1]) == requests


async def test_server_probe_rejoins_only_after_answering_version(autojump_clock: trio.testing.MockClock) -> None:
    async with started(silent, memcached_like) as (hung, live), \
            running(pool_config(hung.port, live.port, timeout=100, server_probe=True, **EJECT)) as px:
        key = keys_on(px, 0, 1)[0]
        client = await px.client()
        for _ in range(2):
            await client.send_all(b"get " + key + b"\r\n")
            assert await read_reply(client) == b"SERVER_ERROR Connection timed out\r\n"
        # Ejected: remapped; after the retry timeout the probe times out, so s1 stays out.
        for _ in range(3):
            await trio.sleep(2.5)
            await client.send_all(b"get " + key + b"\r\n")
            assert await read_reply(client) == b"END\r\n"
        assert all(line in (b"version", b"get " + key) for line in hung.lines)
        assert b"version" in hung.lines
        hung.behaviour = memcached_like  # s1 recovers: the next probe succeeds
        await trio.sleep(2.5)
        await client.send_all(b"get " + key + b"\r\n")
        await read_reply(client)
        await trio.sleep(0.5)
        await client.send_all(b"get " + key + b"\r\n")
        assert await read_reply(client) == b"END\r\n"
        assert hung.lines[-1] == b"get " + key


async def test_client_leaving_mid_multiget_keeps_servers_in_sync(autojump_clock: trio.testing.MockClock) -> None:
    async with started(silent, memcached_like) as (slow, fast), \
            running(pool_config(slow.port, fast.port)) as px:
        keys = keys_on(px, 0, 2) + keys_on(px, 1, 2)
        client = await px.client()
        await client.send_all(b"get " + b" ".join(keys) + b"\r\n")
        await trio.testing.wait_all_tasks_blocked()
        await client.aclose()  # fragment on s2 answered, the one on s1 pending
        await trio.testing.wait_all_tasks_blocked()
        pool, servers = px.stats()
        assert pool["client_eof"] == 1 and pool["client_connections"] == 0
        assert servers[0]["out_queue"] == 1 and servers[1]["responses"] == 1
        other = await px.client()
        await other.send_all(b"get " + keys[2] + b"\r\n")
        assert await read_reply(other) == b"END\r\n"
        assert px.stats()[0]["forward_error"] == 0


# -- differential: real nutcracker and trio-mc over real memcached --------------------------

NUTCRACKER = shutil.which("nutcracker") or "/usr/sbin/nutcracker"


def _ask(sock: socket.socket, request: bytes, end: bytes = b"\r\n") -> bytes:
    """``ask``, with a connection error as the reply (the proxy may have died)."""
    try:
        return ask(sock, request, end)
    except OSError as exc:
        return f"<{exc.strerror}>".encode()


def _failure_transcript(tmp_path: Path, proxy_cmd: Callable[[Path, int], list[str]]) -> list[bytes]:
    """A backend paused (SIGSTOP) past the timeout, resumed, then killed; a second pool
    ejects its killed server and remaps.  Returns every reply, in order."""
    replies: list[bytes] = []
    with start_memcached() as mc, start_memcached() as mc_a, start_memcached() as mc_b:
        listen, eject_listen = free_port(), free_port()
        conf = tmp_path / f"pools-{listen}.yml"
        conf.write_text(f"""\
timed:
  listen: 127.0.0.1:{listen}
  timeout: 300
  servers:
   - 127.0.0.1:{mc.port}:1 only
ejecting:
  listen: 127.0.0.1:{eject_listen}
  timeout: 300
  auto_eject_hosts: true
  server_failure_limit: 1
  server_retry_timeout: 60000
  servers:
   - 127.0.0.1:{mc_a.port}:1 a
   - 127.0.0.1:{mc_b.port}:1 b
""")
        with ServerProcess(proxy_cmd(conf, free_port()), listen, cwd=REPO_ROOT) as px:
            with socket.create_connection(("127.0.0.1", listen), timeout=10) as sock:
                replies.append(_ask(sock, b"set k 0 0 1\r\nv\r\n"))
                assert mc.proc is not None and px.proc is not None
                mc.proc.send_signal(signal.SIGSTOP)
                replies.append(_ask(sock, b"get k\r\nget j\r\n", b"out\r\nSERVER_ERROR Connection timed out\r\n"))
                mc.proc.send_signal(signal.SIGCONT)
                replies.append(_ask(sock, b"get k\r\n", b"END\r\n"))
                mc.stop()
                time.sleep(0.2)  # the proxy sees its idle connection's EOF
                replies.append(_ask(sock, b"get k\r\n"))
            time.sleep(0.2)
            if px.proc.poll() is not None:  # the proxy died: the transcript says how
                return [*replies, f"exited {px.proc.returncode}: {px.output()[-300:]}".encode()]
            pool = next(p for p in load(conf) if p.name == "ejecting")
            continuum = Continuum(pool.servers, hash=pool.hash, distribution=pool.distribution)
            key = next(k for k in (b"key:%d" % i for i in range(400)) if continuum.server_for(k) == 1)
            with socket.create_connection(("127.0.0.1", eject_listen), timeout=10) as sock:
                replies.append(_ask(sock, b"get " + key + b"\r\n", b"END\r\n"))
                mc_b.stop()
                time.sleep(0.2)
                # The idle connection's EOF was failure 1 = the limit: b is out, k remaps to a.
                replies.append(_ask(sock, b"get " + key + b"\r\n", b"\r\n"))
            if px.proc.poll() is not None:
                replies.append(f"exited {px.proc.returncode}: {px.output()[-300:]}".encode())
    return replies


#: What nutcracker 0.5.0 answers in ``_failure_transcript``.
FAILURE_TRANSCRIPT = [b"STORED\r\n", b"SERVER_ERROR Connection timed out\r\n" * 2,
                      b"VALUE k 0 1\r\nv\r\nEND\r\n", b"SERVER_ERROR Connection refused\r\n",
                      b"END\r\n", b"END\r\n"]


def test_failure_replies_match_nutcracker(tmp_path: Path) -> None:
    # nutcracker itself, on a loaded machine, now and then answers nothing to the requests
    # on the paused backend (its 300 ms timeout does not fire within 10 s): one retry.
    for _ in range(2):
        nutcracker = _failure_transcript(tmp_path, lambda conf, stats: [
            NUTCRACKER, "-c", str(conf), "-s", str(stats), "-a", "127.0.0.1"])
        if nutcracker == FAILURE_TRANSCRIPT:
            break
    assert nutcracker == FAILURE_TRANSCRIPT
    trio_mc = _failure_transcript(tmp_path, lambda conf, stats: [
        sys.executable, "-m", "trio_mc", "proxy", "-c", str(conf), "-s", str(stats)])
    assert trio_mc == nutcracker


def test_backend_paused_killed_and_restarted_under_load(tmp_path: Path) -> None:
    """Four clients pipeline sets and gets without pause while their only backend is
    paused past the pool's timeout, resumed, killed and restarted on its port: every
    request gets a reply (a value, ``END``, ``STORED`` or twemproxy's ``SERVER_ERROR``
    for the failure), no client hangs or is dropped, and service comes back."""
    mc = start_memcached()
    listen = free_port()
    conf = tmp_path / "pool.toml"
    conf.write_text(f'[alpha]\nlisten = "127.0.0.1:{listen}"\ntimeout = 300\n'
                    f'servers = ["127.0.0.1:{mc.port}:1"]\n')
    cmd = [sys.executable, "-m", "trio_mc", "proxy", "-c", str(conf), "-s", str(free_port()), "-T", "2"]
    stop = threading.Event()
    seen: list[collections.Counter[bytes]] = [collections.Counter() for _ in range(4)]
    last: list[bytes] = [b""] * 4
    errors: list[BaseException] = []
    ok = {b"STORED\r\n", b"END\r\n"}
    failures = {b"SERVER_ERROR Connection timed out\r\n", b"SERVER_ERROR Connection refused\r\n",
                b"SERVER_ERROR Connection reset by peer\r\n", b"SERVER_ERROR unknown\r\n"}

    def client(index: int) -> None:
        try:
            with socket.create_connection(("127.0.0.1", listen), timeout=5) as sock:
                buffer = b""
                for n in range(1_000_000):
                    if stop.is_set():
                        return
                    sock.sendall(b"set c%d 0 0 1\r\nv\r\nget c%d\r\n" % (index, index))
                    for _ in range(2):
                        while b"\r\n" not in buffer:
                            data = sock.recv(65536)
                            assert data, "the proxy closed the client"
                            buffer += data
                        line, buffer = buffer.split(b"\r\n", 1)
                        reply = line + b"\r\n"
                        if line.startswith(b"VALUE "):  # a hit: its data line and END follow
                            while buffer.count(b"\r\n") < 2:
                                data = sock.recv(65536)
                                assert data, "the proxy closed the client"
                                buffer += data
                            value, end, buffer = buffer.split(b"\r\n", 2)
                            assert (value, end) == (b"v", b"END"), (value, end)
                            reply = b"VALUE\r\n"
                        assert reply in ok | failures | {b"VALUE\r\n"}, reply
                        seen[index][reply] += 1
                        last[index] = reply
        except BaseException as exc:  # noqa: BLE001 (reported by the test)
            errors.append(exc)

    with ServerProcess(cmd, listen, cwd=REPO_ROOT, name="trio-mc-proxy") as px:
        threads = [threading.Thread(target=client, args=(i,)) for i in range(4)]
        restarted: ServerProcess | None = None
        try:
            for thread in threads:
                thread.start()
            time.sleep(0.3)
            assert mc.proc is not None
            mc.proc.send_signal(signal.SIGSTOP)
            time.sleep(0.8)
            mc.proc.send_signal(signal.SIGCONT)
            time.sleep(0.3)
            mc.proc.kill()
            mc.proc.wait(5)
            time.sleep(0.3)
            restarted = ServerProcess(mc.cmd, mc.port, name="memcached").start()
            time.sleep(0.8)
        finally:
            stop.set()
            for thread in threads:
                thread.join(10)
            if mc.proc.poll() is None:
                mc.proc.send_signal(signal.SIGCONT)
            mc.close()
            if restarted is not None:
                restarted.close()
        assert not errors, errors
        assert px.proc is not None and px.proc.poll() is None, px.output()
    total: collections.Counter[bytes] = sum(seen, collections.Counter())
    assert total[b"STORED\r\n"] and total[b"VALUE\r\n"], total
    assert total[b"SERVER_ERROR Connection timed out\r\n"], total  # the pause
    assert total[b"SERVER_ERROR Connection refused\r\n"], total  # killed, before the restart
    assert all(reply in ok | {b"VALUE\r\n"} for reply in last), (last, total)  # back in service


class _FaultyBackend:
    """A backend on 127.0.0.1, in a thread, that answers the first request of each
    connection with a fault: ``close`` (FIN), ``reset`` (RST), ``garbage`` (a line no
    memcached sends), ``stray`` (two replies to one request), ``error`` (memcached's own
    SERVER_ERROR, to every request of the connection), or these bytes (a reply of some
    other command)."""

    def __init__(self, fault: str | bytes) -> None:
        self.fault = fault
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.1)
        self.port = self.listener.getsockname()[1]
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve)
        self.thread.start()

    def _serve(self) -> None:
        conns: list[socket.socket] = []
        try:
            while not self.stop.is_set():
                try:
                    conn, _ = self.listener.accept()
                except TimeoutError:
                    continue
                conns.append(conn)
                conn.settimeout(5)
                threading.Thread(target=self._answer, args=(conn,), daemon=True).start()
        finally:
            for conn in conns:
                conn.close()
            self.listener.close()

    def _answer(self, conn: socket.socket) -> None:
        try:
            buffer = self._request(conn, b"")
            if isinstance(self.fault, bytes):
                conn.sendall(self.fault)
            elif self.fault == "close":
                conn.shutdown(socket.SHUT_RDWR)
            elif self.fault == "reset":
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                conn.close()
            elif self.fault == "garbage":
                conn.sendall(b"BOGUS REPLY\r\n")
            elif self.fault == "stray":
                conn.sendall(b"END\r\nEND\r\n")
            else:  # error: every request of the connection
                while buffer:
                    line, _, buffer = buffer.partition(b"\r\n")
                    if line.startswith(b"set "):
                        buffer = buffer.partition(b"\r\n")[2]  # its data line
                    conn.sendall(b"SERVER_ERROR out of memory storing object\r\n")
                    buffer = self._request(conn, buffer)
        except OSError:
            pass

    @staticmethod
    def _request(conn: socket.socket, buffer: bytes) -> bytes:
        """Read until ``buffer`` holds a whole request (a set: its line and data line);
        ``b""`` when the proxy closes first."""
        while buffer.count(b"\r\n") < (2 if buffer.startswith(b"set ") else 1):
            data = conn.recv(65536)
            if not data:
                return b""
            buffer += data
        return buffer

    def close(self) -> None:
        self.stop.set()
        self.thread.join(10)


def _pools_yaml(backends: list[_FaultyBackend], listens: list[int]) -> str:
    """One pool per backend (``p0``, ``p1``...), each on its own port."""
    return "".join(f"p{i}:\n  listen: 127.0.0.1:{listen}\n  servers:\n   - 127.0.0.1:{backend.port}:1\n"
                   for i, (backend, listen) in enumerate(zip(backends, listens, strict=True)))


def _transcripts(faults: list[str | bytes], session: Callable[[int, int], list[bytes]],
                 proxy_cmd: Callable[[Path, int], list[str]], tmp_path: Path) -> list[list[bytes]]:
    """Through one proxy process with a pool per fault (its backend answers with that
    fault), ``session(index, port)`` for each pool in turn; the proxy must survive."""
    backends = [_FaultyBackend(fault) for fault in faults]
    try:
        listens = [free_port() for _ in faults]
        conf = tmp_path / f"faults-{listens[0]}.yml"
        conf.write_text(_pools_yaml(backends, listens))
        with ServerProcess(proxy_cmd(conf, free_port()), listens[0], cwd=REPO_ROOT) as px:
            out = [session(i, port) for i, port in enumerate(listens)]
            assert px.proc is not None and px.proc.poll() is None, px.output()
        return out
    finally:
        for backend in backends:
            backend.close()


def _nutcracker(conf: Path, stats: int) -> list[str]:
    return [NUTCRACKER, "-c", str(conf), "-s", str(stats), "-a", "127.0.0.1"]


def _trio_mc(conf: Path, stats: int) -> list[str]:
    return [sys.executable, "-m", "trio_mc", "proxy", "-c", str(conf), "-s", str(stats)]


FAULTS: list[str | bytes] = ["close", "reset", "garbage", "stray", "error"]


def _fault_session(index: int, port: int) -> list[bytes]:
    """A get, then a set, each on a fresh backend connection that the fault breaks."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        replies = [_ask(sock, b"get k\r\n")]
        time.sleep(0.1)  # a stray second reply, if any, reaches the proxy
        replies.append(_ask(sock, b"set k 0 0 1\r\nv\r\n"))
        time.sleep(0.1)
        replies.append(_ask(sock, b"get k\r\n"))
    return replies


def test_backend_faults_match_nutcracker(tmp_path: Path) -> None:
    """Each way a backend can break a reply (FIN, RST, garbage, a stray reply, its own
    SERVER_ERROR), through real nutcracker 0.5.0 and trio-mc: the same bytes."""
    nutcracker = _transcripts(FAULTS, _fault_session, _nutcracker, tmp_path)
    trio_mc = _transcripts(FAULTS, _fault_session, _trio_mc, tmp_path)
    assert dict(zip(FAULTS, trio_mc, strict=True)) == dict(zip(FAULTS, nutcracker, strict=True))


#: (request, what the backend answers): replies that belong to another command.
SHAPES = [
    (b"get k\r\n", b"STORED\r\n"),
    (b"get k\r\n", b"5\r\n"),
    (b"set k 0 0 1\r\nv\r\n", b"VALUE k 0 1\r\nv\r\nEND\r\n"),
    (b"incr k 1\r\n", b"STORED\r\n"),
    (b"delete k\r\n", b"VERSION 1.2\r\n"),
    (b"version\r\n", b"END\r\n"),
    (b"get a b\r\n", b"STORED\r\n"),  # a multi-get's fragment must be VALUE blocks and END
    (b"get a b\r\n", b"SERVER_ERROR out of memory\r\n"),
    (b"get k\r\n", b"VALUE k 0 1\r\nv\r\nVALUE j 0 1\r\nw\r\nEND\r\n"),
]


def _shape_session(index: int, port: int) -> list[bytes]:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(SHAPES[index][0])
        return [read_quiet(sock, 0.3)[0]]  # (nutcracker also closes after a failed multi-get)


def test_replies_of_another_command_match_nutcracker(tmp_path: Path) -> None:
    """twemproxy frames a backend's reply by its own shape, whatever the request was, and
    forwards it; only a multi-get (one server or several) insists on VALUE blocks and END."""
    replies: list[str | bytes] = [reply for _, reply in SHAPES]
    nutcracker = _transcripts(replies, _shape_session, _nutcracker, tmp_path)
    trio_mc = _transcripts(replies, _shape_session, _trio_mc, tmp_path)
    assert dict(zip(SHAPES, trio_mc, strict=True)) == dict(zip(SHAPES, nutcracker, strict=True))
