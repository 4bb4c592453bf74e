#!/usr/bin/env python3
"""Where trio-mc's per-command time goes: py-spy samples of a running server, summed up.

Starts one trio-mc server pinned to cpu0 (as bench/run.py does), drives it with
bench/loadgen on cpu1, one workload after another, and attaches ``py-spy record --format
raw`` for part of each run.  The raw stacks (``<out>/prof-[floor-|proxy-]<workload>.txt``)
are summed into a Markdown report: time per area (parse, store, commands/replies, conn
loop, Trio, ...), the top functions and lines by self time, and what ``Conn._loop`` spends
inclusively in each callee.  Samples are turned into µs per request with the generator's
throughput, so two reports (before/after a change) compare directly.

``--server proxy`` profiles ``trio-mc proxy`` instead, set up as bench/proxy.py runs it
(proxy on cpu0, memcached and the generator on cpu1), with the proxy's areas (parse,
msg/routing, hashing, response reader, client and server socket calls, Trio) and the
server connection's loops next to ``Conn._loop``.

Also summarises existing raw files: ``hotspots.py --summarize FILE[:OPS[:CPU%]] ...``.
Standard library only (plus the py-spy program).  See bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import proxy
from run import (
    CLK_TCK,
    WORKLOAD_BY_NAME,
    Workload,
    compile_programs,
    loadgen_cmd,
    proc_tree_ticks,
    server_cmd,
)
from run import parse_args as run_args
from servers import REPO_DIR, Server, free_port, log

IDLE = "trio: epoll_wait"
#: (``path:function`` prefix of the leaf frame, a function some frame of the stack must
#: start with or "", area); first match wins; the areas the lead optimises.  A C call
#: (sock.send, bytes.join) counts as the Python line calling it.
Areas = tuple[tuple[str, str, str], ...]
TRIO_AREAS: Areas = (
    ("trio/_core/_io_epoll.py:EpollIOManager.get_events", "", IDLE),
    ("trio/", "", "trio, other"),
)
AREAS: Areas = (
    ("trio_mc/protocol/", "", "parse (protocol/)"),
    ("trio_mc/numbers.py", "", "parse (numbers.py)"),
    ("trio_mc/store/", "", "store"),
    ("trio_mc/server/commands.py", "", "commands + replies"),
    ("trio_mc/net/transport.py", "", "socket recv/send (SocketTransport)"),
    ("trio_mc/net/conn.py", "", "conn loop"),
    ("trio_mc/server/", "", "server, other"),
    ("floor.py:send_all", "", "floor: socket send"),
    ("floor.py", "", "floor: recv, split, replies"),
    *TRIO_AREAS,
)
#: The proxy's: a transport call is the client's or the server connection's by its caller
#: (the receiving task writes replies to clients, so a send under _receive_loop is a
#: client write).
PROXY_AREAS: Areas = (
    ("trio_mc/protocol/responses.py", "", "response reader (protocol/responses.py)"),
    ("trio_mc/protocol/", "", "parse requests (protocol/)"),
    ("trio_mc/numbers.py", "", "parse requests (numbers.py)"),
    ("trio_mc/proxy/hashkit.py", "", "hashing (hashkit, distribution)"),
    ("trio_mc/proxy/distribution.py", "", "hashing (hashkit, distribution)"),
    ("trio_mc/net/transport.py:SocketTransport.receive", "ServerConn.",
     "server recv (SocketTransport)"),
    ("trio_mc/net/transport.py", "ServerConn._send_loop", "server send (SocketTransport)"),
    ("trio_mc/net/transport.py:SocketTransport.receive", "", "client recv (SocketTransport)"),
    ("trio_mc/net/transport.py", "", "client write (SocketTransport)"),
    ("trio_mc/proxy/client.py:ClientSession.wake", "", "client write (ClientSession.wake)"),
    ("trio_mc/proxy/client.py:ClientSession._flush", "", "client write (ClientSession.wake)"),
    ("trio_mc/proxy/server.py", "", "server conn queues (proxy/server.py)"),
    ("trio_mc/proxy/", "", "msg/routing (proxy/ client, msg, pool)"),
    ("trio_mc/net/conn.py", "", "client conn loop (net/conn.py)"),
    ("trio_mc/net/", "", "net, other"),
    *TRIO_AREAS,
)
LOOPS = ("Conn._loop",)
PROXY_LOOPS = ("Conn._loop", "ServerConn._receive_loop", "ServerConn._send_loop")
TOP = 25


@dataclass
class Frame:
    func: str
    path: str
    line: str

    @classmethod
    def parse(cls, text: str) -> Frame:
        """``name (path:line)``; native frames have no line and count as their caller."""
        name, _, where = text.rpartition(" (")
        path, _, line = where.rstrip(")").rpartition(":")
        return cls(name, path, line) if path.endswith(".py") else cls(name, "", "")


def load(path: Path) -> list[tuple[list[Frame], int]]:
    """py-spy's raw format: one ``frame;frame;...;leaf COUNT`` line per distinct stack."""
    stacks = []
    for text in path.read_text().splitlines():
        frames, _, count = text.rpartition(" ")
        python = [f for f in map(Frame.parse, frames.split(";")) if f.path]
        if python:
            stacks.append((python, int(count)))
    return stacks


