"""Differential: every general ``stats`` counter after each meta command, against memcached 1.6.18.

The same command sequence goes to a real memcached and to trio-mc (both with
``-o no_lru_crawler,no_lru_maintainer``, so nothing changes in the background); after every
command both servers' replies must be identical, and so must every general ``stats`` value
except those in :data:`EXCLUDED`.  The cases cover each meta command with each flag that can
move a counter, on a hit and on a miss, on stale and expired items.  Flags newer than 1.6.18
that trio-mc accepts as extensions (``E``, md ``x``) are left out: 1.6.18 refuses them.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import closing

import pytest
from procs import ServerProcess, ask, start_memcached, start_trio_mc

#: General stats that legitimately differ between two servers fed the same commands.
EXCLUDED = {
    # the process, its clock and CPU time
    "pid": "process id",
    "uptime": "depends on when each process started",
    "time": "wall clock",
    "rusage_user": "CPU time",
    "rusage_system": "CPU time",
    "libevent": "trio-mc has no libevent; it reports a fixed string",
    # connections: memcached counts its listening sockets as connection structures, and the
    # harness's readiness probes open connections at moments that differ between processes
    "curr_connections": "listeners and readiness probes",
    "total_connections": "listeners and readiness probes",
    "connection_structures": "memcached's per-fd structures",
    "reserved_fds": "memcached's own descriptor bookkeeping",
    # memcached's buffer pools, which trio-mc does not have
    "response_obj_count": "buffer pool",
    "response_obj_bytes": "buffer pool",
    "read_buf_count": "buffer pool",
    "read_buf_bytes": "buffer pool",
    "read_buf_bytes_free": "buffer pool",
    # the replies to the ``stats`` commands themselves differ in length (pid, time, rusage)
    "bytes_written": "includes the stats replies, whose numbers differ in length",
    "threads": "trio-mc's default -t is 1 (memcached's is 4), see the README",
}

KEYS = ["k", "kn", "kt", "ks", "kc", "ka", "kp", "kr", "ke", "kx", "kbig", "n1", "n2", "n3"]

#: (name, commands); each command is sent alone, then ``stats`` is compared.
CASES: list[tuple[str, list[bytes]]] = [
    ("mg miss", [b"mg k\r\n", b"mg k v\r\n", b"mg k k v c f t s\r\n", b"mg k q\r\nmn\r\n"]),
    ("mg miss T", [b"mg k T30\r\n", b"mg k T30 v\r\n", b"mg k T30 q\r\nmn\r\n"]),
    ("mg miss N", [b"mg kn N30\r\n", b"mg kn N30 v\r\n", b"mg kn v t\r\n"]),
    ("mg hit", [b"ms k 2\r\nab\r\n", b"mg k\r\n", b"mg k v\r\n", b"mg k v q k O1\r\n",
                b"mg k s f c t h l\r\n"]),
    ("mg hit T", [b"mg k T30\r\n", b"mg k T0 v t\r\n", b"mg k T30 q v\r\n"]),
    ("mg hit N R", [b"mg k N30 v\r\n", b"mg k R30 v c\r\n", b"mg kt T1 v\r\n"]),
    ("mg expired", [b"ms ke 1 T-1\r\nx\r\n", b"mg ke v\r\n", b"mg ke T30\r\n"]),
    ("mg stale", [b"ms ks 1\r\nx\r\n", b"md ks I\r\n", b"mg ks v c\r\n", b"mg ks v c\r\n",
                  b"mg ks T30 v\r\n", b"ms ks 1 I\r\ny\r\n", b"mg ks v\r\n"]),
    ("ms modes", [b"ms kc 1\r\na\r\n", b"ms kc 1 MS\r\nb\r\n", b"ms kc 1 ME\r\nc\r\n",
                  b"ms kn2 1 ME\r\nc\r\n", b"ms kc 1 MA\r\nd\r\n", b"ms kx 1 MA\r\nd\r\n",
                  b"ms kc 1 MP\r\ne\r\n", b"ms kx 1 MP\r\ne\r\n", b"ms kc 1 MR\r\nf\r\n",
                  b"ms kx 1 MR\r\nf\r\n", b"ms kc 1 MZ\r\ng\r\n", b"ms kc 1 q\r\nh\r\nmn\r\n",
                  b"ms kc 1 MA q\r\ni\r\nmn\r\n"]),
    ("ms cas", [b"mg kc c\r\n", b"ms kc 1 C1\r\nx\r\n", b"ms kx 1 C1\r\nx\r\n",
                b"ms kc 1 C999 I\r\nx\r\n", b"mg kc c v\r\n", b"ms kc 1 C0\r\nx\r\n",
                b"ms kc 1 MA C1\r\nx\r\n"]),
    ("ms sizes", [b"ms kbig 2000000\r\n" + b"x" * 2000000 + b"\r\n", b"ms kt 1 T-1\r\nx\r\n",
                  b"ms kt 1 F5 T30 b\r\nx\r\n", b"ms a2tleQ== 1 b\r\nx\r\n",
                  b"ms kc S1\r\nx\r\n"]),
    ("md", [b"ms kr 1\r\nr\r\n", b"md kr\r\n", b"md kr\r\n", b"md kr q\r\nmn\r\n",
            b"ms kr 1\r\nr\r\n", b"md kr q\r\nmn\r\n"]),
    ("md I", [b"ms kr 1\r\nr\r\n", b"md kr I\r\n", b"md kr I T30\r\n", b"md kr\r\n",
              b"md kr I\r\n", b"ms kr 1\r\nr\r\n", b"md kr T30\r\n", b"mg kr\r\n"]),
    ("md C", [b"ms kr 1\r\nr\r\n", b"md kr C1\r\n", b"mg kr c\r\n", b"md kr C0\r\n",
              b"md kx C1\r\n", b"md kr q C2\r\nmn\r\n"]),
    ("ma miss", [b"ma n1\r\n", b"ma n1 MD\r\n", b"ma n1 q\r\nmn\r\n", b"ma n1 MD q\r\nmn\r\n"]),
    ("ma N", [b"ma n1 N30\r\n", b"ma n2 N30 J13 v\r\n", b"ma n3 N30 J5 MD v t\r\n",
              b"ma n1 N30 q v\r\nmn\r\n"]),
    ("ma hit", [b"ma n1\r\n", b"ma n1 v\r\n", b"ma n1 D10 v\r\n", b"ma n1 MI v\r\n",
                b"ma n1 M+ q\r\nmn\r\n", b"ma n1 MD D3 v\r\n", b"ma n1 M- v\r\n",
                b"ma n1 MD D100 v\r\n", b"ma n2 T30 v t\r\n", b"ma n2 MD q\r\nmn\r\n"]),
    ("ma cas", [b"mg n2 c\r\n", b"ma n2 C1 v\r\n", b"ma nx C1\r\n", b"ma n2 C0 v\r\n"]),
    ("ma errors", [b"ms kc 1\r\nz\r\n", b"ma kc\r\n", b"ma kc MD\r\n", b"ma kc MX\r\n",
                   b"ma n2 Dx\r\n", b"ma n2 D18446744073709551616\r\n"]),
    ("me", [b"me kc\r\n", b"me kx\r\n"]),
    ("mn noop", [b"mn\r\n"]),
    ("flushed", [b"ms kc 1\r\nq\r\n", b"flush_all\r\n", b"mg kc v\r\n", b"mg kc T30\r\n",
                 b"ma n1\r\n", b"md kr\r\n", b"ms kc 1\r\nq\r\n", b"mg kc v\r\n"]),
]


def _stats(s: socket.socket) -> dict[str, str]:
    reply = ask(s, b"stats\r\n", b"END\r\n").decode()
    return {line.split(" ")[1]: line.split(" ", 2)[2] for line in reply.splitlines()
            if line.startswith("STAT ")}


def _reply(s: socket.socket, command: bytes) -> bytes:
    """A meta command's whole reply (quiet ones are followed by ``mn``, answered ``MN``)."""
    return ask(s, command, b"MN\r\n" if command.endswith(b"mn\r\n") else b"\r\n")


