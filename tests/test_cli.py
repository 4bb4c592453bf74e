"""``trio-mc serve`` as a process: ``-d`` and ``-P`` as memcached, ``-v`` output, and the
``trio_mc`` logger that carries the diagnostics."""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path

import pytest
import trio
from helpers import ClientFactory
from procs import REPO_ROOT, ask, exited, free_port, start_trio_mc, wait_for_port

from trio_mc.server.state import ServerState

DEADLINE = 10.0


def _wait(condition: object, what: str) -> None:
    deadline = time.monotonic() + DEADLINE
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def test_daemon_detaches_and_keeps_its_pid_file_while_it_runs(tmp_path: Path) -> None:
    pidfile, port = tmp_path / "trio-mc.pid", free_port()
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    started = subprocess.run([sys.executable, "-m", "trio_mc", "serve", "-d", "-P", str(pidfile),
                              "-l", "127.0.0.1", "-p", str(port)], cwd=tmp_path, env=env,
                             capture_output=True, timeout=30)
    assert (started.returncode, started.stdout, started.stderr) == (0, b"", b"")  # the parent
    _wait(pidfile.exists, "the pid file")
    pid = int(pidfile.read_text())
    try:
        assert os.getsid(pid) == pid  # its own session (memcached: one fork, then setsid)
        assert os.readlink(f"/proc/{pid}/cwd") == "/"  # tmp_path is not held
        assert {os.readlink(f"/proc/{pid}/fd/{fd}") for fd in (0, 1, 2)} == {"/dev/null"}
        assert wait_for_port(port, DEADLINE)
        with closing(socket.create_connection(("127.0.0.1", port), timeout=10)) as s:
            assert ask(s, b"stats\r\n", b"END\r\n").startswith(b"STAT pid %d\r\n" % pid)
    finally:
        os.kill(pid, signal.SIGTERM)
        _wait(lambda: exited(pid), "the daemon to exit")
    _wait(lambda: not pidfile.exists(), "the pid file to be removed")


def test_pid_file_without_daemon_is_written_and_left(tmp_path: Path) -> None:
    """memcached 1.6.18 writes ``-P`` without ``-d`` too (its help says "only used with -d"),
    and removes it at exit only when it daemonized."""
    pidfile = tmp_path / "pid"
    server = start_trio_mc("-P", str(pidfile))
    try:
        assert server.proc is not None
        assert pidfile.read_text() == f"{server.proc.pid}\n"
    finally:
        assert server.stop() == 0
        server.close()
    assert pidfile.exists()


def test_verbose_says_where_it_listens_and_vv_adds_memcacheds_lines() -> None:
    server = start_trio_mc("-vv")
    try:
        with closing(socket.create_connection(("127.0.0.1", server.port), timeout=10)) as s:
            assert ask(s, b"version\r\n") == b"VERSION 1.6.18\r\n"
            fd = next(line.split()[0][1:] for line in server.output().splitlines()
                      if line.endswith(" version"))
        _wait(lambda: f"<{fd} connection closed." in server.output(), "the close line")
        lines = server.output().splitlines()
        assert lines[0] == "slab class   1: chunk size        96 perslab   10922"
        assert any(line.endswith(" server listening (auto-negotiate)") and line.startswith("<")
                   for line in lines)
        assert any(line.startswith("trio-mc ") and line.endswith(f" listening on tcp:127.0.0.1:{server.port}")
                   for line in lines)
        assert f">{fd} VERSION 1.6.18" in lines
    finally:
        server.close()
    quiet = start_trio_mc("-v")
    try:
        _wait(lambda: "listening on" in quiet.output(), "the listening line")
        assert quiet.output() == f"trio-mc {quiet.output().split()[1]} listening on tcp:127.0.0.1:{quiet.port}\n"
    finally:
        quiet.close()


async def test_vv_lines_are_log_records(connect: ClientFactory, server_state: ServerState,
                                        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, "trio_mc")
    server_state.settings.verbose = 2
    c = await connect()
    assert await c.ask(b"version\r\n") == b"VERSION 1.6.18\r\n"
    said = [(r.name, r.levelno, r.getMessage()) for r in caplog.records]
    fd = server_state.conns and next(iter(server_state.conns))
    assert said == [("trio_mc", logging.INFO, f"<{fd} new auto-negotiating client connection"),
                    ("trio_mc", logging.INFO, f"<{fd} version"),
                    ("trio_mc", logging.INFO, f">{fd} VERSION 1.6.18")]


async def test_internal_error_logs_its_traceback(connect: ClientFactory, server_state: ServerState,
                                                 caplog: pytest.LogCaptureFixture,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: object, **kw: object) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(server_state.store, "get_one", broken)
    c = await connect()
    await c.send(b"get k\r\n")
    with trio.fail_after(5):
        assert await c.stream.receive_some() == b""  # the connection is closed
    [record] = [r for r in caplog.records if "internal error" in r.getMessage()]
    assert record.name == "trio_mc" and record.levelno == logging.ERROR
    assert record.getMessage().endswith(" closing on internal error: RuntimeError('boom')")
    assert record.exc_info is not None and "in broken" in caplog.text  # the traceback
    c2 = await connect()
    assert await c2.ask(b"version\r\n") == b"VERSION 1.6.18\r\n"