def area(frames: list[Frame], areas: Areas = AREAS) -> str:
    """The area of a stack: by its leaf frame (and for some, by a caller)."""
    leaf = frames[-1]
    where = f"{leaf.path}:{leaf.func}"
    for prefix, caller, name in areas:
        if where.startswith(prefix) and (
                not caller or any(f.func.startswith(caller) for f in frames)):
            return name
    return "other (stdlib, threads)"


def summarize(path: Path, ops_per_s: float | None, rate: int, seconds: float,
              cpu_pct: float | None = None, areas: Areas = AREAS,
              loops: tuple[str, ...] = LOOPS) -> str:
    """A Markdown section for one raw profile (cpu_pct: the server's CPU use meanwhile).

    py-spy often counts a thread blocked in ``epoll_wait`` as active, so those samples
    (leaf ``get_events``) mix idle and busy time: they are counted in the header and left
    out of the tables.  The rest are shares of "busy" samples.  A busy sample is wall time,
    which includes time the server was runnable but not running (a shared CPU, the GIL),
    so with cpu_pct the µs/request column spreads the server's measured CPU time per
    request (/proc) over the shares; without it, it is sampled wall time per request.
    """
    stacks = [(frames, n) for frames, n in load(path) if area(frames, areas) != IDLE]
    waiting = sum(n for _, n in load(path)) - sum(n for _, n in stacks)
    busy = max(sum(n for _, n in stacks), 1)
    requests = ops_per_s * seconds if ops_per_s else None
    cpu_us = cpu_pct * 1e4 / ops_per_s if cpu_pct is not None and ops_per_s else None
    sampled_us = busy / rate * 1e6 / requests if requests else None
    us_per_sample = (cpu_us or sampled_us or 0) / busy

    def table(title: str, counts: Counter[str], top: int | None = TOP) -> list[str]:
        return ["", title, "", "| | samples | % of busy | µs/request |", "|---|---:|---:|---:|",
                *(f"| {name} | {n} | {100 * n / busy:.1f} | "
                  f"{f'{n * us_per_sample:.2f}' if us_per_sample else '–'} |"
                  for name, n in counts.most_common(top))]

    by_area: Counter[str] = Counter()
    funcs: Counter[str] = Counter()
    lines: Counter[str] = Counter()
    # per loop: its direct callees (and its own lines), and inclusive every function below
    under_loop: dict[str, Counter[str]] = {loop: Counter() for loop in loops}
    below_loop: dict[str, Counter[str]] = {loop: Counter() for loop in loops}
    for frames, n in stacks:
        leaf = frames[-1]
        by_area[area(frames, areas)] += n
        funcs[f"`{leaf.func}` ({leaf.path})"] += n
        lines[f"`{leaf.path}:{leaf.line}` ({leaf.func})"] += n
        for loop in loops:
            depth = next((i for i, f in enumerate(frames) if f.func == loop), None)
            if depth is None:
                continue
            below_loop[loop][f"`{loop}`"] += n
            for name in {f"`{f.func}` ({f.path})" for f in frames[depth + 1:]}:
                below_loop[loop][name] += n
            callee = frames[depth + 1] if depth + 1 < len(frames) else None
            under_loop[loop][f"`{callee.func}` ({callee.path})" if callee
                             else f"self, line {frames[depth].line}"] += n
    head = (f"{busy + waiting} samples ({rate} Hz, {seconds:g} s: {rate * seconds:.0f} per "
            f"thread), {waiting} of them in `epoll_wait` (left out), {busy} busy")
    if ops_per_s:
        head += f"; {ops_per_s:,.0f} requests/s; busy samples = {sampled_us:.1f} µs/request"
    if cpu_us is not None:
        head += (f"; server CPU {cpu_pct:.0f} % of one core = {cpu_us:.1f} µs/request "
                 "(/proc), the µs column")
    return "\n".join([
        head,
        *table("By area (leaf frame):", by_area, None),
        *table(f"Top {TOP} functions by self time:", funcs),
        *table(f"Top {TOP} lines by self time:", lines),
        *(row for loop in loops for row in [
            *table(f"`{loop}` by what it calls directly (inclusive):", under_loop[loop], None),
            *table(f"Top {TOP} functions by inclusive time under `{loop}`:", below_loop[loop]),
        ]),
    ])


def raw_file(opts: argparse.Namespace, wl: Workload) -> Path:
    server: str = opts.server
    out: Path = opts.out
    return out / f"prof-{'' if server == 'trio-mc' else server + '-'}{wl.short}.txt"


