"""Clients that pipeline gets and never read their replies (issue 7's attack).

memcached's rule: a connection that cannot write does not read, so a peer that stops
reading costs the server one connection's output bound, and the other connections of the
same worker keep being served.  The process test runs the attack against real memcached
(which validates the harness: its RSS stays flat and the probe is answered at once) and
against ``trio-mc serve``, both with one worker thread so the probe shares the attackers'
event loop.  A probe's latency leaves out the time the server and the probe waited for a
CPU (``/proc/.../schedstat``), so a busy shared machine does not count against the server
while a server busy with the attackers, or blocked, still does.  The in-memory test checks
the same rule on one ``Conn`` of the test's loop.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass, field

import pytest
import trio
import trio.testing
from helpers import ClientFactory
from procs import HOST, Attackers, ServerProcess, ask, rss_kib, start_memcached, start_trio_mc

VALUE = b"v" * (100 * 1024)
SET = b"set k 0 0 %d\r\n%b\r\n" % (len(VALUE), VALUE)
GET = b"get k\r\n"
HIT = b"VALUE k 0 %d\r\n%b\r\nEND\r\n" % (len(VALUE), VALUE)

ATTACKERS = 20
GETS_PER_ATTACKER = 2000  # 2,000 x 100 KiB = 200 MB of replies asked for per connection
ATTACK_SECONDS = 6.0
SAMPLE_EVERY = 0.5  # seconds between VmRSS samples
PROBE_EVERY = 0.1  # seconds between the probe's requests
#: The attackers' receive buffer: Linux doubles it and clamps it to its minimum, so the
#: kernel holds only a few KiB of unread replies per attacker and the server stalls at once.
ATTACKER_RCVBUF = 4096

#: Allowed RSS growth under the attack.  What a server may hold per stalled connection:
#: its pending output bound ("a few MB beyond the largest item": up to 4 MB + the 1 MB -I
#: item) plus a read buffer (64 KiB) and the connection's own state, so about 5 MB; x 20
#: connections = 100 MB; x 2 for allocator slack (glibc keeps freed blocks mapped, pymalloc
#: arenas stay).  Kernel socket buffers are not part of RSS.  An unbounded server holds all
#: 20 x 200 MB = 4 GB of replies (3.8 GB was measured before issue 7).
RSS_GROWTH_BOUND_KIB = 200 * 1024
#: Every request of the other client is answered within this (issue 7's acceptance),
#: not counting the time the server's busiest thread and the probe spent runnable but
#: waiting for a CPU: on a shared 2-core machine at a load of 9, memcached itself took
#: 0.6 s of wall time for some probes, with 0.85 s of every second spent on the run queue.
LATENCY_BOUND = 0.100
#: Past this growth the attack is stopped at once: enough to fail, and it spares the
#: machine's memory (an unbounded server would take 4 GB).
ABORT_GROWTH_KIB = 1024 * 1024


@dataclass
class AttackResult:
    growth_kib: list[int] = field(default_factory=list)  # VmRSS minus baseline, per sample
    latencies: list[float] = field(default_factory=list)  # seconds, less run-queue waits
    wall: list[float] = field(default_factory=list)  # seconds, per probe request
    attack_hits: int = 0  # gets of the attackers that the server executed
    aborted: bool = False


def _run_queue_ns(path: str) -> tuple[int, int]:
    """(on-CPU, waiting for a CPU) nanoseconds of one thread, from its ``schedstat``."""
    try:
        with open(path) as f:
            on_cpu, waiting, _ = f.read().split()
    except (FileNotFoundError, ProcessLookupError):  # the thread has exited
        return 0, 0
    return int(on_cpu), int(waiting)


def _threads(pid: int) -> dict[str, tuple[int, int]]:
    return {tid: _run_queue_ns(f"/proc/{pid}/task/{tid}/schedstat") for tid in os.listdir(f"/proc/{pid}/task")}


def _waited_for_cpu(before: dict[str, tuple[int, int]], after: dict[str, tuple[int, int]]) -> float:
    """Seconds the thread that wanted a CPU most between two readings spent on the run queue."""
    def wanted(tid: str) -> int:
        on_cpu, waiting = before.get(tid, (0, 0))
        return after[tid][0] - on_cpu + after[tid][1] - waiting
    busiest = max(after, key=wanted)
    return (after[busiest][1] - before.get(busiest, (0, 0))[1]) / 1e9


def _get_hits(stats: bytes) -> int:
    [line] = [line for line in stats.split(b"\r\n") if line.startswith(b"STAT get_hits ")]
    return int(line.split()[2])


def _attack(server: ServerProcess, probe: socket.socket) -> AttackResult:
    """Run the attack for ``ATTACK_SECONDS`` while sampling RSS and timing the probe."""
    assert server.proc is not None
    pid = server.proc.pid
    result = AttackResult()
    baseline = rss_kib(pid)
    attackers = Attackers(server.port, ATTACKER_RCVBUF)  # the sampler closes them on abort
    done = threading.Event()

    def sample() -> None:
        while True:
            growth = rss_kib(pid) - baseline
            result.growth_kib.append(growth)
            if growth > ABORT_GROWTH_KIB:
                result.aborted = True
                attackers.close()
                done.set()
            if done.wait(SAMPLE_EVERY):
                return

    requests = GET * GETS_PER_ATTACKER
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        for _ in range(ATTACKERS):
            if not attackers.attack(requests):  # 14 KB: fits the server's receive buffer unread
                break
        me = f"/proc/self/task/{threading.get_native_id()}/schedstat"
        deadline = time.monotonic() + ATTACK_SECONDS
        while not done.is_set() and time.monotonic() < deadline:
            server_before, my_wait = _threads(pid), _run_queue_ns(me)[1]
            start = time.monotonic()
            reply = ask(probe, GET, b"END\r\n")
            wall = time.monotonic() - start
            waited = _waited_for_cpu(server_before, _threads(pid)) + (_run_queue_ns(me)[1] - my_wait) / 1e9
            result.wall.append(wall)
            result.latencies.append(max(0.0, wall - waited))
            assert reply == HIT
            time.sleep(PROBE_EVERY)
        hits = _get_hits(ask(probe, b"stats\r\n", b"END\r\n"))
        result.attack_hits = hits - len(result.latencies) - 1  # the probe's own gets
    finally:
        done.set()
        sampler.join(timeout=5)
        attackers.close()
    return result


@pytest.mark.parametrize("start", [start_memcached, start_trio_mc], ids=["memcached", "trio-mc"])
def test_clients_that_do_not_read_cost_bounded_memory_and_no_latency(
    start: Callable[..., ServerProcess],
) -> None:
    with start("-t", "1") as server, closing(socket.create_connection((HOST, server.port), timeout=10)) as probe:
        assert ask(probe, SET) == b"STORED\r\n"
        assert ask(probe, GET, b"END\r\n") == HIT  # the value's slab page and buffers exist
        result = _attack(server, probe)
        assert ask(probe, b"version\r\n") == b"VERSION 1.6.18\r\n"  # still serving
    grown_mb = max(result.growth_kib) / 1024
    report = (f"RSS growth max {grown_mb:.0f} MB (samples, MB: "
              f"{[round(g / 1024) for g in result.growth_kib]}), aborted={result.aborted}, "
              f"probe latency max {max(result.latencies, default=0) * 1000:.0f} ms less run-queue waits, "
              f"{max(result.wall, default=0) * 1000:.0f} ms wall, over {len(result.latencies)} requests, "
              f"{result.attack_hits} of the attackers' gets executed")
    assert max(result.growth_kib) <= RSS_GROWTH_BOUND_KIB, report
    assert result.latencies and max(result.latencies) <= LATENCY_BOUND, report
    assert result.attack_hits >= ATTACKERS, report  # the attack did reach the server


# -- in memory: one Conn whose peer does not read ----------------------------------------------

#: Gets pipelined in one write: 400 x 100 KiB = 40 MB of replies asked for.
MEMORY_GETS = 400
#: At most this much output may be produced ahead of a peer that reads nothing (generous:
#: the issue asks for a few MB beyond the largest item, 1 MB here).
OUTPUT_BOUND = 16 * 1024 * 1024


async def test_conn_whose_peer_does_not_read_stops_executing_and_others_are_served(
    connect: ClientFactory, nursery: trio.Nursery,
) -> None:
    # A lockstep stream has no buffer at all: the conn's send waits until the peer reads.
    attacker = await connect(trio.testing.lockstep_stream_pair)
    other = await connect()
    assert await other.ask(SET) == b"STORED\r\n"
    sent = trio.Event()

    async def pipeline() -> None:
        await attacker.send(GET * MEMORY_GETS)
        await attacker.send(GET)  # taken only once the conn can write again
        sent.set()

    nursery.start_soon(pipeline)
    await trio.testing.wait_all_tasks_blocked()
    # The other connection of the same loop is served while the attacker's conn is stuck.
    assert await other.ask(GET, b"END\r\n") == HIT
    hits = _get_hits(await other.ask(b"stats\r\n", b"END\r\n")) - 1
    assert hits <= OUTPUT_BOUND // len(HIT) + 1, f"{hits} of {MEMORY_GETS} gets executed unread"
    assert not sent.is_set()  # a conn that cannot write does not read
    # Once the peer reads, every reply arrives, in order, and the second write is taken.
    expected = HIT * (MEMORY_GETS + 1)
    received = bytearray()
    with trio.fail_after(30):
        while len(received) < len(expected):
            chunk = await attacker.stream.receive_some()
            assert chunk, "connection closed"
            received += chunk
        await sent.wait()
    assert received == expected
    assert _get_hits(await other.ask(b"stats\r\n", b"END\r\n")) == MEMORY_GETS + 2
