"""A pytest plugin: a real trio-mc for the tests of an application that uses memcached.

Installed with trio-mc (a ``pytest11`` entry point), it gives a test a running server on a
free 127.0.0.1 port, with memcached's wire behaviour and a clock the test moves, so expiry
logic is tested without waiting:

* ``trio_mc`` (async, for pytest-trio tests): the server runs in the test's own Trio loop
  (no worker threads), and its store reads ``trio.current_time()``, so Trio's ``MockClock``
  (pytest-trio's ``mock_clock`` / ``autojump_clock``) moves item expiry too.
* ``trio_mc_thread`` (for ordinary tests: pymemcache, pylibmc, Django's cache): the server
  runs in a background thread with its own ``trio.run``; :meth:`ThreadedServer.advance`
  moves its clock.
* ``trio_mc_process``: ``trio-mc serve`` as a subprocess (nothing shared with the test
  process, not even the GIL); :meth:`ProcessServer.advance` moves its clock with memcached's
  ``debugtime`` command, which is why that server runs with ``-o relaxed_privileges``.
* ``trio_mc_factory``: starts more threaded servers, each with flags of its own.

Flags are ``trio-mc serve``'s (memcached's), given with the ``trio_mc`` marker, e.g.
``@pytest.mark.trio_mc("-m 1 -I 2m")``, and parsed by the server's own command-line parser.
The fixture chooses the address, so ``-p -l -U -s -d -P -u`` are refused.  Every server is
stopped, and every thread joined, when its fixture is torn down.

Outside pytest the same servers are :func:`open_trio_mc` (an async context manager) and
:class:`ThreadedServer` / :class:`ProcessServer` (context managers).
"""

from __future__ import annotations

import contextlib
import functools
import os
import queue
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Self

import pytest
import trio

from trio_mc.cli import UsageError, parse_serve_args
from trio_mc.server.serve import make_store, serve
from trio_mc.server.state import ServerState
from trio_mc.settings import Settings
from trio_mc.store.clock import Clock, ManualClock
from trio_mc.store.store import Store

__all__ = ["ProcessServer", "ThreadedServer", "TrioServer", "open_trio_mc", "server_settings"]

HOST = "127.0.0.1"
#: Bounds on starting and stopping a server, so a broken one fails the test instead of hanging it.
START_TIMEOUT = 10.0
STOP_TIMEOUT = 10.0

#: Flags whose settings the fixture owns: it always listens on a free TCP port of 127.0.0.1
#: in the foreground, as the user running the tests.
_OWNED = ("port", "udpport", "inter", "socketpath", "daemonize", "pidfile", "username")


def _split(flags: Iterable[str]) -> list[str]:
    """``("-m 1", "-I", "2m")`` -> ``["-m", "1", "-I", "2m"]``: each string may hold several."""
    return [word for flag in flags for word in shlex.split(flag)]


def server_settings(*flags: str) -> Settings:
    """Settings from ``trio-mc serve`` flags, listening on a free port of 127.0.0.1.

    Raises ``ValueError`` for a bad flag, for ``-h``/``-V``, and for a flag that sets
    the address, the user or daemon mode (the fixture decides those).
    """
    argv = _split(flags)
    try:
        parsed = parse_serve_args(argv)
    except UsageError as exc:
        raise ValueError(f"trio-mc flags {argv!r}: {exc}") from None
    if isinstance(parsed, str):
        raise ValueError(f"trio-mc flags {argv!r} print text instead of starting a server")
    default = Settings()
    owned = [name for name in _OWNED if getattr(parsed, name) != getattr(default, name)]
    if owned:
        raise ValueError(f"trio-mc flags {argv!r}: the fixture chooses {', '.join(owned)}")
    parsed.port = -1  # an ephemeral port
    return parsed


def _port(state: ServerState) -> int:
    return int(state.listeners[0].addr.rsplit(":", 1)[1])


@dataclass
class TrioServer:
    """A server running in the caller's Trio loop (see :func:`open_trio_mc`)."""

    state: ServerState
    host: str
    port: int

    @property
    def address(self) -> tuple[str, int]:
        return self.host, self.port

    @property
    def settings(self) -> Settings:
        return self.state.settings

    @property
    def store(self) -> Store:
        return self.state.store


