"""Helpers for tests that run server processes (real memcached, trio-mc).

Small API, usable from any test module::

    from procs import free_port, ServerProcess, start_memcached, start_trio_mc
    # (pytest puts tests/ on sys.path; use tests.procs if tests/ is a package)

    with start_memcached("-C") as mc:          # started and ready here
        sock = socket.create_connection(("127.0.0.1", mc.port))
        ...
    # stopped here: SIGTERM, bounded wait, then SIGKILL

* ``require_memcached()`` -- skip the calling test unless ``memcached -V`` is exactly
  :data:`MEMCACHED_NEEDED` (the version the differential tests are written against); with
  ``TRIO_MC_REQUIRE_DIFFERENTIAL=1`` (CI) it fails instead.  ``start_memcached`` calls it.
* ``free_port()`` -- an unused TCP port on 127.0.0.1 (bind to port 0).
* ``ServerProcess(cmd, port)`` -- runs ``cmd`` (a list), waits until
  127.0.0.1:port accepts connections (bounded), exposes ``.port``, ``.proc``
  and ``.output()`` (the captured stdout+stderr, for error messages).
  ``start()``/``stop()`` or use it as a context manager; ``stop()`` is
  idempotent and always leaves no process behind.  ``terminate()`` only
  sends SIGTERM (to stop several servers in parallel; follow with
  ``close()``).
* ``start_memcached(*extra)`` / ``start_trio_mc(*extra)`` -- started
  ``ServerProcess`` objects listening on 127.0.0.1 on a fresh port.
* ``ask(sock, request, end)`` -- send a request on a blocking socket and read
  until the reply ends with ``end`` (bounded: 10 s).
* ``read_quiet(sock, quiet, limit)`` -- read until ``quiet`` seconds pass without
  a byte (at most ``limit``); returns the bytes and whether the peer closed.
* ``rss_kib(pid)`` -- a process's resident set size (``VmRSS``), in KiB.
* ``exited(pid)`` -- whether a process (a daemon, not our child) has exited.
* ``Attackers(port, rcvbuf)`` -- clients that send requests and never read the replies,
  opened one by one (``attack(requests)``) and closed together (``close()``), from any
  thread.
* ``start_proxy(make_conf, directory, *extra)`` / ``start_nutcracker(make_conf,
  directory)`` -- ``trio-mc proxy -c FILE`` and ``nutcracker -c FILE`` on a pool
  config ``make_conf(port)`` returns (its first pool must listen on
  127.0.0.1:port); the file is written into ``directory``.
* ``memcacheds(n, *extra)`` -- a context manager: ``n`` started memcached
  (``start_memcached``), stopped together (SIGTERM to all, then wait) on exit.
* ``pool_toml(name, listen, servers, **keys)`` / ``pool_yaml(...)`` -- one pool's
  text in trio-mc's TOML or nutcracker's YAML (values as Python str/int/bool).

Only 127.0.0.1 is used.  If the process exits before its port accepts
(e.g. the port was taken in the meantime), start is retried on a new port a
couple of times.
"""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, Self

import pytest

__all__ = [
    "HOST",
    "MEMCACHED",
    "MEMCACHED_NEEDED",
    "NUTCRACKER",
    "REPO_ROOT",
    "Attackers",
    "ServerProcess",
    "ServerStartError",
    "ask",
    "exited",
    "free_port",
    "memcacheds",
    "pool_toml",
    "pool_yaml",
    "read_quiet",
    "require_memcached",
    "rss_kib",
    "start_memcached",
    "start_nutcracker",
    "start_proxy",
    "start_trio_mc",
    "wait_for_port",
]

HOST = "127.0.0.1"
REPO_ROOT = Path(__file__).resolve().parent.parent
MEMCACHED = shutil.which("memcached") or "/usr/bin/memcached"
NUTCRACKER = shutil.which("nutcracker") or "/usr/sbin/nutcracker"

#: memcached's replies, counters and messages differ between versions; the tests compare
#: trio-mc with this one (Debian 12's package).
MEMCACHED_NEEDED = "1.6.18"
#: What the skip says, so that CI can tell (and fail) when these tests did not run.
SKIP_REASON = "tests against real memcached need memcached {needed}, found: {found}"

