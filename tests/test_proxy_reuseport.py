"""Several ``trio-mc proxy`` processes on one port (``reuseport = true``), over real sockets.

On CPython with the GIL, worker threads (``-T``) do not add cores; processes do.  Two
proxies are started on the same config (each with a stats port of its own), 40 clients
connect to the shared port and are all served, the kernel spreads them over both processes
(each one's stats count client connections), and when one process stops the other keeps
serving the port.  nutcracker 0.5.0 refuses the key: what it prints is checked too.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from contextlib import ExitStack
from pathlib import Path

from procs import (
    HOST,
    NUTCRACKER,
    REPO_ROOT,
    ServerProcess,
    ask,
    free_port,
    memcacheds,
    pool_toml,
    pool_yaml,
    wait_for_port,
)

CLIENTS = 40
INTERVAL = 100  # ms: -i, the stats aggregation interval
SETTLE = 0.5  # s: for an aggregation to have run after the last connection


def _client_connections(stats_port: int) -> int:
    """The pool's ``client_connections`` as one proxy's stats listener reports it."""
    with socket.create_connection((HOST, stats_port), timeout=5) as sock:
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    count: int = json.loads(data)["alpha"]["client_connections"]
    return count


def _proxy(conf: Path, port: int, stats_port: int) -> ServerProcess:
    cmd = [sys.executable, "-m", "trio_mc", "proxy", "-c", str(conf), "-s", str(stats_port),
           "-i", str(INTERVAL)]
    return ServerProcess(cmd, port, cwd=REPO_ROOT, name="trio_mc_proxy")


def test_two_processes_share_a_port(tmp_path: Path) -> None:
    port, stats = free_port(), (free_port(), free_port())
    with memcacheds(1) as [mc], ExitStack() as stack:
        conf = tmp_path / "pools.toml"
        conf.write_text(pool_toml("alpha", f"{HOST}:{port}", [f"{HOST}:{mc.port}:1"], reuseport=True))
        first, second = (stack.enter_context(_proxy(conf, port, s)) for s in stats)
        # The second process's own readiness: its stats port answers once the pool's
        # socket is bound (it binds the pools first), the shared port answered already.
        assert wait_for_port(stats[1]), second.output()
        clients = [stack.enter_context(socket.create_connection((HOST, port), timeout=10))
                   for _ in range(CLIENTS)]
        for i, sock in enumerate(clients):
            assert ask(sock, b"set k%d 0 0 1\r\n%d\r\n" % (i, i % 10)) == b"STORED\r\n"
        for i, sock in enumerate(clients):
            assert ask(sock, b"get k%d\r\n" % i, b"END\r\n") == b"VALUE k%d 0 1\r\n%d\r\nEND\r\n" % (i, i % 10)
        time.sleep(SETTLE)
        counts = [_client_connections(s) for s in stats]
        assert sum(counts) == CLIENTS and min(counts) > 0, counts  # both took a share
        for sock in clients:
            sock.close()
        first.stop()
        assert first.proc is not None and first.proc.returncode == 0, first.output()
        # The port is the second's alone now: every new client is served by it.
        for i in range(10):
            with socket.create_connection((HOST, port), timeout=10) as sock:
                assert ask(sock, b"get k%d\r\n" % i, b"END\r\n") == b"VALUE k%d 0 1\r\n%d\r\nEND\r\n" % (i, i)
        assert second.proc is not None and second.proc.poll() is None, second.output()


def test_without_reuseport_a_second_process_cannot_bind(tmp_path: Path) -> None:
    port = free_port()
    with memcacheds(1) as [mc]:
        conf = tmp_path / "pools.toml"
        conf.write_text(pool_toml("alpha", f"{HOST}:{port}", [f"{HOST}:{mc.port}:1"]))
        with _proxy(conf, port, free_port()):
            cmd = [sys.executable, "-m", "trio_mc", "proxy", "-c", str(conf), "-s", str(free_port())]
            second = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, timeout=30, check=False)
    assert second.returncode == 1 and b"Address already in use" in second.stderr, second


def test_nutcracker_refuses_reuseport(tmp_path: Path) -> None:
    """nutcracker 0.5.0 knows no ``reuseport``: the config is refused, with one line that
    does not name the key (``-t`` prints it twice), exit status 1."""
    conf = tmp_path / "pools.yml"
    conf.write_text(pool_yaml("alpha", f"{HOST}:{free_port()}", [f"{HOST}:11211:1"], reuseport=True))
    line = f"nutcracker: configuration file '{conf}' syntax is invalid\n".encode()
    checked = subprocess.run([NUTCRACKER, "-t", "-c", str(conf)], capture_output=True, timeout=10, check=False)
    assert (checked.returncode, checked.stdout, checked.stderr) == (1, b"", line * 2)
    started = subprocess.run([NUTCRACKER, "-c", str(conf), "-s", str(free_port()), "-a", HOST],
                             capture_output=True, timeout=10, check=False)
    assert (started.returncode, started.stdout, started.stderr) == (1, b"", line)