def _run(server: ServerProcess) -> Iterator[tuple[str, bytes, bytes, dict[str, str]]]:
    with closing(socket.create_connection(("127.0.0.1", server.port), timeout=10)) as s:
        for name, commands in CASES:
            for command in commands:
                yield name, command, _reply(s, command), _stats(s)


@pytest.fixture(scope="module")
def servers() -> Iterator[tuple[ServerProcess, ServerProcess]]:
    opts = ("-o", "no_lru_crawler,no_lru_maintainer")
    with start_memcached(*opts) as memcached, start_trio_mc(*opts) as trio_mc:
        yield memcached, trio_mc


def test_every_general_counter_after_each_meta_command(servers: tuple[ServerProcess, ServerProcess]) -> None:
    memcached, trio_mc = servers
    failures = []
    for ref, got in zip(_run(memcached), _run(trio_mc), strict=True):
        name, command, ref_reply, ref_stats = ref
        _, _, reply, stats = got
        assert set(stats) == set(ref_stats), (name, set(stats) ^ set(ref_stats))
        diff = {k: (ref_stats[k], stats[k]) for k in ref_stats
                if k not in EXCLUDED and stats[k] != ref_stats[k]}
        if reply != ref_reply or diff:
            failures.append(f"{name}: {command[:60]!r}\n  memcached {ref_reply!r}\n"
                            f"  trio-mc   {reply!r}\n  stats (memcached, trio-mc): {diff}")
            break  # later counters would differ only because of this one
    assert not failures, "\n".join(failures)
