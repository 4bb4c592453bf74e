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
from collections.abc import Callable
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
    floor_target: float = 0.0  # issue 7: trio-mc / floor must reach this (on `rate`)

    @property
    def label(self) -> str:
        return f"{self.short} ({self.name})"

    @property
    def rate(self) -> str:
        """The throughput the ratios compare: keys/s for a multi-get, else ops/s."""
        return "keys_per_s" if self.multikey else "ops_per_s"


WORKLOADS = [
    Workload("mix", "a", "get/set 90/10, 100 B, depth 1",
             ("-W", "mix", "-s", "100", "-d", "1"), 100, True, floor_target=0.75),
    Workload("mix-pipe16", "b", "get/set 90/10, 100 B, depth 16",
             ("-W", "mix", "-s", "100", "-d", "16"), 100, True, floor_target=0.5),
    Workload("multiget16", "bm", "get of 16 keys, 100 B",
             ("-W", "multiget", "-m", "16", "-s", "100", "-d", "1"), 100, True, True,
             floor_target=0.6),
    Workload("set-1k", "c", "set only, 1 KB",
             ("-W", "set", "-s", "1024", "-d", "1"), 1024, False, floor_target=0.75),
]
WORKLOAD_BY_NAME = {**{w.name: w for w in WORKLOADS}, **{w.short: w for w in WORKLOADS}}
SERVERS = ["null", "floor", "memcached", "trio-mc"]
#: The paired ratios every run reports: (numerator, denominator) servers.
RATIOS = (("trio-mc", "floor"), ("trio-mc", "memcached"))

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
        cmd = [args.memcached, "-t", "1", "-m", "1024", "-U", "0", "-l", "127.0.0.1",
               "-p", str(port)]
        if os.geteuid() == 0:
            cmd += ["-u", "nobody"]  # memcached refuses to run as root without -u
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
    port = free_port()
    srv = Server(server_name, server_cmd(server_name, port, wl, args, bins), port)
    try:
        srv.start(ready_timeout=args.ready_timeout)
        gen = loadgen_cmd(port, wl, args, bins)
        marks: dict[str, tuple[float, int, dict]] = {}

        def on_marker(text: str) -> None:
            marks[text] = (time.monotonic(), proc_tree_ticks(srv.pid), cpu_stat())

        res = run_loadgen(gen, args.duration + args.warmup + 180, on_marker)
        if (rc := srv.exit_code()) is not None:
            raise BenchError(f"{server_name} died during the run (exit {rc}); "
                             f"see {srv.logfile}")
        start = marks.get("# measure-start")
        end = marks.get("# measure-end")
        if start and end and res["ops"]:
            cpu_s = (end[1] - start[1]) / CLK_TCK
            res["server_cpu_s"] = cpu_s
            res["server_cpu_pct"] = 100.0 * cpu_s / max(end[0] - start[0], 1e-9)
            res["cpu_us_per_op"] = cpu_s * 1e6 / res["ops"]
            res["gen_cpu_us_per_op"] = res["gen_cpu_s"] * 1e6 / res["ops"]
            # Load on the two CPUs that is not ours (noisy neighbours) and steal time.
            wall_ticks = max(end[0] - start[0], 1e-9) * CLK_TCK
            for cpu, own in ((SERVER_CPU, res["server_cpu_pct"]),
                             (GEN_CPU, res["gen_cpu_pct"])):
                a, b = start[2].get("cpu" + cpu), end[2].get("cpu" + cpu)
                if a and b:
                    busy = 100.0 * (b[0] - a[0]) / wall_ticks
                    res[f"cpu{cpu}_busy_pct"] = busy
                    res[f"cpu{cpu}_steal_pct"] = 100.0 * (b[1] - a[1]) / wall_ticks
                    res[f"cpu{cpu}_other_pct"] = max(0.0, busy - own) if args.pin else None
        else:
            res["server_cpu_s"] = res["server_cpu_pct"] = res["cpu_us_per_op"] = None
            res["gen_cpu_us_per_op"] = None
        res["server"] = server_name
        res["bench"] = wl.name
        res["server_cmd"] = shlex.join(srv.cmd)
        return res
    finally:
        srv.stop()


# --------------------------------------------------------------------------
# reporting


METRICS = ("ops_per_s", "keys_per_s", "p50_us", "p99_us", "cpu_us_per_op",
           "server_cpu_pct", "gen_cpu_pct", "gen_cpu_us_per_op", "hit_ratio", "errors",
           "cpu0_other_pct", "cpu1_other_pct", "cpu0_steal_pct", "cpu1_steal_pct")


def median_of(runs: list[dict[str, Any]], key: str) -> float | None:
    vals = [r[key] for r in runs if r.get(key) is not None]
    return statistics.median(vals) if vals else None


def fmt(v: float | None, spec: str) -> str:
    return "–" if v is None else format(v, spec)


