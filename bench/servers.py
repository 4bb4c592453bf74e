"""Server processes for the benchmark scripts (bench/run.py, bench/memory.py).

Start a server command, wait until it answers ``version`` on 127.0.0.1, stop it
(SIGTERM, then SIGKILL, to its whole process group).  The command is exec'd
directly (callers' wrappers such as taskset/chrt/nice exec too), so ``pid`` is
the server process itself.  Standard library only.
"""

from __future__ import annotations

import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent
OUT_DIR = BENCH_DIR / "out"


class BenchError(Exception):
    pass


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    """One server process; its output is appended to logfile (default
    bench/out/<name>.log)."""

    name: str
    cmd: list[str]
    port: int
    proc: subprocess.Popen[bytes] | None = None
    logfile: Path | None = None
    _log: BinaryIO | None = field(default=None, repr=False)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def exit_code(self) -> int | None:
        """The exit status if the process has ended, else None."""
        assert self.proc is not None
        return self.proc.poll()

    def start(self, ready_timeout: float) -> None:
        OUT_DIR.mkdir(exist_ok=True)
        if self.logfile is None:
            self.logfile = OUT_DIR / f"{self.name}.log"
        self._log = open(self.logfile, "ab")
        self._log.write(f"\n=== {time.strftime('%F %T')} {shlex.join(self.cmd)}\n".encode())
        self._log.flush()
        self.proc = subprocess.Popen(
            self.cmd, cwd=REPO_DIR, stdin=subprocess.DEVNULL, stdout=self._log,
            stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + ready_timeout
        attempt = 0
        while attempt < 10000:
            attempt += 1
            if self.proc.poll() is not None:
                raise BenchError(f"{self.name} exited with {self.proc.returncode} before "
                                 f"accepting connections; see {self.logfile}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1.0) as s:
                    s.sendall(b"version\r\n")
                    s.settimeout(2.0)
                    reply = s.recv(256)
                    if reply:
                        if not reply.startswith(b"VERSION"):
                            log(f"warning: {self.name} answered 'version' with {reply[:60]!r}")
                        return
            except (ConnectionRefusedError, ConnectionResetError, socket.timeout):
                pass
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise BenchError(f"{self.name} did not accept connections on port {self.port} "
                                 f"within {ready_timeout:.0f}s; see {self.logfile}")
            time.sleep(0.05)
        raise BenchError(f"{self.name}: too many connection attempts")

    def stop(self) -> None:
        p = self.proc
        if p is not None and p.returncode is None:
            # Signal the server's process group (it runs in its own session).  The
            # leader is checked with WNOWAIT so it stays a zombie, and its pid/pgid
            # cannot be reused, until we have also swept the rest of its group.
            for sig in (signal.SIGTERM, signal.SIGKILL):
                try:
                    os.killpg(p.pid, sig)
                except ProcessLookupError:
                    break
                if _wait_exit_nowait(p.pid, 5.0):
                    break
            try:
                os.killpg(p.pid, signal.SIGKILL)  # stragglers (worker processes)
            except ProcessLookupError:
                pass
            try:
                p.wait(timeout=5.0)
            except subprocess.TimeoutExpired:
                log(f"warning: {self.name} (pid {p.pid}) did not exit")
        if self._log is not None:
            self._log.close()
            self._log = None
        self.proc = None


def _wait_exit_nowait(pid: int, timeout: float) -> bool:
    """Wait until pid has exited without reaping it; bounded by timeout."""
    deadline = time.monotonic() + timeout
    for _ in range(int(timeout / 0.02) + 2):
        try:
            if os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT | os.WNOHANG) is not None:
                return True
        except ChildProcessError:
            return True
        if time.monotonic() > deadline:
            break
        time.sleep(0.02)
    return False
