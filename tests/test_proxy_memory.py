"""The proxy's memory under clients that do not read and a backend that does not read.

Issue 9's measurement, on real processes: a ``trio-mc proxy`` in front of a real memcached,
its RSS (``VmRSS``) sampled while (a) 20 clients pipeline gets of 100 KB values and never
read their replies, and (b) the backend is stopped (SIGSTOP) while clients keep writing
100 KB sets, plain and ``noreply``.  Both stay within a bound derived from the proxy's
documented constants (``trio_mc.proxy.client`` and ``trio_mc.proxy.server``), and in both a
probe client sharing the same server connection is still served (a), or is served once the
backend runs again (b).  An unbounded proxy holds every reply and every request: gigabytes
within the few seconds a test runs, which is why each attack stops early past
:data:`ABORT_GROWTH_KIB`.

``bench/proxy_memory.py`` runs the same attacks against nutcracker 0.5.0 for comparison.
"""

from __future__ import annotations

import select
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import trio
from procs import HOST, Attackers, ServerProcess, ask, memcacheds, pool_toml, rss_kib, start_proxy

from trio_mc.net.conn import PAUSE, Effect
from trio_mc.protocol.responses import RETRIEVAL, STORAGE, Response
from trio_mc.proxy.client import INITIAL_WINDOW, REPLY_BOUND, ClientSession
from trio_mc.proxy.config import load
from trio_mc.proxy.pool import Pool
from trio_mc.proxy.server import SERVER_QUEUE_BOUND

VALUE = b"v" * (100 * 1000)
SET = b"set k 0 0 %d\r\n%b\r\n" % (len(VALUE), VALUE)
HIT = b"VALUE k 0 %d\r\n%b\r\nEND\r\n" % (len(VALUE), VALUE)
GET = b"get k\r\n"

CLIENTS = 20
GETS_PER_CLIENT = 2000  # 2,000 x 100 KB = 200 MB of replies asked for per client
ATTACK_SECONDS = 3.0
SAMPLE_EVERY = 0.1  # seconds between VmRSS samples
ATTACKER_RCVBUF = 4096  # see procs.Attackers
#: Past this growth an attack stops at once: enough to fail, and it spares the machine's
#: memory (an unbounded proxy takes gigabytes).
ABORT_GROWTH_KIB = 1024 * 1024
#: A request of the probe is answered within this, wall time, while the attack runs (a
#: generous bound for a shared 2-core machine: the point is that it is answered at all,
#: an unread client not stalling the server connection it shares with the probe).
PROBE_BOUND = 2.0


@dataclass
class Attack:
    """What one attack measured (KiB of RSS growth over the baseline, per sample)."""

    growth_kib: list[int] = field(default_factory=list)
    probe_seconds: list[float] = field(default_factory=list)
    sent_bytes: int = 0  # what the attackers managed to write
    aborted: bool = False

    @property
    def peak_mib(self) -> float:
        return max(self.growth_kib, default=0) / 1024

    def report(self) -> str:
        return (f"RSS growth max {self.peak_mib:.1f} MiB (samples, MiB: "
                f"{[round(g / 1024) for g in self.growth_kib[::5]]}), aborted={self.aborted}, "
                f"{self.sent_bytes / 1e6:.1f} MB written by the clients, probe max "
                f"{max(self.probe_seconds, default=0) * 1000:.0f} ms over {len(self.probe_seconds)}")


@contextmanager
def _sampling(pid: int, result: Attack, stop: Callable[[], None]) -> Iterator[threading.Event]:
    """Sample the RSS of ``pid`` until the block ends; past the abort growth, ``stop()``."""
    baseline = rss_kib(pid)
    done = threading.Event()

    def sample() -> None:
        while not done.wait(SAMPLE_EVERY):
            growth = rss_kib(pid) - baseline
            result.growth_kib.append(growth)
            if growth > ABORT_GROWTH_KIB:
                result.aborted = True
                stop()
                done.set()

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        yield done
    finally:
        done.set()
        sampler.join(timeout=5)


