"""Live reload of the proxy's config (issue 9): SIGUSR1, ``trio-mc proxy --reload``.

In-process tests run ``proxy(pools, threads=0, conf=FILE)`` in front of fake backends
(trio tasks that store what they are sent, and can hold their replies), rewrite FILE and
call :func:`~trio_mc.proxy.serve.reload`, so what happens to a request in flight at the
moment of the reload is exact.  The last tests reload a real ``trio-mc proxy`` process in
front of real memcached, under load, and check that no request is lost.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import trio
from helpers import Client
from helpers import InLoopProxy, proxy_in_loop
from procs import HOST, REPO_ROOT, free_port, memcacheds, pool_toml, start_proxy
from pymemcache.client.base import Client as Pymemcache

from trio_mc.proxy.config import load
from trio_mc.proxy.distribution import Continuum
from trio_mc.proxy.serve import ProxyState, reload
from trio_mc.proxy.stats_server import aggregate

TIMEOUT = 10.0  # seconds any in-process step may take before the test fails


# -- fake backends ------------------------------------------------------------------------

@dataclass
class Backend:
    """A memcached stand-in on 127.0.0.1: ``set`` stores, ``get`` answers from the store.
    While ``hold`` is set, a get's reply waits for it to be cleared (``release``)."""

    port: int = 0
    store: dict[bytes, bytes] = field(default_factory=dict)
    gets: list[bytes] = field(default_factory=list)  # every key a get asked for
    hold: bool = False
    released: trio.Event = field(default_factory=trio.Event)
    got: trio.Event = field(default_factory=trio.Event)  # set on each get received
    open_conns: int = 0

    def release(self) -> None:
        self.hold = False
        self.released.set()

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host=HOST)
        self.port = listeners[0].socket.getsockname()[1]
        await trio.serve_listeners(self._conn, listeners, task_status=task_status)

    async def _conn(self, stream: trio.SocketStream) -> None:
        self.open_conns += 1
        buffer = b""
        try:
            while True:
                while b"\r\n" not in buffer:
                    data = await stream.receive_some()
                    if not data:
                        return
                    buffer += data
                line, buffer = buffer.split(b"\r\n", 1)
                words = line.split()
                if words[0] == b"set":
                    size = int(words[4])
                    while len(buffer) < size + 2:
                        data = await stream.receive_some()
                        if not data:
                            return
                        buffer += data
                    self.store[words[1]] = buffer[:size]
                    buffer = buffer[size + 2:]
                    await stream.send_all(b"STORED\r\n")
                elif words[0] == b"get":
                    self.gets.extend(words[1:])
                    self.got.set()
                    if self.hold:
                        await self.released.wait()
                    reply = b"".join(b"VALUE %b 0 %d\r\n%b\r\n" % (key, len(self.store[key]), self.store[key])
                                     for key in words[1:] if key in self.store)
                    await stream.send_all(reply + b"END\r\n")
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            self.open_conns -= 1


# -- the proxy under test -----------------------------------------------------------------

@dataclass
class Running:
    px: InLoopProxy
    conf: Path

    @property
    def state(self) -> ProxyState:
        return self.px.state

    def write(self, text: str) -> None:
        self.conf.write_text(text, encoding="utf-8")

    async def client(self, index: int = 0) -> Client:
        return Client(await self.px.connect(index))


def conf_text(servers: list[Backend], listen: str, name: str = "alpha", **keys: object) -> str:
    lines = [f"{HOST}:{backend.port}:1 s{i}" for i, backend in enumerate(servers, 1)]
    return pool_toml(name, listen, lines, **keys)  # type: ignore[arg-type]


@asynccontextmanager
async def running_proxy(tmp_path: Path, text: str) -> AsyncIterator[Running]:
    """A proxy in this loop on the config ``text`` (written to ``tmp_path/proxy.toml``)."""
    conf = tmp_path / "proxy.toml"
    conf.write_text(text, encoding="utf-8")
    async with proxy_in_loop(load(conf), conf=str(conf)) as px:
        yield Running(px, conf)


