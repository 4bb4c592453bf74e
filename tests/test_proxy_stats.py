"""The stats listener, differential against real nutcracker 0.5.0.

Both proxies get the same pools over the same backends (two real memcached and one refused
port, with auto_eject_hosts) and the same requests, one client after the other; then each
stats JSON is read.  Their text must match byte for byte once values are masked (key
order, separators, the final newline), and the counters must be equal, except
``request_bytes``: nutcracker rewrites every multi-get it forwards as ``get k1 k2 \\r\\n``
(a space before CRLF), one byte more per fragment than trio-mc sends.
"""

from __future__ import annotations

import functools
import json
import re
import shutil
import signal
import socket
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from procs import REPO_ROOT, ServerProcess, ask, free_port, start_memcached

from trio_mc.proxy.config import load
from trio_mc.proxy.distribution import Continuum

NUTCRACKER = shutil.which("nutcracker") or "/usr/sbin/nutcracker"
HOST = "127.0.0.1"
INTERVAL = 100  # ms: -i for both proxies
SETTLE = 0.5  # s: after the last request, for an aggregation to have run in each


def _pools(listen: tuple[int, int], mc1: int, mc2: int, dead: int) -> str:
    """Two pools, written in an order nutcracker lists differently (it sorts them)."""
    return f"""\
alpha:
  listen: {HOST}:{listen[0]}
  hash: fnv1a_64
  distribution: ketama
  auto_eject_hosts: true
  server_failure_limit: 2
  server_retry_timeout: 30000
  servers:
   - {HOST}:{mc1}:1 mc1
   - {HOST}:{mc2}:1
   - {HOST}:{dead}:1 dead
beta:
  listen: {HOST}:{listen[1]}
  servers:
   - {HOST}:{mc2}:1
"""


def _stats(port: int) -> bytes:
    with socket.create_connection((HOST, port), timeout=5) as sock:
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    return data


def _skeleton(text: bytes) -> bytes:
    """The JSON text with every value masked."""
    return re.sub(rb'":(\d+|"[^"]*")', b'":_', text)


@pytest.fixture(scope="module")
def backends() -> Iterator[tuple[int, int]]:
    with start_memcached() as mc1, start_memcached() as mc2:
        yield mc1.port, mc2.port


def _run_both(tmp_path: Path, backends: tuple[int, int]) -> tuple[dict, dict, bytes, bytes, int]:  # type: ignore[type-arg]
    """Start both proxies, send the sequence through each, return their stats."""
    mc1, mc2 = backends
    dead = free_port()
    results = []
    for name in ("nutcracker", "trio-mc"):
        listen = (free_port(), free_port())
        stats_port = free_port()
        conf = tmp_path / f"{name}.yml"
        conf.write_text(_pools(listen, mc1, mc2, dead))
        if name == "nutcracker":
            cmd = [NUTCRACKER, "-c", str(conf), "-s", str(stats_port), "-a", HOST, "-i", str(INTERVAL)]
        else:
            cmd = [sys.executable, "-m", "trio_mc", "proxy", "-c", str(conf), "-s", str(stats_port),
                   "-i", str(INTERVAL)]
        with ServerProcess(cmd, listen[0], cwd=REPO_ROOT, name=name) as proc:
            fragments = _sequence(conf, listen)
            time.sleep(SETTLE)
            text = _stats(stats_port)
            assert proc.proc is not None and proc.proc.poll() is None, proc.output()
        results.append(text)
    nc_text, tm_text = results
    return json.loads(nc_text), json.loads(tm_text), nc_text, tm_text, fragments


def _sequence(conf: Path, listen: tuple[int, int]) -> int:
    """The requests; returns how many multi-get fragments went to server mc1."""
    alpha = next(p for p in load(conf) if p.name == "alpha")
    continuum = Continuum(alpha.servers, hash=alpha.hash, distribution=alpha.distribution)
    keys = [b"k%d" % i for i in range(400)]
    dead_index = [s.name for s in alpha.servers].index("dead")
    dead_key = next(k for k in keys if continuum.server_for(k) == dead_index)
    live = [k for k in keys if continuum.server_for(k) != dead_index][:6]
    with socket.create_connection((HOST, listen[0]), timeout=5) as sock:
        for key in live:
            assert ask(sock, b"set %s 0 0 2\r\nhi\r\n" % key) == b"STORED\r\n"
        for key in live:
            assert ask(sock, b"get %s\r\n" % key, b"END\r\n").startswith(b"VALUE")
        reply = ask(sock, b"get " + b" ".join(live) + b"\r\n", b"END\r\n")
        assert reply.count(b"VALUE") == len(live)
        for _ in range(2):  # the failure limit: then the dead server is ejected
            assert ask(sock, b"get %s\r\n" % dead_key) == b"SERVER_ERROR Connection refused\r\n"
        assert ask(sock, b"get %s\r\n" % dead_key, b"END\r\n") == b"END\r\n"
    with socket.create_connection((HOST, listen[1]), timeout=5) as beta:
        assert ask(beta, b"version\r\n").startswith(b"VERSION ")
        still_open = socket.create_connection((HOST, listen[1]), timeout=5)
        assert ask(still_open, b"delete nothing\r\n") == b"NOT_FOUND\r\n"
    # still_open stays open through the stats read: client_connections 1 in beta.
    _OPEN.append(still_open)
    mc1_index = [s.name for s in alpha.servers].index("mc1")
    return 1 if any(continuum.server_for(k) == mc1_index for k in live) else 0