START_TIMEOUT = 10.0  # seconds until the port must accept connections
STOP_TIMEOUT = 5.0  # seconds to wait after SIGTERM before SIGKILL
START_ATTEMPTS = 3  # tries with fresh ports if the process dies early


_LIVE: set[ServerProcess] = set()


@atexit.register
def _stop_leftovers() -> None:
    """Safety net: never leave a server behind when the interpreter exits."""
    for server in list(_LIVE):
        server.close()


class ServerStartError(RuntimeError):
    """The server process did not start accepting connections.

    ``exited`` is True when the process had already exited (as opposed to
    running but never accepting before the timeout).
    """

    def __init__(self, msg: str, exited: bool = False):
        super().__init__(msg)
        self.exited = exited


_found_version: list[str] = []


def require_memcached() -> None:
    """Skip (under ``TRIO_MC_REQUIRE_DIFFERENTIAL=1``: fail) unless memcached is exactly
    :data:`MEMCACHED_NEEDED`."""
    if not _found_version:
        try:
            out = subprocess.run([MEMCACHED, "-V"], capture_output=True, text=True, timeout=10).stdout
            _found_version.append(out.split()[1] if out.startswith("memcached ") else out.strip() or "?")
        except (OSError, IndexError, subprocess.TimeoutExpired):
            _found_version.append(f"no memcached at {MEMCACHED}")
    found = _found_version[0]
    if found != MEMCACHED_NEEDED:
        reason = SKIP_REASON.format(needed=MEMCACHED_NEEDED, found=found)
        if os.environ.get("TRIO_MC_REQUIRE_DIFFERENTIAL") == "1":
            pytest.fail(reason)
        pytest.skip(reason)


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        port: int = s.getsockname()[1]
        return port