def unread_gets(proxy: ServerProcess, probe: socket.socket) -> Attack:
    """(a): ``CLIENTS`` clients each pipeline ``GETS_PER_CLIENT`` gets and read nothing,
    while the probe gets the same key every 0.1 s."""
    assert proxy.proc is not None
    result = Attack()
    attackers = Attackers(proxy.port, ATTACKER_RCVBUF)
    try:
        with _sampling(proxy.proc.pid, result, attackers.close) as done:
            requests = GET * GETS_PER_CLIENT  # 14 KB: fits the proxy's receive buffer unread
            for _ in range(CLIENTS):
                if not attackers.attack(requests):
                    break
                result.sent_bytes += len(requests)
            deadline = time.monotonic() + ATTACK_SECONDS
            while not done.is_set() and time.monotonic() < deadline:
                start = time.monotonic()
                try:
                    reply = ask(probe, GET, b"END\r\n")
                except TimeoutError:  # not answered within ask's 10 s
                    result.probe_seconds.append(float("inf"))
                    break
                result.probe_seconds.append(time.monotonic() - start)
                assert reply == HIT
                time.sleep(0.1)
    finally:
        attackers.close()
    return result


def writes_to_stopped_backend(proxy: ServerProcess, backend: ServerProcess, noreply: bool) -> Attack:
    """(b): the backend is stopped; ``CLIENTS`` clients write 100 KB sets (``noreply`` or
    not) as fast as the proxy takes them, for ``ATTACK_SECONDS``, reading nothing."""
    assert proxy.proc is not None and backend.proc is not None
    result = Attack()
    request = b"set k 0 0 %d%s\r\n%b\r\n" % (len(VALUE), b" noreply" if noreply else b"", VALUE)
    stop = threading.Event()
    writers = [socket.create_connection((HOST, proxy.port), timeout=5) for _ in range(CLIENTS)]
    for s in writers:
        s.setblocking(False)
    backend.proc.send_signal(signal.SIGSTOP)
    try:
        with _sampling(proxy.proc.pid, result, stop.set) as done:
            pending = {s: memoryview(request) for s in writers}
            deadline = time.monotonic() + ATTACK_SECONDS
            while not done.is_set() and not stop.is_set() and time.monotonic() < deadline:
                _, writable, _ = select.select([], list(pending), [], 0.1)
                for s in writable:
                    try:
                        sent = s.send(pending[s])
                    except BlockingIOError:
                        continue
                    result.sent_bytes += sent
                    rest = pending[s][sent:]
                    pending[s] = rest if len(rest) else memoryview(request)
    finally:
        backend.proc.send_signal(signal.SIGCONT)
        for s in writers:
            s.close()
    return result


def _pool(backend: int) -> Callable[[int], str]:
    return lambda port: pool_toml("alpha", f"{HOST}:{port}", [f"{HOST}:{backend}:1"])


#: Allowed RSS growth under (a).  Per client the proxy holds at most OUTPUT_BOUND (1 MiB)
#: of replies being written plus REPLY_BOUND (1 MiB) of replies in flight (its window of
#: requests shrinks to REPLY_BOUND // reply size: 10 gets of 100 KB), plus one reply
#: joined for a send: about 3 MiB, x 20 clients = 60 MiB; the server connection's reader
#: holds one reply.  x 1.5 for allocator slack (pymalloc arenas, glibc's free lists).
UNREAD_GROWTH_BOUND_KIB = 90 * 1024
#: Allowed RSS growth under (b).  The server connection holds at most SERVER_QUEUE_BOUND
#: (1 MiB) of requests not yet taken by the kernel, plus one request per client over it
#: (100 KB x 20); requests the kernel took are not kept (their bytes are the kernel's); each
#: client's parser holds at most one request being read (100 KB x 20).  About 5 MiB, and a
#: few MiB of interpreter and allocator slack: 16 MiB.
STOPPED_GROWTH_BOUND_KIB = 16 * 1024


