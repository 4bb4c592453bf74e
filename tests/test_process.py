"""The real ``trio-mc serve`` process: flags, signals, limits, memory."""

from __future__ import annotations

import os
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import closing

import pytest
from procs import REPO_ROOT, ServerProcess, ask, rss_kib, start_trio_mc

SERVE = [sys.executable, "-m", "trio_mc", "serve"]


def _stats(port: int) -> dict[str, str]:
    with closing(socket.create_connection(("127.0.0.1", port), timeout=10)) as s:
        reply = ask(s, b"stats\r\n", b"END\r\n").decode()
    return {line.split()[1]: line.split()[2] for line in reply.splitlines() if line.startswith("STAT ")}


@pytest.fixture
def server() -> Iterator[ServerProcess]:
    proc = start_trio_mc("-t", "2")
    yield proc
    proc.close()


@pytest.mark.parametrize("args, message", [
    (["-t", "0"], "Number of threads must be greater than 0"),
    (["-o", "bogus"], 'Illegal suboption "bogus"'),
    (["-I", "512"], "Item max size cannot be less than 1024 bytes."),
    (["-m", "1", "-I", "1m"], "Cannot set item size limit higher than 1/2 of memory max."),
    (["-c", "x"], "Maximum connections must be greater than 0"),  # atoi, as memcached
    (["-B", "fancy"], "Invalid value for binding protocol"),
])
def test_invalid_flags_exit_with_a_message(args: list[str], message: str) -> None:
    result = subprocess.run([*SERVE, *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=30)
    assert result.returncode != 0
    assert message in result.stdout + result.stderr


def test_help_lists_memcached_flags() -> None:
    result = subprocess.run([*SERVE, "-h"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=30)
    assert result.returncode == 0 and "--unix-socket" in result.stdout and "-o, --extended" in result.stdout


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_signals_stop_cleanly(signum: int) -> None:
    proc = start_trio_mc("-t", "4")
    try:
        clients = [socket.create_connection(("127.0.0.1", proc.port), timeout=5) for _ in range(20)]
        assert all(ask(c, b"version\r\n") == b"VERSION 1.6.18\r\n" for c in clients)
        assert proc.proc is not None
        proc.proc.send_signal(signum)
        assert proc.proc.wait(timeout=10) == 0
        assert "Traceback" not in proc.output()
        assert all(c.recv(10) == b"" for c in clients)
        for c in clients:
            c.close()
    finally:
        proc.close()


def test_sigusr1_under_load_loses_no_acknowledged_reply() -> None:
    proc = start_trio_mc("-t", "2")
    acked: list[list[int]] = [[] for _ in range(6)]
    stop = threading.Event()

    def client(n: int) -> None:
        with closing(socket.create_connection(("127.0.0.1", proc.port), timeout=10)) as s:
            for i in range(100_000):
                if stop.is_set() and i % 50 == 0:
                    time.sleep(0.001)
                try:
                    reply = ask(s, b"set c%d:%d 0 0 3\r\n%03d\r\n" % (n, i, i % 1000))
                except OSError:
                    return
                if reply != b"STORED\r\n":
                    assert reply == b"", reply  # only a clean close, never a torn reply
                    return
                acked[n].append(i)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(6)]
    try:
        for t in threads:
            t.start()
        time.sleep(1.0)
        assert proc.proc is not None
        stop.set()
        proc.proc.send_signal(signal.SIGUSR1)
        assert proc.proc.wait(timeout=20) == 0
        for t in threads:
            t.join(timeout=20)
        assert all(acked), "every client had acknowledged writes before the shutdown"
    finally:
        proc.close()


def test_maxconns_rejects_with_memcached_error_and_keeps_serving() -> None:
    proc = start_trio_mc("-c", "24", "-t", "1")
    try:
        first = socket.create_connection(("127.0.0.1", proc.port), timeout=5)
        assert ask(first, b"version\r\n") == b"VERSION 1.6.18\r\n"
        others = [socket.create_connection(("127.0.0.1", proc.port), timeout=5) for _ in range(30)]
        replies = []
        for s in others:  # a refused client is told at once, without asking anything
            s.settimeout(0.5)
            try:
                replies.append(s.recv(100))
            except TimeoutError:
                s.settimeout(5)
                replies.append(ask(s, b"version\r\n"))
        assert b"ERROR Too many open connections\r\n" in replies
        assert b"VERSION 1.6.18\r\n" in replies
        reply = ask(first, b"stats\r\n", b"END\r\n")
        rejected = int(reply.split(b"STAT rejected_connections ")[1].split(b"\r\n")[0])
        assert rejected == replies.count(b"ERROR Too many open connections\r\n") > 0
        for s in [first, *others]:
            s.close()
    finally:
        proc.close()


def test_unix_socket_with_mask() -> None:
    path = os.path.join(tempfile.mkdtemp(), "mc.sock")
    proc = subprocess.Popen([*SERVE, "-s", path, "-a", "600"], cwd=REPO_ROOT)
    try:
        deadline = time.monotonic() + 10
        while not os.path.exists(path) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        with closing(socket.socket(socket.AF_UNIX)) as s:
            s.connect(path)
            assert ask(s, b"set u 0 0 1\r\nx\r\nget u\r\n", b"END\r\n") == b"STORED\r\nVALUE u 0 1\r\nx\r\nEND\r\n"
            assert b"addr unix:" + path.encode() in ask(s, b"stats conns\r\n", b"END\r\n")
    finally:
        proc.terminate()
        assert proc.wait(timeout=10) == 0
    assert not os.path.exists(path)


def test_huge_declared_value_is_swallowed_without_buffering(server: ServerProcess) -> None:
    assert server.proc is not None
    with closing(socket.create_connection(("127.0.0.1", server.port), timeout=10)) as s:
        assert ask(s, b"version\r\n") == b"VERSION 1.6.18\r\n"
        before = rss_kib(server.proc.pid)
        s.sendall(b"set big 0 0 2000000000\r\n")
        assert ask(s, b"") == b"SERVER_ERROR object too large for cache\r\n"
        chunk = b"z" * (1 << 20)
        for _ in range(200):  # 200 MiB of the declared 2 GB
            s.sendall(chunk)
        assert rss_kib(server.proc.pid) - before < 20_000
        assert _stats(server.port)["store_too_large"] == "1"


def test_memory_limit_bounds_the_process() -> None:
    proc = start_trio_mc("-m", "16", "-t", "1")
    try:
        assert proc.proc is not None
        # The baseline is taken once every code path the test uses has run (a set, a get, a
        # stats): what grows after it is the cache, not first-use imports and compilation.
        with closing(socket.create_connection(("127.0.0.1", proc.port), timeout=30)) as s:
            assert ask(s, b"set warm 0 0 1\r\nv\r\nget warm\r\n", b"END\r\n").startswith(b"STORED")
        _stats(proc.port)
        empty = rss_kib(proc.proc.pid)
        value = b"v" * 100
        with closing(socket.create_connection(("127.0.0.1", proc.port), timeout=30)) as s:
            batch = 1000
            for start in range(0, 4 * 16 * 1024 * 1024 // 150, batch):  # 4x -m of 150-byte items
                s.sendall(b"".join(b"set key:%d 0 0 100 noreply\r\n%b\r\n" % (i, value)
                                   for i in range(start, start + batch)))
            assert ask(s, b"version\r\n") == b"VERSION 1.6.18\r\n"
        stats = _stats(proc.port)
        assert int(stats["evictions"]) > 0
        grown_kib = rss_kib(proc.proc.pid) - empty
        assert grown_kib <= 1.10 * 16 * 1024, f"RSS grew {grown_kib} KiB for -m 16"
    finally:
        proc.close()


def test_port_file_and_udp_binding(tmp_path: os.PathLike[str]) -> None:
    port_file = os.path.join(str(tmp_path), "ports")
    env = dict(os.environ, MEMCACHED_PORT_FILENAME=port_file)
    proc = subprocess.Popen([*SERVE, "-p", "-1", "-U", "-1"], cwd=REPO_ROOT, env=env)
    try:
        deadline = time.monotonic() + 10
        while not os.path.exists(port_file) and time.monotonic() < deadline:
            time.sleep(0.05)
        with open(port_file) as f:
            ports = dict(line.split(": ") for line in f.read().splitlines())
        tcp, udp = int(ports["TCP INET"]), int(ports["UDP INET"])
        assert tcp != 11211 and udp != 11211
        with closing(socket.create_connection(("127.0.0.1", tcp), timeout=5)) as s:
            conns = ask(s, b"stats conns\r\n", b"END\r\n")
        assert b"addr udp:127.0.0.1:%d" % udp in conns
    finally:
        proc.terminate()
        assert proc.wait(timeout=10) == 0