@asynccontextmanager
async def backends(n: int) -> AsyncIterator[list[Backend]]:
    async with trio.open_nursery() as nursery:
        made = [Backend() for _ in range(n)]
        for backend in made:
            await nursery.start(backend.serve)
        yield made
        nursery.cancel_scope.cancel()


def owner(conf: Path, key: bytes) -> int:
    """The index of the server the (one) pool of ``conf`` puts ``key`` on."""
    (config,) = load(conf)
    return Continuum(config.servers, hash=config.hash, distribution=config.distribution).server_for(key)


def listen() -> str:
    return f"{HOST}:{free_port()}"


KEYS = [b"key:%d" % i for i in range(40)]


# -- in-process ---------------------------------------------------------------------------

async def test_added_server_takes_its_keys_on_the_same_client_connection(tmp_path: Path) -> None:
    async with backends(2) as (a, b), running_proxy(tmp_path, conf_text([a], L := listen())) as running:
        client = await running.client()
        for key in KEYS:
            assert await client.ask(b"set %b 0 0 1\r\nv\r\n" % key) == b"STORED\r\n"
        assert set(a.store) == set(KEYS)
        running.write(conf_text([a, b], L))
        assert reload(running.state)
        a.store.clear()
        for key in KEYS:
            assert await client.ask(b"set %b 0 0 1\r\nw\r\n" % key) == b"STORED\r\n"
        # Every key is where a proxy started on the new config puts it.
        assert set(a.store) == {k for k in KEYS if owner(running.conf, k) == 0}
        assert set(b.store) == {k for k in KEYS if owner(running.conf, k) == 1}
        assert a.store and b.store
        (pool,) = aggregate(running.state.pools, running.state.groups)
        assert [s.name for s in pool.servers] == ["s1", "s2"]
        assert pool.values["client_connections"] == 1


async def test_request_in_flight_is_answered_by_the_server_it_was_sent_to(tmp_path: Path) -> None:
    async with backends(2) as (a, b), running_proxy(tmp_path, conf_text([a], L := listen())) as running:
        a.store[b"k"] = b"old"
        b.store[b"k"] = b"new"
        client = await running.client()
        a.hold = True
        await client.send(b"get k\r\n")
        with trio.fail_after(TIMEOUT):
            await a.got.wait()
        running.write(conf_text([b], L))  # s1 is replaced by another server
        assert reload(running.state)
        await client.send(b"get k\r\n")  # routed after the reload: to b, answered after the first
        with trio.fail_after(TIMEOUT):
            while b"k" not in b.gets:
                await trio.sleep(0.01)
        a.release()
        assert await client.read_until(b"END\r\nVALUE k 0 3\r\nnew\r\nEND\r\n") == \
            b"VALUE k 0 3\r\nold\r\nEND\r\nVALUE k 0 3\r\nnew\r\nEND\r\n"
        # The retired connection to a closes once its last reply is in, without a failure.
        with trio.fail_after(TIMEOUT):
            while a.open_conns:
                await trio.sleep(0.01)
        (pool,) = aggregate(running.state.pools, running.state.groups)
        assert pool.values["forward_error"] == 0
        assert [s.name for s in pool.servers] == ["s1"] and pool.servers[0].values["server_err"] == 0


async def test_new_connection_settings_retire_the_old_connections(tmp_path: Path) -> None:
    async with backends(1) as (a,), running_proxy(tmp_path, conf_text([a], L := listen())) as running:
        client = await running.client()
        assert await client.ask(b"set k 0 0 1\r\n1\r\n") == b"STORED\r\n"
        assert a.open_conns == 1
        a.hold = True
        await client.send(b"get k\r\n")
        with trio.fail_after(TIMEOUT):
            await a.got.wait()
        running.write(conf_text([a], L, timeout=5000, server_connections=2))
        assert reload(running.state)
        await client.send(b"get k\r\n")  # on a new connection: the old one is retiring
        with trio.fail_after(TIMEOUT):
            while a.open_conns < 2:
                await trio.sleep(0.01)
        a.release()
        assert await client.read_until(b"END\r\nVALUE k 0 1\r\n1\r\nEND\r\n") == b"VALUE k 0 1\r\n1\r\nEND\r\n" * 2
        with trio.fail_after(TIMEOUT):
            while a.open_conns != 1:
                await trio.sleep(0.01)
        (pool,) = aggregate(running.state.pools, running.state.groups)
        assert pool.servers[0].values["server_connections"] == 1
        assert pool.servers[0].values["server_err"] == pool.servers[0].values["server_eof"] == 0