def wait_for_port(port: int, timeout: float = START_TIMEOUT,
                  alive: Callable[[], bool] = lambda: True) -> bool:
    """Poll until 127.0.0.1:port accepts a TCP connection.

    Returns True when it does, False on timeout or as soon as ``alive()``
    returns False.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive():
            return False
        try:
            with socket.create_connection((HOST, port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.02)
    return False


class ServerProcess:
    """A server subprocess listening on 127.0.0.1:``port``.

    ``cmd`` is the full argv.  stdout and stderr go to a temporary file
    (never a pipe, so a chatty server cannot block); read it with
    ``output()``.
    """

    def __init__(self, cmd: Sequence[str], port: int, *, cwd: str | os.PathLike[str] | None = None,
                 env: dict[str, str] | None = None, name: str | None = None,
                 start_timeout: float = START_TIMEOUT, stop_timeout: float = STOP_TIMEOUT):
        self.cmd = [str(c) for c in cmd]
        self.port = port
        self.cwd = cwd
        self.env = env
        self.name = name or Path(self.cmd[0]).name
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    def __repr__(self) -> str:
        state = "not started" if self.proc is None else f"pid={self.proc.pid}"
        return f"<ServerProcess {self.name} port={self.port} {state}>"

    # -- lifecycle -------------------------------------------------------
    def start(self) -> Self:
        """Start the process and wait until its port accepts (bounded)."""
        if self.proc is not None:
            return self
        self._log = tempfile.TemporaryFile(prefix=f"{self.name}-", suffix=".log")  # noqa: SIM115 (closed by close())
        self.proc = proc = subprocess.Popen(
            self.cmd, cwd=self.cwd, env=self.env, stdin=subprocess.DEVNULL,
            stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True)
        _LIVE.add(self)
        ok = wait_for_port(self.port, self.start_timeout,
                           alive=lambda: proc.poll() is None)
        if not ok:
            rc = proc.poll()
            self.stop()
            out = self.output()
            raise ServerStartError(
                f"{self.name} did not accept on {HOST}:{self.port} within "
                f"{self.start_timeout}s (exit code {rc}); cmd={self.cmd!r}\n"
                f"output:\n{out}", exited=rc is not None)
        return self

    def terminate(self) -> None:
        """Send SIGTERM without waiting (call ``stop()``/``close()`` later).

        Lets several servers shut down in parallel: memcached only notices
        SIGTERM on its once-a-second clock tick.
        """
        if self.proc is not None and self.proc.poll() is None:
            try:
                self.proc.send_signal(signal.SIGTERM)
            except ProcessLookupError:
                pass

    def stop(self) -> int | None:
        """SIGTERM, wait up to ``stop_timeout``, then SIGKILL.  Idempotent.

        Returns the exit code (None if never started).
        """
        proc = self.proc
        if proc is None:
            return None
        if proc.poll() is None:
            self.terminate()
            try:
                proc.wait(timeout=self.stop_timeout)
            except subprocess.TimeoutExpired:
                try:
                    proc.kill()
                except ProcessLookupError:
                    pass
                proc.wait(timeout=self.stop_timeout)
        _LIVE.discard(self)
        return proc.returncode

    def output(self) -> str:
        """Everything the process wrote to stdout/stderr so far."""
        if self._log is None:
            return ""
        try:
            self._log.flush()
            self._log.seek(0)
            return self._log.read().decode("utf-8", "replace")
        except (OSError, ValueError):
            return ""

    def close(self) -> None:
        """Stop the process and drop the output file."""
        self.stop()
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


def _start_with_retries(make_cmd: Callable[[int], list[str]], **kw: Any) -> ServerProcess:
    last: ServerStartError | None = None
    for _ in range(START_ATTEMPTS):
        port = free_port()
        server = ServerProcess(make_cmd(port), port, **kw)
        try:
            return server.start()
        except ServerStartError as e:
            server.close()
            last = e
            # retry on a new port only if the port was taken meanwhile
            if not (e.exited and "in use" in str(e).lower()):
                break
    assert last is not None
    raise last


def start_memcached(*extra_args: str) -> ServerProcess:
    """Start ``memcached -U 0 -l 127.0.0.1 -p <port> <extra_args>`` (ready to use).

    ``-u root`` is added when running as root (memcached refuses otherwise).  Skips the
    test unless memcached is :data:`MEMCACHED_NEEDED` (:func:`require_memcached`).
    """
    require_memcached()
    def cmd(port: int) -> list[str]:
        c = [MEMCACHED, "-U", "0", "-l", HOST, "-p", str(port)]
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            c += ["-u", "root"]
        return c + [str(a) for a in extra_args]
    return _start_with_retries(cmd, name="memcached")


@contextmanager
def memcacheds(n: int, *extra_args: str) -> Iterator[list[ServerProcess]]:
    """``n`` memcached processes, stopped in parallel (each notices SIGTERM within ~1 s)."""
    procs: list[ServerProcess] = []
    try:
        for _ in range(n):
            procs.append(start_memcached(*extra_args))
        yield procs
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.close()


def start_trio_mc(*extra_args: str) -> ServerProcess:
    """Start ``python -m trio_mc serve -l 127.0.0.1 -p <port> <extra_args>``.

    Runs with the current interpreter, cwd at the repository root.
    """
    def cmd(port: int) -> list[str]:
        return [sys.executable, "-m", "trio_mc", "serve", "-l", HOST, "-p", str(port),
                *[str(a) for a in extra_args]]
    return _start_with_retries(cmd, name="trio_mc", cwd=REPO_ROOT)


def ask(sock: socket.socket, request: bytes, end: bytes = b"\r\n") -> bytes:
    """Send ``request`` and read until the reply ends with ``end`` (or 10 s pass)."""
    sock.sendall(request)
    data = b""
    deadline = time.monotonic() + 10
    while not data.endswith(end) and time.monotonic() < deadline:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def read_quiet(sock: socket.socket, quiet: float = 0.2, limit: float = 5.0) -> tuple[bytes, bool]:
    """Read until ``quiet`` seconds pass without a byte, or ``limit`` overall; also whether
    the peer closed the connection (EOF or reset)."""
    data = b""
    old = sock.gettimeout()
    sock.settimeout(quiet)
    deadline = time.monotonic() + limit
    try:
        while time.monotonic() < deadline:
            chunk = sock.recv(65536)
            if not chunk:
                return data, True
            data += chunk
    except TimeoutError:
        pass
    except ConnectionResetError:
        return data, True
    finally:
        sock.settimeout(old)
    return data, False


def exited(pid: int) -> bool:
    """Whether ``pid`` has exited (a daemon's parent is init, which may leave it a zombie
    for a while: that counts as exited)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def rss_kib(pid: int) -> int:
    """The process's resident set size from ``/proc/<pid>/status`` (``VmRSS``), in KiB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError(f"no VmRSS for pid {pid}")


class Attackers:
    """Clients that send requests and never read their replies: each has a receive buffer
    of ``rcvbuf`` bytes (Linux doubles it and clamps it to its minimum), so the kernel holds
    only a few KiB of unread replies and the server must hold or stop the rest."""

    def __init__(self, port: int, rcvbuf: int) -> None:
        self.port = port
        self.rcvbuf = rcvbuf
        self.socks: list[socket.socket] = []
        self.closed = False
        self._lock = threading.Lock()

    def attack(self, requests: bytes) -> bool:
        """One more client connects and sends ``requests``; False once closed."""
        with self._lock:
            if self.closed:
                return False
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            self.socks.append(s)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.rcvbuf)
            s.settimeout(5)
            s.connect((HOST, self.port))
            s.sendall(requests)
            return True

    def close(self) -> None:
        """Close every client (the attack stops); later ``attack`` calls do nothing."""
        with self._lock:
            self.closed = True
            for s in self.socks:
                s.close()
            self.socks.clear()


def _conf_value(value: str | int | bool, toml: bool) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int) or not toml:
        return str(value)
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def pool_toml(name: str, listen: str, servers: Sequence[str], **keys: str | int | bool) -> str:
    """One pool as trio-mc's TOML table (``listen``, the other ``keys``, then ``servers``)."""
    lines = [f"[{name}]", f"listen = {_conf_value(listen, True)}"]
    lines += [f"{key} = {_conf_value(value, True)}" for key, value in keys.items()]
    lines.append("servers = [" + ", ".join(_conf_value(s, True) for s in servers) + "]")
    return "\n".join(lines) + "\n"


