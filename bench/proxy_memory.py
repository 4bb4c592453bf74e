#!/usr/bin/env python3
"""Issue 9's memory measurement, trio-mc proxy and nutcracker 0.5.0 side by side.

Runs the attacks of tests/test_proxy_memory.py (the same code: 20 clients pipelining
unread gets of 100 KB values; 20 clients writing 100 KB sets, plain or noreply, to a
SIGSTOPped memcached) against a fresh ``trio-mc proxy`` and a fresh ``nutcracker`` each,
one memcached behind, and prints one markdown row per (attack, proxy): the RSS growth of the
proxy process.  An attack stops early once a proxy has grown by 1 GiB (``aborted``).

    python3 bench/proxy_memory.py
"""

from __future__ import annotations

import socket
import sys
import tempfile
from collections.abc import Callable
from contextlib import closing
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from procs import (
    HOST,
    ServerProcess,
    ask,
    memcacheds,
    pool_toml,
    pool_yaml,
    start_nutcracker,
    start_proxy,
)
from test_proxy_memory import GET, HIT, SET, Attack, unread_gets, writes_to_stopped_backend

Starter = Callable[[int, Path], ServerProcess]


def trio_mc(backend: int, directory: Path) -> ServerProcess:
    return start_proxy(lambda port: pool_toml("alpha", f"{HOST}:{port}", [f"{HOST}:{backend}:1"]),
                       directory)


def nutcracker(backend: int, directory: Path) -> ServerProcess:
    return start_nutcracker(lambda port: pool_yaml("alpha", f"{HOST}:{port}", [f"{HOST}:{backend}:1"]),
                            directory)


def attack(name: str, start: Starter, directory: Path) -> Attack:
    with memcacheds(1) as [mc], start(mc.port, directory) as proxy, \
            closing(socket.create_connection((HOST, proxy.port), timeout=10)) as probe:
        assert ask(probe, SET) == b"STORED\r\n"
        assert ask(probe, GET, b"END\r\n") == HIT
        if name == "unread-gets":
            return unread_gets(proxy, probe)
        return writes_to_stopped_backend(proxy, mc, noreply=name == "stopped-noreply")


def main() -> int:
    print("| attack | proxy | RSS growth max MiB | aborted (> 1 GiB) | MB written by clients | probe max ms |")
    print("|---|---|---:|---|---:|---:|")
    with tempfile.TemporaryDirectory() as directory:
        for name in ("unread-gets", "stopped-set", "stopped-noreply"):
            for proxy_name, start in (("trio-mc", trio_mc), ("nutcracker", nutcracker)):
                result = attack(name, start, Path(directory))
                probe = f"{max(result.probe_seconds) * 1000:.0f}" if result.probe_seconds else "-"
                print(f"| {name} | {proxy_name} | {result.peak_mib:.1f} | {result.aborted} | "
                      f"{result.sent_bytes / 1e6:.1f} | {probe} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