async def test_a_bad_config_is_refused_and_the_running_one_stays(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    async with backends(2) as (a, b), running_proxy(tmp_path, conf_text([a], L := listen())) as running:
        client = await running.client()
        for text, reason in [("[alpha]\nlisten = \n", "line 2"),
                             (conf_text([a, b], L, hash="sha1"), "hash"),
                             (conf_text([b], "192.0.2.1:1"), "failed to listen")]:
            running.write(text)
            with caplog.at_level(logging.ERROR, logger="trio_mc.proxy"):
                caplog.clear()
                assert not reload(running.state)
            assert f"reload of {running.conf} refused" in caplog.text and reason in caplog.text, caplog.text
            assert await client.ask(b"set x 0 0 1\r\nv\r\n") == b"STORED\r\n"
            assert b"x" in a.store and not b.store
        running.conf.unlink()
        with caplog.at_level(logging.ERROR, logger="trio_mc.proxy"):
            assert not reload(running.state)
        assert "cannot read" in caplog.text
        assert await client.ask(b"get x\r\n", b"END\r\n") == b"VALUE x 0 1\r\nv\r\nEND\r\n"


async def test_new_listen_address_opens_old_one_closes_its_clients_stay(tmp_path: Path) -> None:
    async with backends(2) as (a, b), running_proxy(tmp_path, conf_text([a], L := listen())) as running:
        old = running.state.addresses[0]
        assert isinstance(old, tuple)
        first = await running.client()
        port = free_port()
        running.write(conf_text([b], f"{HOST}:{port}")
                      + conf_text([a], listen(), name="beta"))
        assert reload(running.state)
        assert running.state.addresses[0] == (HOST, port)
        assert len(running.state.addresses) == 2
        with pytest.raises(OSError):
            await trio.open_tcp_stream(*old)
        # The client of the old listener stays, on the pool's new servers.
        assert await first.ask(b"set k 0 0 1\r\n1\r\n") == b"STORED\r\n"
        assert b.store == {b"k": b"1"} and not a.store
        second = await running.client(0)
        assert await second.ask(b"get k\r\n", b"END\r\n") == b"VALUE k 0 1\r\n1\r\nEND\r\n"
        beta = await running.client(1)
        assert await beta.ask(b"set j 0 0 1\r\n2\r\n") == b"STORED\r\n"
        assert a.store == {b"j": b"2"}
        totals = {pool.name: pool.values for pool in aggregate(running.state.pools, running.state.groups)}
        assert totals["alpha"]["client_connections"] == 2
        assert totals["beta"]["client_connections"] == 1


async def test_removed_pool_keeps_its_clients(tmp_path: Path) -> None:
    async with backends(1) as (a,), running_proxy(tmp_path, conf_text([a], L := listen())) as running:
        client = await running.client()
        port = free_port()
        running.write(conf_text([a], f"{HOST}:{port}", name="beta"))
        assert reload(running.state)
        assert [c.name for c in running.state.pools] == ["beta"]
        assert await client.ask(b"set k 0 0 1\r\n1\r\n") == b"STORED\r\n"
        (totals,) = aggregate(running.state.pools, running.state.groups)
        assert totals.name == "beta"


# -- a real process -----------------------------------------------------------------------

def _reload_command(conf: str, pid_file: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "trio_mc", "proxy", "-c", conf, "-p", str(pid_file), "--reload"],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=30)