_OPEN: list[socket.socket] = []


@pytest.fixture(autouse=True)
def _close_open() -> Iterator[None]:
    yield
    while _OPEN:
        _OPEN.pop().close()


def test_stats_match_nutcracker(tmp_path: Path, backends: tuple[int, int]) -> None:
    nc, tm, nc_text, tm_text, mc1_fragments = _run_both(tmp_path, backends)
    # The text: same keys, same order, same separators, one newline at the end.
    assert _skeleton(tm_text) == _skeleton(nc_text)
    assert tm_text.endswith(b"}\n") and nc_text.endswith(b"}\n")
    assert list(nc) == list(tm)
    assert list(tm)[7:] == ["beta", "alpha"]  # nutcracker's order, not the file's
    assert tm["service"] == "nutcracker" and tm["source"] == socket.gethostname()
    assert abs(tm["timestamp"] - time.time()) < 30 and 0 <= tm["uptime"] < 30
    for field in ("total_connections", "curr_connections"):
        assert tm[field] == nc[field], field
    for pool in ("alpha", "beta"):
        for field, value in nc[pool].items():
            if isinstance(value, dict):
                continue
            assert tm[pool][field] == value, (pool, field)
        for server, values in nc[pool].items():
            if not isinstance(values, dict):
                continue
            for field, value in values.items():
                mine = tm[pool][server][field]
                if field == "server_ejected_at":
                    assert (mine > 0) == (value > 0), (pool, server, field)
                elif field == "request_bytes" and server == "mc1":
                    assert value == mine + mc1_fragments, (pool, server, field)
                elif field == "request_bytes" and server.startswith(HOST) and pool == "alpha":
                    assert value - mine in (0, 1), (pool, server, field)
                else:
                    assert mine == value, (pool, server, field)
    assert tm["alpha"]["server_ejects"] == 1 and tm["alpha"]["forward_error"] == 2
    assert tm["alpha"]["dead"]["server_err"] == 2 and tm["beta"]["client_connections"] == 1


def _logged(log: Path, text: str, count: int) -> bool:
    return log.read_text().count(text) == count


def _wait_for(predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate() and time.monotonic() < deadline:
        time.sleep(0.02)
    return predicate()


@pytest.mark.parametrize(("last", "code"), [(signal.SIGINT, 1), (signal.SIGTERM, 0)])
def test_signals_log_file_and_pid_file(tmp_path: Path, backends: tuple[int, int],
                                       last: signal.Signals, code: int) -> None:
    """nutcracker's signal lines in the -o file; SIGHUP reopens it (logrotate); -p's file
    lives as long as the process; SIGINT exits 1 as nutcracker, SIGTERM 0."""
    listen = free_port()
    conf = tmp_path / "pool.yml"
    conf.write_text(f"alpha:\n  listen: {HOST}:{listen}\n  servers:\n   - {HOST}:{backends[0]}:1\n")
    log, pid = tmp_path / "proxy.log", tmp_path / "proxy.pid"
    cmd = [sys.executable, "-m", "trio_mc", "proxy", "-c", str(conf), "-s", str(free_port()),
           "-o", str(log), "-p", str(pid)]
    with ServerProcess(cmd, listen, cwd=REPO_ROOT, name="trio-mc-proxy") as proc:
        assert proc.proc is not None
        assert pid.read_text() == f"{proc.proc.pid}\n"
        for count, signum in enumerate((signal.SIGTTIN, signal.SIGTTOU, signal.SIGTTOU), 1):
            proc.proc.send_signal(signum)  # one at a time: two pending alike would merge
            assert _wait_for(functools.partial(_logged, log, "log level to", count)), log.read_text()
        log.rename(tmp_path / "proxy.log.1")
        proc.proc.send_signal(signal.SIGHUP)
        assert _wait_for(log.exists)
        proc.proc.send_signal(last)
        assert proc.proc.wait(timeout=10) == code
    rotated = (tmp_path / "proxy.log.1").read_text()
    assert "started on pid" in rotated
    lines = [line.split(" ", 3)[-1] for line in rotated.splitlines()[1:]]
    assert lines == ["signal 21 (SIGTTIN) received, up logging level", "up log level to 6",
                     "signal 22 (SIGTTOU) received, down logging level", "down log level to 5",
                     "signal 22 (SIGTTOU) received, down logging level", "down log level to 4",
                     "signal 1 (SIGHUP) received, reopening log file"]
    # Written whatever the level (4 now), as nutcracker's signal lines are.
    name = signal.Signals(last).name
    assert log.read_text().split(" ", 3)[-1] == f"signal {int(last)} ({name}) received, exiting\n"
    assert not pid.exists()