def test_clients_that_do_not_read_cost_bounded_memory(tmp_path: Path) -> None:
    with memcacheds(1) as [mc], start_proxy(_pool(mc.port), tmp_path) as proxy, \
            closing(socket.create_connection((HOST, proxy.port), timeout=10)) as probe:
        assert ask(probe, SET) == b"STORED\r\n"
        assert ask(probe, GET, b"END\r\n") == HIT  # buffers of this size exist once
        result = unread_gets(proxy, probe)
        assert ask(probe, b"version\r\n").startswith(b"VERSION ")
    report = result.report()
    print(report)
    assert not result.aborted and max(result.growth_kib) <= UNREAD_GROWTH_BOUND_KIB, report
    assert result.probe_seconds and max(result.probe_seconds) <= PROBE_BOUND, report


@pytest.mark.parametrize("noreply", [False, True], ids=["set", "set-noreply"])
def test_backend_that_does_not_read_costs_bounded_memory(tmp_path: Path, noreply: bool) -> None:
    with memcacheds(1) as [mc], start_proxy(_pool(mc.port), tmp_path) as proxy:
        with closing(socket.create_connection((HOST, proxy.port), timeout=10)) as probe:
            assert ask(probe, SET) == b"STORED\r\n"  # the server connection is open
            result = writes_to_stopped_backend(proxy, mc, noreply)
            # Running again, the backend answers through the same proxy and connection.
            assert ask(probe, GET, b"END\r\n") == HIT
    report = result.report()
    print(report)
    assert result.sent_bytes > len(SET) * CLIENTS, report
    assert not result.aborted and max(result.growth_kib) <= STOPPED_GROWTH_BOUND_KIB, report


# -- in memory: the window and the server connection's bound, step by step -----------------

class _Sink:
    """A client socket that takes everything at once."""

    def send_nowait(self, data: bytes | memoryview) -> int:
        return len(data)


async def test_window_follows_reply_sizes_and_a_full_server_queue_pauses(tmp_path: Path) -> None:
    """No checkpoint until the end: the backend connection (to a port nobody listens on)
    has not run yet, so its msgs stay queued and this test completes them itself."""
    conf = tmp_path / "pool.toml"
    conf.write_text(pool_toml("alpha", f"{HOST}:1", [f"{HOST}:1:1"]))
    [config] = load(conf)
    async with trio.open_nursery() as nursery:
        session = ClientSession(Pool(config, nursery), _Sink(), nursery)

        def forward_gets(n: int) -> list[Effect]:
            return [session.forward(b"k", [GET], RETRIEVAL) for _ in range(n)]

        def answer_all(reply: bytes) -> None:
            conn = session.pool.servers[0].conns[0]
            for msg in conn.imsg_q:
                msg.complete(Response(RETRIEVAL, b"END", reply))
            conn.imsg_q.clear()
            conn.pending = 0
            session.wake()

        assert forward_gets(INITIAL_WINDOW) == [None] * (INITIAL_WINDOW - 1) + [PAUSE]
        answer_all(b"END\r\n")  # small replies: one more request in flight per reply
        assert session.window == 2 * INITIAL_WINDOW
        forward_gets(session.window)
        answer_all(HIT)  # 100 KB replies: the window closes to what REPLY_BOUND holds
        assert REPLY_BOUND // len(HIT) == 10 and session.window in (10, 11)
        window = session.window
        for _ in range(20):
            forward_gets(1)
            answer_all(b"END\r\n")
        assert session.window == window + 20
        # A server connection holding its bound of unsent requests pauses the client,
        # noreply requests included.
        big = [b"x" * (SERVER_QUEUE_BOUND // 4)]
        effects = [session.forward(b"k", big, STORAGE, noreply=True) for _ in range(4)]
        assert effects == [None, None, None, PAUSE]
        conn = session.pool.servers[0].conns[0]
        assert session.blocked is conn and conn.full
        # The client waits until the queue drains or, here, the connection fails (refused).
        with trio.fail_after(5):
            await session.wait_room()
        assert conn.closed and not conn.full and session.blocked is None
