#!/usr/bin/env python3
"""Benchmark trio-mc proxy against nutcracker (twemproxy 0.5.0) and a 1:1 Trio forwarder.

Each proxy stands in front of one fresh memcached backend (`-t 1`); the generator talks
to the proxy only.  Placement on the 2 CPUs: the proxy alone on CPU 0 (it is what is
measured), the generator and memcached together on CPU 1 (both cheap per request next to
a Python proxy; memcached's CPU time is reported on its own and not counted as foreign
load).  Same workloads, generator, measurement window, paired ratios and tables as
bench/run.py (whose machinery this reuses); the ratios are against nutcracker, with issue
8's targets for trio-mc / nutcracker.  The forwarder (bench/forward.py: each client its
own backend connection, no parsing) is the proxy floor: what the naive design reaches.

Standard library + PyYAML-free (the nutcracker config is written as text).  See
bench/README.md.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path
from typing import Any

from run import (
    GEN_CPU,
    SERVER_CPU,
    Comparison,
    Workload,
    check_setup,
    checked_args,
    common_parser,
    compile_programs,
    measure_running,
    memcached_cmd,
    pinned,
    run_rounds,
    selected,
)
from servers import BENCH_DIR, OUT_DIR, Server, free_port

PROXIES = ["nutcracker", "trio-mc", "forwarder"]

PROXY_COMPARISON = Comparison(
    ratios=(("trio-mc", "nutcracker"), ("forwarder", "nutcracker")),
    targets={"a": 0.5, "b": 1.2, "bm": 0.8, "c": 0.5},
    issue="issue 8", vs=("nutcracker",),
    placement=f"proxy on cpu{SERVER_CPU}, generator and memcached on cpu{GEN_CPU}",
    role="proxy")

POOL = "bench"  # the one pool; both proxies get the same keys (twemproxy's defaults spelled out)


def proxy_cmd(name: str, port: int, backend: int, args: argparse.Namespace) -> list[str]:
    """The command of proxy `name` on port, forwarding to memcached on backend (pinned)."""
    OUT_DIR.mkdir(exist_ok=True)
    listen, server = f"127.0.0.1:{port}", f"127.0.0.1:{backend}:1 s1"
    if name == "nutcracker":
        conf = OUT_DIR / "proxy-nutcracker.yml"
        conf.write_text(f"{POOL}:\n  listen: {listen}\n  hash: fnv1a_64\n"
                        f"  distribution: ketama\n  servers:\n    - {server}\n")
        cmd = [args.nutcracker, "-c", str(conf), "-s", str(free_port()), "-a", "127.0.0.1",
               "-v", "4"]
    elif name == "trio-mc":
        conf = OUT_DIR / "proxy-trio-mc.toml"
        conf.write_text(f'[{POOL}]\nlisten = "{listen}"\nhash = "fnv1a_64"\n'
                        f'distribution = "ketama"\nservers = ["{server}"]\n')
        cmd = [sys.executable, "-m", "trio_mc", "proxy", "-c", str(conf),
               "-T", str(args.threads)]
    else:
        cmd = [sys.executable, str(BENCH_DIR / "forward.py"), "-l", "127.0.0.1",
               "-p", str(port), "-b", f"127.0.0.1:{backend}"]
    return pinned(SERVER_CPU, cmd, args)


def start_backend(args: argparse.Namespace, name: str = "memcached-backend") -> Server:
    """A fresh memcached on GEN_CPU (so a/b/bm preload through the proxy, hit ratio 1.0)."""
    port = free_port()
    backend = Server(name, pinned(GEN_CPU, memcached_cmd(port, args), args), port)
    backend.start(ready_timeout=args.ready_timeout)
    return backend


def measure_proxy(name: str, wl: Workload, args: argparse.Namespace,
                  bins: dict[str, Path]) -> dict[str, Any]:
    """One run of wl through proxy `name` in front of a fresh memcached."""
    backend = start_backend(args)
    try:
        port = free_port()
        proxy = Server(name, proxy_cmd(name, port, backend.port, args), port)
        try:
            proxy.start(ready_timeout=args.ready_timeout)
            return measure_running(proxy, wl, args, bins, backends=(backend,))
        finally:
            proxy.stop()
    finally:
        backend.stop()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = common_parser(__doc__, PROXIES)
    p.add_argument("--nutcracker", default=shutil.which("nutcracker") or "nutcracker",
                   help="nutcracker binary")
    p.add_argument("--threads", type=int, default=1, help="trio-mc proxy -T (default 1)")
    return checked_args(p, argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    check_setup(args)
    workloads, proxies = selected(args, PROXIES)
    for binary in (args.memcached, *(["nutcracker"] if "nutcracker" in proxies else [])):
        if shutil.which(args.nutcracker if binary == "nutcracker" else binary) is None:
            raise SystemExit(f"{binary} not found")
    bins = compile_programs(force=args.rebuild)
    return run_rounds(workloads, proxies, args,
                      lambda name, wl: measure_proxy(name, wl, args, bins), PROXY_COMPARISON)


if __name__ == "__main__":
    sys.exit(main())