@contextlib.asynccontextmanager
async def open_trio_mc(*flags: str) -> AsyncIterator[TrioServer]:
    """Serve in the current Trio loop until the block ends.

    Connections run in this loop (no worker threads) and the store's clock is
    ``trio.current_time()``, so a ``MockClock`` running the loop also moves item time.
    """
    settings = server_settings(*flags)
    store = make_store(settings, Clock(source=trio.current_time))
    async with trio.open_nursery() as nursery:
        state: ServerState = await nursery.start(_serve_in_loop, settings, store)
        yield TrioServer(state, HOST, _port(state))
        nursery.cancel_scope.cancel()


async def _serve_in_loop(settings: Settings, store: Store, *,
                         task_status: trio.TaskStatus[ServerState] = trio.TASK_STATUS_IGNORED) -> None:
    await serve(settings, store=store, threads=0, task_status=task_status)


class ThreadedServer:
    """A server in a background thread (its own ``trio.run``), for synchronous tests.

    The store runs on a :class:`~trio_mc.store.clock.ManualClock` that starts at the real
    Unix time (so absolute exptimes mean what the application thinks) and moves only with
    :meth:`advance`; the next command any client sends sees the new time.
    """

    def __init__(self, *flags: str) -> None:
        self.settings = server_settings(*flags)
        self.clock = ManualClock(wall=time.time())
        self.host = HOST
        self.port = 0
        self._thread: threading.Thread | None = None
        self._state: ServerState | None = None
        self._error: BaseException | None = None

    @property
    def address(self) -> tuple[str, int]:
        return self.host, self.port

    def advance(self, seconds: float) -> None:
        """Move the server's clock forward: items whose time has come are expired."""
        self.clock.advance(seconds)

    def start(self) -> Self:
        """Start the thread and return once the server accepts connections."""
        started: queue.Queue[ServerState | BaseException] = queue.Queue()
        self._thread = threading.Thread(target=self._run, args=(started,), name="trio-mc", daemon=True)
        self._thread.start()
        try:
            first = started.get(timeout=START_TIMEOUT)
        except queue.Empty:
            raise RuntimeError(f"trio-mc did not start within {START_TIMEOUT} s") from None
        if isinstance(first, BaseException):
            self._thread.join()
            self._thread = self._error = None
            raise first
        self._state = first
        self.port = _port(first)
        return self

    def _run(self, started: queue.Queue[ServerState | BaseException]) -> None:
        try:
            trio.run(self._serve, started)
        except BaseException as exc:  # noqa: BLE001 - handed to the test's thread
            self._error = exc
            started.put(exc)  # read by start() if the server never started

    async def _serve(self, started: queue.Queue[ServerState | BaseException]) -> None:
        async with trio.open_nursery() as nursery:
            store = make_store(self.settings, self.clock)
            started.put(await nursery.start(functools.partial(serve, self.settings, store=store)))

    def stop(self) -> None:
        """Stop the server and join its threads; re-raise what ended it, if it failed.  Idempotent."""
        thread, self._thread = self._thread, None
        if thread is None:
            return
        if self._state is not None and thread.is_alive():
            self._state.request_shutdown(False)
        thread.join(STOP_TIMEOUT)
        if thread.is_alive():
            raise RuntimeError(f"trio-mc's thread did not stop within {STOP_TIMEOUT} s")
        if self._error is not None:
            raise self._error

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