def test_reload_under_load_loses_no_request(tmp_path: Path) -> None:
    """Four clients set and get without pause while the pool switches between one and two
    servers six times (``trio-mc proxy --reload``): every request is answered, no
    connection drops, and the proxy logs each reload."""
    pid_file = tmp_path / "proxy.pid"
    with memcacheds(2) as (m1, m2):
        one = [f"{HOST}:{m1.port}:1 s1"]
        two = [*one, f"{HOST}:{m2.port}:1 s2"]
        proc = start_proxy(lambda p: pool_toml("alpha", f"{HOST}:{p}", one), tmp_path, "-p", str(pid_file), "-T", "2")
        with proc:
            conf = proc.cmd[proc.cmd.index("-c") + 1]
            stop = threading.Event()
            errors: list[BaseException] = []
            counts = [0] * 4

            def load_loop(index: int) -> None:
                client = Pymemcache((HOST, proc.port), timeout=10, connect_timeout=10, default_noreply=False)
                try:
                    n = 0
                    while not stop.is_set() and n < 1_000_000:
                        key = f"c{index}:{n % 50}"
                        assert client.set(key, str(n)), key
                        value = client.get(key)
                        # After a reload the key may be on another server: a miss, or a
                        # value written there earlier (never anything else).
                        assert value is None or (int(value) <= n and int(value) % 50 == n % 50), (key, value)
                        n += 1
                    counts[index] = n
                except BaseException as exc:  # noqa: BLE001 (reported by the test)
                    errors.append(exc)
                finally:
                    client.close()

            threads = [threading.Thread(target=load_loop, args=(i,)) for i in range(4)]
            for thread in threads:
                thread.start()
            try:
                for round_ in range(6):
                    time.sleep(0.3)
                    Path(conf).write_text(pool_toml("alpha", f"{HOST}:{proc.port}", two if round_ % 2 == 0 else one))
                    result = _reload_command(conf, pid_file)
                    assert result.returncode == 0 and "reload requested" in result.stdout, result
                time.sleep(0.3)
            finally:
                stop.set()
                for thread in threads:
                    thread.join(30)
            assert not errors, errors
            assert all(counts), counts
            deadline = time.monotonic() + 10
            while proc.output().count("reloaded") < 6 and time.monotonic() < deadline:
                time.sleep(0.05)
            assert proc.output().count("reloaded") == 6, proc.output()
            assert "refused" not in proc.output()
            # Both servers took traffic, so the reloads did change the pool.
            for backend in (m1, m2):
                direct = Pymemcache((HOST, backend.port), timeout=10)
                assert direct.stats()[b"cmd_set"] > 0
                direct.close()


def test_reload_command_checks_the_config_and_needs_a_running_proxy(tmp_path: Path) -> None:
    conf = tmp_path / "bad.toml"
    conf.write_text("[alpha]\nlisten = 1\n")
    result = _reload_command(str(conf), tmp_path / "none.pid")
    assert result.returncode == 1 and "is invalid" in result.stderr, result
    conf.write_text(pool_toml("alpha", f"{HOST}:1", [f"{HOST}:2:1"]))
    result = _reload_command(str(conf), tmp_path / "none.pid")
    assert result.returncode == 1 and "cannot signal the proxy" in result.stderr, result
    result = subprocess.run([sys.executable, "-m", "trio_mc", "proxy", "-c", str(conf), "--reload"],
                            cwd=REPO_ROOT, capture_output=True, text=True, timeout=30)
    assert result.returncode != 0 and "-p FILE" in result.stderr, result


def test_sigusr1_with_a_bad_file_keeps_serving(tmp_path: Path) -> None:
    with memcacheds(1) as (m1,):
        proc = start_proxy(lambda p: pool_toml("alpha", f"{HOST}:{p}", [f"{HOST}:{m1.port}:1"]), tmp_path)
        with proc:
            assert proc.proc is not None
            conf = proc.cmd[proc.cmd.index("-c") + 1]
            Path(conf).write_text("not toml [")
            os.kill(proc.proc.pid, signal.SIGUSR1)
            deadline = time.monotonic() + 10
            while "refused" not in proc.output() and time.monotonic() < deadline:
                time.sleep(0.05)
            assert "signal 10 (SIGUSR1) received, reloading config" in proc.output()
            assert "refused, the running config stays" in proc.output()
            client = Pymemcache((HOST, proc.port), timeout=10, default_noreply=False)
            assert client.set("k", "v") and client.get("k") == b"v"
            client.close()