def pool_yaml(name: str, listen: str, servers: Sequence[str], **keys: str | int | bool) -> str:
    """The same pool as nutcracker's YAML (a hash_tag is quoted, as it must be)."""
    lines = [f"{name}:", f"  listen: {listen}"]
    lines += [f'  {key}: "{value}"' if key == "hash_tag" else f"  {key}: {_conf_value(value, False)}"
              for key, value in keys.items()]
    lines.append("  servers:")
    lines += [f"   - {s}" for s in servers]
    return "\n".join(lines) + "\n"


_CONF_SERIAL = iter(range(1, 1 << 30))


def start_proxy(make_conf: Callable[[int], str], directory: str | os.PathLike[str], *extra_args: str,
                suffix: str = ".toml") -> ServerProcess:
    """Start ``python -m trio_mc proxy -c FILE <extra_args>`` (ready to use).

    ``make_conf(port)`` is the config text; its first pool listens on 127.0.0.1:port, which
    is what readiness is checked on.  ``suffix`` ``.yml`` makes it a nutcracker config.
    """
    def cmd(port: int) -> list[str]:
        conf = Path(directory) / f"proxy-{next(_CONF_SERIAL)}{suffix}"
        conf.write_text(make_conf(port), encoding="utf-8")
        stats = [] if "-s" in extra_args else ["-s", str(free_port())]  # stats port: never shared
        return [sys.executable, "-m", "trio_mc", "proxy", "-c", str(conf), *stats, *[str(a) for a in extra_args]]
    return _start_with_retries(cmd, name="trio_mc_proxy", cwd=REPO_ROOT)


def start_nutcracker(make_conf: Callable[[int], str], directory: str | os.PathLike[str]) -> ServerProcess:
    """Start ``nutcracker -c FILE -s <stats port> -a 127.0.0.1`` on the YAML ``make_conf(port)``.

    Its log goes to stderr (captured in ``output()``); the pid file into ``directory``.
    """
    def cmd(port: int) -> list[str]:
        serial = next(_CONF_SERIAL)
        conf = Path(directory) / f"nutcracker-{serial}.yml"
        conf.write_text(make_conf(port), encoding="utf-8")
        return [NUTCRACKER, "-c", str(conf), "-s", str(free_port()), "-a", HOST,
                "-p", str(Path(directory) / f"nutcracker-{serial}.pid")]
    return _start_with_retries(cmd, name="nutcracker")
