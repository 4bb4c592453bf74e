#!/usr/bin/env python3
"""Benchmark trio-mc against real memcached, the Trio floor and a do-nothing server.

One invocation, one load generator (bench/loadgen, C), every server pinned to
CPU 0 and the generator pinned to CPU 1.  For each workload the runner starts
a fresh server, lets the generator preload/warm up/measure, samples the
server's CPU time (utime+stime from /proc/<pid>/stat, whole process tree)
exactly over the measurement window, stops the server and moves on.  Ratios
between servers are paired: taken within one round (the same minutes of the
same machine), then the median over rounds.

Standard library only.  See bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import selectors
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from servers import BENCH_DIR, BenchError, Server, free_port, log

CLK_TCK = os.sysconf("SC_CLK_TCK")

SERVER_CPU = "0"
GEN_CPU = "1"

C_PROGRAMS = {
    "loadgen": BENCH_DIR / "loadgen.c",
    "nullserver": BENCH_DIR / "nullserver.c",
}


@dataclass(frozen=True)
class Workload:
    name: str
    short: str  # issue 7's name for it: a, b, bm, c
    title: str
    args: tuple[str, ...]
    value_size: int
    preload: bool
    multikey: bool = False

    @property
    def label(self) -> str:
        return f"{self.short} ({self.name})"

    @property
    def rate(self) -> str:
        """The throughput the ratios compare: keys/s for a multi-get, else ops/s."""
        return "keys_per_s" if self.multikey else "ops_per_s"


WORKLOADS = [
    Workload("mix", "a", "get/set 90/10, 100 B, depth 1",
             ("-W", "mix", "-s", "100", "-d", "1"), 100, True),
    Workload("mix-pipe16", "b", "get/set 90/10, 100 B, depth 16",
             ("-W", "mix", "-s", "100", "-d", "16"), 100, True),
    Workload("multiget16", "bm", "get of 16 keys, 100 B",
             ("-W", "multiget", "-m", "16", "-s", "100", "-d", "1"), 100, True, True),
    Workload("set-1k", "c", "set only, 1 KB",
             ("-W", "set", "-s", "1024", "-d", "1"), 1024, False),
]
WORKLOAD_BY_NAME = {**{w.name: w for w in WORKLOADS}, **{w.short: w for w in WORKLOADS}}
SERVERS = ["null", "floor", "memcached", "trio-mc"]


@dataclass(frozen=True)
class Comparison:
    """What a benchmark's tables compare: the paired ratios and the issue's targets."""

    ratios: tuple[tuple[str, str], ...]  # (numerator, denominator) servers, paired per round
    targets: dict[str, float]  # workload short name -> target for ratios[0]
    issue: str  # whose targets: "issue 7"
    vs: tuple[str, ...]  # the main table's "vs X" columns
    placement: str  # where the processes run, for the setup line
    role: str = "server"  # what "cpu µs/op" measures


SERVER_COMPARISON = Comparison(
    ratios=(("trio-mc", "floor"), ("trio-mc", "memcached")),
    targets={"a": 0.75, "b": 0.5, "bm": 0.6, "c": 0.75},
    issue="issue 7", vs=("floor", "memcached"),
    placement="server on cpu0, generator on cpu1")

Results = dict[tuple[str, str], list[dict[str, Any]]]  # (workload, server) -> one run per round


# --------------------------------------------------------------------------
# helpers


def compile_programs(force: bool = False) -> dict[str, Path]:
    gcc = shutil.which("gcc") or shutil.which("cc")
    out: dict[str, Path] = {}
    for name, src in C_PROGRAMS.items():
        binary = BENCH_DIR / name
        if force or not binary.exists() or binary.stat().st_mtime < src.stat().st_mtime:
            if gcc is None:
                raise BenchError("gcc not found; cannot build " + name)
            cmd = [gcc, "-O2", "-Wall", "-o", str(binary), str(src)]
            log("compiling: " + " ".join(cmd))
            subprocess.run(cmd, check=True, timeout=120)
        out[name] = binary
    return out


def proc_tree_ticks(root_pid: int) -> int:
    """utime+stime (clock ticks) of root_pid and all its live descendants."""
    children: dict[int, list[int]] = {}
    ticks: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                data = f.read()
        except OSError:
            continue
        # the command name may contain spaces/parens: split after the last ')'
        rest = data[data.rfind(b")") + 2:].split()
        pid = int(entry)
        ppid = int(rest[1])
        children.setdefault(ppid, []).append(pid)
        ticks[pid] = int(rest[11]) + int(rest[12])  # utime, stime
    total, todo, seen = 0, [root_pid], set()
    while todo:
        pid = todo.pop()
        if pid in seen:
            continue
        seen.add(pid)
        total += ticks.get(pid, 0)
        todo.extend(children.get(pid, ()))
    return total


def cpu_stat() -> dict[str, tuple[int, int]]:
    """Per-CPU (busy, steal) clock ticks from /proc/stat (busy excludes idle/iowait/steal)."""
    out = {}
    with open("/proc/stat") as f:
        for line in f:
            if not line.startswith("cpu") or line.startswith("cpu "):
                continue
            name, *vals = line.split()
            v = [int(x) for x in vals] + [0] * 10
            user, nice, system, idle, iowait, irq, softirq, steal = v[:8]
            out[name] = (user + nice + system + irq + softirq, steal)
    return out


def pinned(cpu: str, cmd: list[str], args: argparse.Namespace) -> list[str]:
    """Prefix cmd with taskset (and chrt/nice); all exec, so the pid stays the same."""
    if args.rt:
        cmd = ["chrt", "-f", "1", *cmd]
    if args.nice:
        cmd = ["nice", "-n", str(args.nice), *cmd]
    return ["taskset", "-c", cpu, *cmd] if args.pin else cmd


# --------------------------------------------------------------------------
# servers (the process handling is in servers.py)


def memcached_cmd(port: int, args: argparse.Namespace) -> list[str]:
    """memcached as every benchmark runs it (one worker thread, 1 GiB, TCP only), unpinned."""
    cmd = [args.memcached, "-t", "1", "-m", "1024", "-U", "0", "-l", "127.0.0.1",
           "-p", str(port)]
    if os.geteuid() == 0:
        cmd += ["-u", "nobody"]  # memcached refuses to run as root without -u
    return cmd


def server_cmd(name: str, port: int, wl: Workload, args: argparse.Namespace,
               bins: dict[str, Path]) -> list[str]:
    # null and floor answer every get key with a value of the workload's size
    get_size = str(wl.value_size if wl.preload else 0)
    if name == "null":
        cmd = [str(bins["nullserver"]), "-l", "127.0.0.1", "-p", str(port),
               "-s", get_size, "-T", "3600"]
    elif name == "floor":
        cmd = [sys.executable, str(BENCH_DIR / "floor.py"), "-l", "127.0.0.1",
               "-p", str(port), "-s", get_size]
    elif name == "memcached":
        cmd = memcached_cmd(port, args)
    else:
        if args.server_cmd:
            parts = shlex.split(args.server_cmd)
            if any("{port}" in p for p in parts):
                cmd = [p.replace("{port}", str(port)) for p in parts]
            else:
                cmd = parts + ["-p", str(port)]
        else:
            cmd = [sys.executable, "-m", "trio_mc", "serve", "-t", "1", "-m", "1024",
                   "-l", "127.0.0.1", "-p", str(port)]
    return pinned(SERVER_CPU, cmd, args)


# --------------------------------------------------------------------------
# one measurement


def run_loadgen(cmd: list[str], timeout: float,
                on_marker: Callable[[str], None]) -> dict[str, Any]:
    """Run the generator, call on_marker(line) for '# ...' lines, return its JSON."""
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, start_new_session=True)
    result = None
    buf = b""
    err = b""
    assert proc.stdout is not None and proc.stderr is not None
    sel = selectors.DefaultSelector()
    try:
        sel.register(proc.stdout, selectors.EVENT_READ, "out")
        sel.register(proc.stderr, selectors.EVENT_READ, "err")
        deadline = time.monotonic() + timeout
        open_streams = 2
        while open_streams:
            left = deadline - time.monotonic()
            if left <= 0:
                raise BenchError(f"load generator did not finish within {timeout:.0f}s")
            for key, _ in sel.select(timeout=min(left, 1.0)):
                chunk = os.read(key.fd, 65536)
                if not chunk:
                    sel.unregister(key.fileobj)
                    open_streams -= 1
                    continue
                if key.data == "err":
                    err += chunk
                    continue
                buf += chunk
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    text = line.decode(errors="replace").strip()
                    if text.startswith("#"):
                        on_marker(text)
                    elif text.startswith("{"):
                        result = json.loads(text)
        rc = proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        sel.close()
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait(timeout=5)
        proc.stdout.close()
        proc.stderr.close()
    if err.strip():
        log("  loadgen: " + err.decode(errors="replace").strip())
    if result is None:
        raise BenchError(f"load generator exited with {rc} without a result")
    result["exit_code"] = rc
    return result


def loadgen_cmd(port: int, wl: Workload, args: argparse.Namespace,
                bins: dict[str, Path]) -> list[str]:
    """The generator for one run of wl (pinned to GEN_CPU)."""
    return pinned(GEN_CPU, [str(bins["loadgen"]), "-H", "127.0.0.1", "-p", str(port),
                            "-c", str(args.conns), "-k", str(args.keys),
                            "-t", str(args.duration), "-w", str(args.warmup), *wl.args,
                            *(["--preload"] if wl.preload else [])], args)


def measure(server_name: str, wl: Workload, args: argparse.Namespace,
            bins: dict[str, Path]) -> dict[str, Any]:
    """One run of wl against a fresh server_name."""
    port = free_port()
    srv = Server(server_name, server_cmd(server_name, port, wl, args, bins), port)
    try:
        srv.start(ready_timeout=args.ready_timeout)
        return measure_running(srv, wl, args, bins)
    finally:
        srv.stop()


def measure_running(srv: Server, wl: Workload, args: argparse.Namespace,
                    bins: dict[str, Path], backends: Sequence[Server] = ()) -> dict[str, Any]:
    """Drive the running srv (on SERVER_CPU) with the generator and measure the window.

    backends are processes behind srv on GEN_CPU (a proxy's memcached): their CPU time is
    reported as backend_cpu_us_per_op and is not counted as foreign load on that CPU.
    """
    gen = loadgen_cmd(srv.port, wl, args, bins)
    marks: dict[str, tuple[float, int, int, dict[str, tuple[int, int]]]] = {}

    def on_marker(text: str) -> None:
        marks[text] = (time.monotonic(), proc_tree_ticks(srv.pid),
                       sum(proc_tree_ticks(b.pid) for b in backends), cpu_stat())

    res = run_loadgen(gen, args.duration + args.warmup + 180, on_marker)
    for proc in (srv, *backends):
        if (rc := proc.exit_code()) is not None:
            raise BenchError(f"{proc.name} died during the run (exit {rc}); "
                             f"see {proc.logfile}")
    start = marks.get("# measure-start")
    end = marks.get("# measure-end")
    if start and end and res["ops"]:
        wall = max(end[0] - start[0], 1e-9)
        cpu_s = (end[1] - start[1]) / CLK_TCK
        backend_s = (end[2] - start[2]) / CLK_TCK
        res["server_cpu_s"] = cpu_s
        res["server_cpu_pct"] = 100.0 * cpu_s / wall
        res["cpu_us_per_op"] = cpu_s * 1e6 / res["ops"]
        res["gen_cpu_us_per_op"] = res["gen_cpu_s"] * 1e6 / res["ops"]
        if backends:
            res["backend_cpu_pct"] = 100.0 * backend_s / wall
            res["backend_cpu_us_per_op"] = backend_s * 1e6 / res["ops"]
        # Load on the two CPUs that is not ours (noisy neighbours) and steal time.
        wall_ticks = wall * CLK_TCK
        for cpu, own in ((SERVER_CPU, res["server_cpu_pct"]),
                         (GEN_CPU, res["gen_cpu_pct"] + 100.0 * backend_s / wall)):
            a, b = start[3].get("cpu" + cpu), end[3].get("cpu" + cpu)
            if a and b:
                busy = 100.0 * (b[0] - a[0]) / wall_ticks
                res[f"cpu{cpu}_busy_pct"] = busy
                res[f"cpu{cpu}_steal_pct"] = 100.0 * (b[1] - a[1]) / wall_ticks
                res[f"cpu{cpu}_other_pct"] = max(0.0, busy - own) if args.pin else None
    else:
        res["server_cpu_s"] = res["server_cpu_pct"] = res["cpu_us_per_op"] = None
        res["gen_cpu_us_per_op"] = None
    res["server"] = srv.name
    res["bench"] = wl.name
    res["server_cmd"] = shlex.join(srv.cmd)
    return res


# --------------------------------------------------------------------------
# reporting


METRICS = ("ops_per_s", "keys_per_s", "p50_us", "p99_us", "cpu_us_per_op",
           "server_cpu_pct", "gen_cpu_pct", "gen_cpu_us_per_op", "hit_ratio", "errors",
           "backend_cpu_pct", "backend_cpu_us_per_op",
           "cpu0_other_pct", "cpu1_other_pct", "cpu0_steal_pct", "cpu1_steal_pct")


def median_of(runs: list[dict[str, Any]], key: str) -> float | None:
    vals = [r[key] for r in runs if r.get(key) is not None]
    return statistics.median(vals) if vals else None


def fmt(v: float | None, spec: str) -> str:
    return "–" if v is None else format(v, spec)


def setup_line(args: argparse.Namespace, placement: str) -> str:
    try:
        mc = subprocess.run([args.memcached, "-V"], capture_output=True, text=True,
                            timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        mc = "memcached ?"
    sched = "SCHED_FIFO (--rt)" if args.rt else (f"nice {args.nice}" if args.nice else "default")
    return (f"{time.strftime('%F %T')}; {mc}; Python {sys.version.split()[0]}; "
            f"kernel {os.uname().release}; {os.cpu_count()} CPUs; "
            f"{placement}{'' if args.pin else ' (NOT pinned)'}; scheduling {sched}; "
            f"{args.conns} conns, {args.keys} keys, {args.duration:g} s measured after "
            f"{args.warmup:g} s warmup per run")


def paired_ratio(results: Results, wl: Workload, num: str, den: str, key: str
                 ) -> tuple[float | None, list[float]]:
    """num's key / den's key, taken within each round, and the median of those ratios.

    Two servers measured minutes apart on a shared machine can see different background
    load; within one round they are neighbours, so a ratio per round cancels most of it.
    """
    by_round = {r["round"]: r.get(key) for r in results.get((wl.name, den), [])}
    ratios = [r[key] / by_round[r["round"]] for r in results.get((wl.name, num), [])
              if r.get(key) is not None and by_round.get(r["round"])]
    return (statistics.median(ratios) if ratios else None), ratios


def print_tables(results: Results, workloads: list[Workload], servers: list[str], rounds: int,
                 comparison: Comparison, setup: str = "") -> None:
    cmp = comparison
    med: dict[tuple[str, str], dict[str, float | None]] = {}
    for (wname, sname), runs in results.items():
        med[(wname, sname)] = {k: median_of(runs, k) for k in METRICS}
    label = " (median of %d rounds)" % rounds if rounds > 1 else ""
    print()
    print(f"### Results{label}")
    print()
    if setup:
        print(setup)
        print()
    print(f"| workload | {cmp.role} | ops/s | keys/s | p50 µs | p99 µs | {cmp.role} cpu µs/op | "
          + " | ".join(f"vs {v}" for v in cmp.vs) + " |")
    print("|---|---|---:|---:|---:|---:|---:|" + "---:|" * len(cmp.vs))
    for wl in workloads:
        for s in servers:
            m = med.get((wl.name, s))
            if m is None:
                continue
            vs = [paired_ratio(results, wl, s, v, wl.rate)[0] for v in cmp.vs]
            keys = fmt(m["keys_per_s"], ",.0f") if wl.multikey else "–"
            print(f"| {wl.label} | {s} | {fmt(m['ops_per_s'], ',.0f')} | {keys} | "
                  f"{fmt(m['p50_us'], '.0f')} | {fmt(m['p99_us'], '.0f')} | "
                  f"{fmt(m['cpu_us_per_op'], '.2f')} | "
                  + " | ".join(fmt(v, ".2f") for v in vs) + " |")
    first = f"{cmp.ratios[0][0]} / {cmp.ratios[0][1]}"
    print()
    print("Paired ratios (within each round, then the median; keys/s for bm, else ops/s) "
          f"against {cmp.issue}'s targets for {first}:")
    print()
    print("| workload | " + " | ".join(f"{a} / {b}" for a, b in cmp.ratios)
          + f" | target ({first}) | met? | "
          + " | ".join(f"{a} / {b} per round" for a, b in cmp.ratios) + " |")
    print("|---|" + "---:|" * len(cmp.ratios) + "---:|---|" + "---|" * len(cmp.ratios))
    for wl in workloads:
        pairs = [paired_ratio(results, wl, a, b, wl.rate) for a, b in cmp.ratios]
        if all(median is None for median, _ in pairs):
            continue
        target = cmp.targets[wl.short]
        ratio = pairs[0][0]
        met = "–" if ratio is None else ("yes" if ratio >= target else "no")
        print(f"| {wl.label} | " + " | ".join(fmt(median, ".2f") for median, _ in pairs)
              + f" | >= {target:.2f} | {met} | "
              + " | ".join(" ".join(f"{x:.2f}" for x in each) or "–" for _, each in pairs)
              + " |")
    backend = any(m.get("backend_cpu_pct") is not None for m in med.values())
    print()
    print(f"Diagnostics (measurement window): CPU busy % of the {cmp.role} (cpu{SERVER_CPU}) "
          f"and the generator (cpu{GEN_CPU}); generator CPU µs per request (the generator "
          f"saturates before the {cmp.role} only if this exceeds the {cmp.role}'s cpu µs/op); "
          + (f"the backend's (memcached's, on cpu{GEN_CPU}) CPU % and µs per request; "
             if backend else "")
          + "'other' = load on that CPU not from us (other processes, interrupts), steal = "
          "time taken by the hypervisor; hit ratio of requested keys.")
    print()
    cpu_vs = cmp.vs[-1]
    extra = " backend cpu % | backend cpu µs/op |" if backend else ""
    print(f"| workload | {cmp.role} | {cmp.role} cpu % | generator cpu % | "
          f"generator cpu µs/op |{extra} cpu/op vs {cpu_vs} | other cpu0/cpu1 % | "
          "steal cpu0/cpu1 % | hit ratio | errors |")
    print("|---|---|---:|---:|---:|" + "---:|---:|" * backend + "---:|---:|---:|---:|---:|")
    for wl in workloads:
        for s in servers:
            m = med.get((wl.name, s))
            if m is None:
                continue
            hit = fmt(m["hit_ratio"], ".3f") if wl.preload else "–"
            cpu_ratio, _ = paired_ratio(results, wl, s, cpu_vs, "cpu_us_per_op")
            cols = (f" {fmt(m['backend_cpu_pct'], '.0f')} | "
                    f"{fmt(m['backend_cpu_us_per_op'], '.2f')} |" if backend else "")
            print(f"| {wl.label} | {s} | {fmt(m['server_cpu_pct'], '.0f')} | "
                  f"{fmt(m['gen_cpu_pct'], '.0f')} | {fmt(m['gen_cpu_us_per_op'], '.2f')} |"
                  f"{cols} {fmt(cpu_ratio, '.2f')} | "
                  f"{fmt(m['cpu0_other_pct'], '.0f')}/{fmt(m['cpu1_other_pct'], '.0f')} | "
                  f"{fmt(m['cpu0_steal_pct'], '.0f')}/{fmt(m['cpu1_steal_pct'], '.0f')} | "
                  f"{hit} | {fmt(m['errors'], '.0f')} |")
    noisy = [k for k, m in med.items()
             if max(m.get("cpu0_other_pct") or 0, m.get("cpu1_other_pct") or 0) > 15
             or max(m.get("cpu0_steal_pct") or 0, m.get("cpu1_steal_pct") or 0) > 10]
    if noisy:
        print()
        print(f"WARNING: {len(noisy)} of {len(med)} result rows had >15% foreign load or "
              ">10% steal on the benchmark CPUs; those numbers are not trustworthy.")
    print()
    print("Workloads: " + "; ".join(f"{w.label} = {w.title}" for w in workloads) + ".")


def run_rounds(workloads: list[Workload], servers: list[str], args: argparse.Namespace,
               run_one: Callable[[str, Workload], dict[str, Any]], comparison: Comparison
               ) -> int:
    """Every workload x round x server (order rotated per round), then the tables.

    Returns the exit status: 0, 1 if a run failed or had errors, 130 if interrupted.
    SIGTERM behaves like Ctrl-C, so run_one's finally blocks stop its processes.
    """
    def on_term(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    results: Results = {}
    jf = open(args.json, "a") if args.json else None
    failed = False
    try:
        for wl in workloads:
            for rnd in range(args.rounds):
                k = rnd % len(servers)
                order = servers[k:] + servers[:k]
                for s in order:
                    tag = f"[{wl.name} round {rnd + 1}/{args.rounds}] {s}"
                    try:
                        res = run_one(s, wl)
                    except BenchError as e:
                        log(f"{tag}: FAILED: {e}")
                        failed = True
                        continue
                    res["round"] = rnd + 1
                    results.setdefault((wl.name, s), []).append(res)
                    cpu = res["cpu_us_per_op"]
                    log(f"{tag}: {res['ops_per_s']:,.0f} ops/s  p50 {res['p50_us']:.0f} µs  "
                        f"p99 {res['p99_us']:.0f} µs  cpu "
                        f"{'–' if cpu is None else f'{cpu:.2f}'} µs/op  "
                        f"gen cpu {res['gen_cpu_pct']:.0f}%  "
                        f"other {fmt(res.get('cpu0_other_pct'), '.0f')}/"
                        f"{fmt(res.get('cpu1_other_pct'), '.0f')}%  errors {res['errors']}")
                    if res["errors"]:
                        failed = True
                    if jf:
                        jf.write(json.dumps(res) + "\n")
                        jf.flush()
    except KeyboardInterrupt:
        log("interrupted; processes stopped")
        print_tables(results, workloads, servers, args.rounds, comparison,
                     setup_line(args, comparison.placement))
        return 130
    finally:
        if jf:
            jf.close()
    print_tables(results, workloads, servers, args.rounds, comparison,
                 setup_line(args, comparison.placement))
    return 1 if failed else 0


# --------------------------------------------------------------------------


def common_parser(doc: str | None, servers: list[str]) -> argparse.ArgumentParser:
    """The options every runner (run.py, proxy.py) shares; check them with checked_args."""
    p = argparse.ArgumentParser(description=doc,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--duration", type=float, default=10.0,
                   help="measured seconds per run (default 10)")
    p.add_argument("--warmup", type=float, default=2.0,
                   help="unmeasured seconds before each measurement (default 2)")
    p.add_argument("--rounds", type=int, default=1,
                   help="repeat; servers are interleaved per round and medians reported")
    p.add_argument("--only", action="append", choices=servers,
                   help="run only this server (repeatable)")
    p.add_argument("--workload", action="append", choices=list(WORKLOAD_BY_NAME),
                   help="run only this workload, by name or issue 7's letter (a, b, bm, "
                        "c); repeatable")
    p.add_argument("--memcached", default=shutil.which("memcached") or "/usr/bin/memcached",
                   help="memcached binary")
    p.add_argument("--conns", type=int, default=50, help="connections (default 50)")
    p.add_argument("--keys", type=int, default=10000, help="key space (default 10000)")
    p.add_argument("--ready-timeout", type=float, default=30.0,
                   help="seconds to wait for a server to accept connections")
    p.add_argument("--no-pin", dest="pin", action="store_false",
                   help="do not pin with taskset (results are then not comparable)")
    p.add_argument("--nice", type=int, default=0,
                   help="run servers and generator with this nice value (e.g. -10, needs "
                        "root) to shield them from other load on a shared machine")
    p.add_argument("--rt", action="store_true",
                   help="run servers and generator as SCHED_FIFO (chrt -f 1, needs root): "
                        "immune to other load on a shared machine, but starves other "
                        "processes on CPUs 0-1 (kernel RT throttling leaves them 5%%)")
    p.add_argument("--json", type=Path, default=None,
                   help="also write every individual run as JSON lines to this file")
    p.add_argument("--rebuild", action="store_true", help="recompile the C programs")
    return p


def checked_args(p: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    args = p.parse_args(argv)
    if not (0 < args.duration <= 3600) or not (0 <= args.warmup <= 600):
        p.error("duration must be in (0, 3600], warmup in [0, 600]")
    if not (1 <= args.rounds <= 100):
        p.error("rounds must be in [1, 100]")
    return args


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = common_parser(__doc__, SERVERS)
    p.add_argument("--server-cmd", default=None,
                   help="trio-mc command; '{port}' is substituted, otherwise '-p PORT' "
                        "is appended (default: python -m trio_mc serve -t 1 -m 1024 "
                        "-l 127.0.0.1)")
    return checked_args(p, argv)


def check_setup(args: argparse.Namespace) -> None:
    """Exit early if the machine cannot run what args ask for (CPUs, taskset, chrt, root)."""
    if args.pin:
        if shutil.which("taskset") is None:
            raise SystemExit("taskset not found (util-linux); use --no-pin to run unpinned")
        cpus = os.sched_getaffinity(0)
        if not {0, 1} <= cpus:
            raise SystemExit(f"need CPUs 0 and 1 (have {sorted(cpus)}); use --no-pin")
    if (args.rt or args.nice < 0) and os.geteuid() != 0:
        raise SystemExit("--rt and negative --nice need root")
    if args.rt and shutil.which("chrt") is None:
        raise SystemExit("chrt not found (util-linux)")


def selected(args: argparse.Namespace, servers: list[str]) -> tuple[list[Workload], list[str]]:
    """The workloads and servers of --workload/--only, in the standard order."""
    chosen = {WORKLOAD_BY_NAME[name] for name in args.workload or ()}
    return ([w for w in WORKLOADS if not chosen or w in chosen],
            [s for s in servers if not args.only or s in args.only])


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    check_setup(args)
    workloads, servers = selected(args, SERVERS)
    if "memcached" in servers and not Path(args.memcached).exists():
        raise SystemExit(f"memcached not found at {args.memcached}")
    bins = compile_programs(force=args.rebuild)
    return run_rounds(workloads, servers, args, lambda s, wl: measure(s, wl, args, bins),
                      SERVER_COMPARISON)


if __name__ == "__main__":
    sys.exit(main())