def record(wl: Workload, opts: argparse.Namespace, bins: dict[str, Path], port: int,
           spid: int) -> tuple[float, float]:
    """Run the generator on wl and py-spy over the middle of it.

    Returns requests/s and the server's CPU % over py-spy's window: py-spy does not
    always tell an idle ``epoll_wait`` from a busy one, so a server below 100 % shows
    some idle time as Trio's ``get_events``.
    """
    gen = loadgen_cmd(port, wl, opts.run, bins)
    raw = raw_file(opts, wl)
    with subprocess.Popen(gen, stdout=subprocess.PIPE, text=True) as lg:
        try:
            assert lg.stdout is not None
            for text in lg.stdout:  # '# measure-start' once preload and warmup are done
                if text.startswith("# measure-start"):
                    break
            t0, ticks0 = time.monotonic(), proc_tree_ticks(spid)
            subprocess.run(["py-spy", "record", "--pid", str(spid), "--duration",
                            str(opts.spy_duration), "--rate", str(opts.rate), "--format", "raw",
                            *(["--native"] if opts.native else []),
                            *(["--nonblocking"] if opts.nonblocking else []), "-o", str(raw)],
                           check=True, capture_output=True, timeout=opts.spy_duration + 60)
            cpu_pct = 100 * (proc_tree_ticks(spid) - ticks0) / CLK_TCK / (time.monotonic() - t0)
            result = json.loads(lg.stdout.read().strip().splitlines()[-1])
        finally:
            if lg.poll() is None:
                lg.kill()
    log(f"{wl.label}: {result['ops_per_s']:,.0f} requests/s, errors {result['errors']}, "
        f"server CPU {cpu_pct:.0f} %; {raw}")
    return float(result["ops_per_s"]), cpu_pct


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workload", action="append", choices=list(WORKLOAD_BY_NAME),
                   help="workload (name or a/b/bm/c), repeatable; default a, b, bm, c")
    p.add_argument("--duration", type=float, default=15, help="generator seconds (15)")
    p.add_argument("--spy-duration", type=int, default=12, help="py-spy seconds (12)")
    p.add_argument("--rate", type=int, default=200, help="py-spy samples/s (200)")
    p.add_argument("--native", action="store_true", help="py-spy --native")
    p.add_argument("--nonblocking", action="store_true",
                   help="py-spy --nonblocking (does not pause the server per sample)")
    p.add_argument("--out", type=Path, default=REPO_DIR / "bench" / "out",
                   help="directory for the raw stacks (bench/out)")
    p.add_argument("--server", choices=("trio-mc", "floor", "proxy"), default="trio-mc",
                   help="the server to profile (trio-mc); the floor shows what any server "
                        "on this model pays; proxy: trio-mc proxy -T 1 in front of memcached")
    p.add_argument("--server-cmd", default=None, help="trio-mc command, as for run.py")
    p.add_argument("--summarize", nargs="+", metavar="FILE[:OPS_PER_S[:CPU_PCT]]",
                   help="only summarize these raw py-spy files (with the requests/s and "
                        "server CPU %% that were measured meanwhile)")
    opts = p.parse_args()
    is_proxy = opts.server == "proxy"
    areas, loops = (PROXY_AREAS, PROXY_LOOPS) if is_proxy else (AREAS, LOOPS)
    if opts.summarize:
        for spec in opts.summarize:
            name, ops, cpu = (spec.split(":") + ["", ""])[:3]
            report = summarize(Path(name), float(ops) if ops else None, opts.rate,
                               opts.spy_duration, float(cpu) if cpu else None, areas, loops)
            print(f"### {name}\n\n{report}\n")
        return 0
    if shutil.which("py-spy") is None:
        raise SystemExit("py-spy not found")
    # run.py's setup (pinning, connections, keys), default scheduling: py-spy, on the
    # same two CPUs, gets too few samples of a SCHED_FIFO server
    common = ["--duration", str(opts.duration), "--warmup", "1"]
    opts.run = (proxy.parse_args(common) if is_proxy else
                run_args([*common, *(["--server-cmd", opts.server_cmd] if opts.server_cmd
                                     else [])]))
    opts.out.mkdir(parents=True, exist_ok=True)
    workloads = [WORKLOAD_BY_NAME[n] for n in opts.workload or ["a", "b", "bm", "c"]]
    bins = compile_programs()
    port = free_port()
    # the proxy's backend: one memcached for all workloads (preloaded by the first)
    backend = proxy.start_backend(opts.run, "memcached-profile") if is_proxy else None
    try:
        srv = Server(f"{opts.server}-profile",
                     proxy.proxy_cmd("trio-mc", port, backend.port, opts.run) if backend
                     else server_cmd(opts.server, port, workloads[0], opts.run, bins), port)
        measured: dict[Workload, tuple[float, float]] = {}
        try:
            srv.start(ready_timeout=30)
            for wl in workloads:
                measured[wl] = record(wl, opts, bins, port, srv.pid)
        finally:
            srv.stop()
    finally:
        if backend:
            backend.stop()
    print(f"## {opts.server} profile: `{' '.join(sys.argv)}`\n\nServer: `{' '.join(srv.cmd)}`\n")
    for wl in workloads:
        ops_per_s, cpu_pct = measured[wl]
        report = summarize(raw_file(opts, wl), ops_per_s, opts.rate,
                           opts.spy_duration, cpu_pct, areas, loops)
        print(f"### {wl.label}: {wl.title}\n\n{report}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