class ProcessServer:
    """``trio-mc serve`` in a subprocess of its own, for tests that share nothing with it.

    A subprocess's clock cannot be reached from the test, so the server runs with
    ``-o relaxed_privileges`` and :meth:`advance` sends memcached's ``debugtime`` command;
    its time moves in whole seconds.  Output (stdout and stderr) goes to a file, read with
    :meth:`output`.
    """

    def __init__(self, *flags: str) -> None:
        server_settings(*flags)  # refuse bad flags here, with the fixture's message
        self.argv = [sys.executable, "-m", "trio_mc", "serve", *_split(flags), "-p", "-1",
                     "-o", "relaxed_privileges"]
        self.host = HOST
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self._dir: tempfile.TemporaryDirectory[str] | None = None
        self._log: IO[bytes] | None = None

    @property
    def address(self) -> tuple[str, int]:
        return self.host, self.port

    def start(self) -> Self:
        """Start the process and return once it listens (it writes its port to a file)."""
        self._dir = tempfile.TemporaryDirectory(prefix="trio-mc-")
        port_file = Path(self._dir.name, "ports")
        self._log = open(Path(self._dir.name, "output"), "w+b")  # closed by stop()
        env = dict(os.environ, MEMCACHED_PORT_FILENAME=str(port_file))
        self.proc = subprocess.Popen(self.argv, env=env, stdin=subprocess.DEVNULL, stdout=self._log,
                                     stderr=subprocess.STDOUT)
        deadline = time.monotonic() + START_TIMEOUT
        while not port_file.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                output = self.output()
                self.stop()
                raise RuntimeError(f"trio-mc serve did not start: {self.argv!r}\n{output}")
            time.sleep(0.01)
        self.port = int(port_file.read_text().split("TCP INET: ", 1)[1].split()[0])
        return self

    def advance(self, seconds: int) -> None:
        """Move the server's clock forward by whole seconds (``debugtime``)."""
        with socket.create_connection(self.address, timeout=START_TIMEOUT) as sock:
            sock.sendall(b"debugtime %d\r\n" % seconds)
            reply = sock.makefile("rb").readline()
        if reply != b"OK\r\n":
            raise ValueError(f"debugtime {seconds}: {reply!r}")

    def output(self) -> str:
        """What the server printed so far."""
        if self._log is None:
            return ""
        self._log.seek(0)
        return self._log.read().decode(errors="replace")

    def stop(self) -> None:
        """SIGTERM, a bounded wait, then SIGKILL; raises if the server had failed.  Idempotent."""
        proc, self.proc = self.proc, None
        code = None
        if proc is not None:
            proc.send_signal(signal.SIGTERM)
            try:
                code = proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        output = self.output()
        if self._log is not None:
            self._log.close()
            self._log = None
        if self._dir is not None:
            self._dir.cleanup()
            self._dir = None
        if proc is not None and code != 0:
            raise RuntimeError(f"trio-mc serve exited with {code}: {self.argv!r}\n{output}")

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


# -- the pytest plugin -------------------------------------------------------------------------

def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "trio_mc(*flags): trio-mc serve flags (memcached's) for the trio_mc fixtures, "
        'e.g. trio_mc("-m 1 -I 2m")')


def _marker_flags(request: pytest.FixtureRequest) -> list[str]:
    marker = request.node.get_closest_marker("trio_mc")
    return [] if marker is None else [str(flag) for flag in marker.args]


@pytest.fixture
async def trio_mc(request: pytest.FixtureRequest) -> AsyncIterator[TrioServer]:
    """A server in the test's Trio loop; MockClock moves its clock (pytest-trio tests)."""
    async with open_trio_mc(*_marker_flags(request)) as server:
        yield server


@pytest.fixture
def trio_mc_thread(request: pytest.FixtureRequest) -> Iterator[ThreadedServer]:
    """A server in a background thread; ``trio_mc_thread.advance(seconds)`` moves its clock."""
    with ThreadedServer(*_marker_flags(request)) as server:
        yield server


@pytest.fixture
def trio_mc_process(request: pytest.FixtureRequest) -> Iterator[ProcessServer]:
    """``trio-mc serve`` as a subprocess; ``advance(seconds)`` moves its clock (``debugtime``)."""
    with ProcessServer(*_marker_flags(request)) as server:
        yield server


@pytest.fixture
def trio_mc_factory() -> Iterator[Callable[..., ThreadedServer]]:
    """``trio_mc_factory("-m 1")`` starts another threaded server; all stop at teardown."""
    servers: list[ThreadedServer] = []

    def start(*flags: str) -> ThreadedServer:
        server = ThreadedServer(*flags)
        servers.append(server)
        return server.start()

    yield start
    errors = []
    for server in servers:
        try:
            server.stop()
        except Exception as exc:  # noqa: BLE001 - stop them all, then report
            errors.append(exc)
    if errors:
        raise errors[0]