def setup_line(args: argparse.Namespace) -> str:
    try:
        mc = subprocess.run([args.memcached, "-V"], capture_output=True, text=True,
                            timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        mc = "memcached ?"
    sched = "SCHED_FIFO (--rt)" if args.rt else (f"nice {args.nice}" if args.nice else "default")
    return (f"{time.strftime('%F %T')}; {mc}; Python {sys.version.split()[0]}; "
            f"kernel {os.uname().release}; {os.cpu_count()} CPUs; "
            f"server on cpu{SERVER_CPU}, generator on cpu{GEN_CPU}"
            f"{'' if args.pin else ' (NOT pinned)'}; scheduling {sched}; "
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
                 setup: str = "") -> None:
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
    print("| workload | server | ops/s | keys/s | p50 µs | p99 µs | cpu µs/op | vs floor | "
          "vs memcached |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for wl in workloads:
        for s in servers:
            m = med.get((wl.name, s))
            if m is None:
                continue
            vs_floor, _ = paired_ratio(results, wl, s, "floor", wl.rate)
            vs_mc, _ = paired_ratio(results, wl, s, "memcached", wl.rate)
            keys = fmt(m["keys_per_s"], ",.0f") if wl.multikey else "–"
            print(f"| {wl.label} | {s} | {fmt(m['ops_per_s'], ',.0f')} | {keys} | "
                  f"{fmt(m['p50_us'], '.0f')} | {fmt(m['p99_us'], '.0f')} | "
                  f"{fmt(m['cpu_us_per_op'], '.2f')} | {fmt(vs_floor, '.2f')} | "
                  f"{fmt(vs_mc, '.2f')} |")
    print()
    print("Paired ratios (within each round, then the median; keys/s for bm, else ops/s) "
          "against issue 7's targets for trio-mc / floor:")
    print()
    print("| workload | " + " | ".join(f"{a} / {b}" for a, b in RATIOS)
          + " | target (/ floor) | met? | " + " | ".join(f"{a} / {b} per round" for a, b in RATIOS)
          + " |")
    print("|---|" + "---:|" * len(RATIOS) + "---:|---|" + "---|" * len(RATIOS))
    for wl in workloads:
        pairs = [paired_ratio(results, wl, a, b, wl.rate) for a, b in RATIOS]
        if all(median is None for median, _ in pairs):
            continue
        to_floor = pairs[0][0]
        met = "–" if to_floor is None else ("yes" if to_floor >= wl.floor_target else "no")
        print(f"| {wl.label} | " + " | ".join(fmt(median, ".2f") for median, _ in pairs)
              + f" | >= {wl.floor_target:.2f} | {met} | "
              + " | ".join(" ".join(f"{x:.2f}" for x in each) or "–" for _, each in pairs)
              + " |")
    print()
    print("Diagnostics (measurement window): CPU busy % of the server (cpu0) and the "
          "generator (cpu1); generator CPU µs per request (the generator saturates "
          "before the server only if this exceeds the server's cpu µs/op); 'other' = "
          "load on that CPU not from us (other processes, interrupts), steal = time "
          "taken by the hypervisor; hit ratio of requested keys.")
    print()
    print("| workload | server | server cpu % | generator cpu % | generator cpu µs/op | "
          "cpu/op vs memcached | other cpu0/cpu1 % | steal cpu0/cpu1 % | hit ratio | errors |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for wl in workloads:
        for s in servers:
            m = med.get((wl.name, s))
            if m is None:
                continue
            hit = fmt(m["hit_ratio"], ".3f") if wl.preload else "–"
            cpu_ratio, _ = paired_ratio(results, wl, s, "memcached", "cpu_us_per_op")
            print(f"| {wl.label} | {s} | {fmt(m['server_cpu_pct'], '.0f')} | "
                  f"{fmt(m['gen_cpu_pct'], '.0f')} | {fmt(m['gen_cpu_us_per_op'], '.2f')} | "
                  f"{fmt(cpu_ratio, '.2f')} | "
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


# --------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--duration", type=float, default=10.0,
                   help="measured seconds per run (default 10)")
    p.add_argument("--warmup", type=float, default=2.0,
                   help="unmeasured seconds before each measurement (default 2)")
    p.add_argument("--rounds", type=int, default=1,
                   help="repeat; servers are interleaved per round and medians reported")
    p.add_argument("--only", action="append", choices=SERVERS,
                   help="run only this server (repeatable)")
    p.add_argument("--workload", action="append", choices=list(WORKLOAD_BY_NAME),
                   help="run only this workload, by name or issue 7's letter (a, b, bm, "
                        "c); repeatable")
    p.add_argument("--server-cmd", default=None,
                   help="trio-mc command; '{port}' is substituted, otherwise '-p PORT' "
                        "is appended (default: python -m trio_mc serve -t 1 -m 1024 "
                        "-l 127.0.0.1)")
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
    args = p.parse_args(argv)
    if not (0 < args.duration <= 3600) or not (0 <= args.warmup <= 600):
        p.error("duration must be in (0, 3600], warmup in [0, 600]")
    if not (1 <= args.rounds <= 100):
        p.error("rounds must be in [1, 100]")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
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
    servers = [s for s in SERVERS if not args.only or s in args.only]
    chosen = {WORKLOAD_BY_NAME[name] for name in args.workload or ()}
    workloads = [w for w in WORKLOADS if not chosen or w in chosen]
    if "memcached" in servers and not Path(args.memcached).exists():
        raise SystemExit(f"memcached not found at {args.memcached}")
    bins = compile_programs(force=args.rebuild)

    # SIGTERM behaves like Ctrl-C so that the finally blocks stop the servers
    def on_term(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)

    results: Results = {}
    jf = open(args.json, "a") if args.json else None
    failed = False
    try:
        for wl in workloads:
            for rnd in range(args.rounds):
                # interleave: rotate the server order every round
                k = rnd % len(servers)
                order = servers[k:] + servers[:k]
                for s in order:
                    tag = f"[{wl.name} round {rnd + 1}/{args.rounds}] {s}"
                    try:
                        res = measure(s, wl, args, bins)
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
                        f"gen cpu {res['gen_cpu_pct']:.0f}%  errors {res['errors']}")
                    if res["errors"]:
                        failed = True
                    if jf:
                        jf.write(json.dumps(res) + "\n")
                        jf.flush()
    except KeyboardInterrupt:
        log("interrupted; servers stopped")
        print_tables(results, workloads, servers, args.rounds, setup_line(args))
        return 130
    finally:
        if jf:
            jf.close()
    print_tables(results, workloads, servers, args.rounds, setup_line(args))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
