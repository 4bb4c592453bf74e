#!/usr/bin/env python3
"""Memory per item of trio-mc and memcached, side by side in one run.

Two experiments, each run against a fresh server of every kind:

1. **per item** (``-m 1024``, nothing is evicted): read the server's RSS
   (``VmRSS`` in ``/proc/PID/status``) when empty, store ``--items`` items
   (keys ``key:<i>``, 100-byte values) with pipelined ``set ... noreply``
   batches over one connection, check with ``stats`` that ``curr_items`` is
   exactly the number stored and nothing was evicted, read the RSS again and
   report ``(RSS after - RSS empty) / items`` next to the server's own
   ``bytes`` statistic per item.
2. **-m bound** (``-m 64``): write ``--bound-factor`` (4) times the limit's
   worth of 100-byte values, so the server must evict, and report the RSS
   growth against ``-m`` (trio-mc's target: growth <= -m + 10 %), the peak
   growth (``VmHWM``), ``evictions`` and ``curr_items``.

Standard library only.  See bench/README.md ("Memory").
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from servers import OUT_DIR, REPO_DIR, BenchError, Server, free_port, log

SERVERS = ["memcached", "trio-mc"]
MiB = 1024 * 1024

VALUE_SIZE = 100
BATCH = 1000  # sets per sendall
SYNC_EVERY = 50  # batches between two `version` round trips (flow control)
SOCKET_TIMEOUT = 120.0
BOUND_TARGET = 1.10  # trio-mc: RSS growth <= -m + 10 %


def proc_status(pid: int) -> dict[str, int]:
    """The kB fields of /proc/PID/status that we use, in bytes."""
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            name, _, rest = line.partition(":")
            if name in ("VmRSS", "VmHWM", "RssAnon", "RssFile"):
                out[name] = int(rest.split()[0]) * 1024
    return out


def rss(pid: int) -> int:
    return proc_status(pid)["VmRSS"]


def child_pids(pid: int) -> list[int]:
    out = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                out += [int(x) for x in f.read().split()]
    except OSError:
        pass
    return out


# --------------------------------------------------------------------------
# client side


class Client:
    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10.0)
        self.sock.settimeout(SOCKET_TIMEOUT)
        self.buf = b""
        self.unexpected: list[bytes] = []  # reply lines other than the ones waited for

    def close(self) -> None:
        self.sock.close()

    def _line(self) -> bytes:
        for _ in range(1_000_000):
            i = self.buf.find(b"\r\n")
            if i >= 0:
                line, self.buf = self.buf[:i], self.buf[i + 2:]
                return line
            data = self.sock.recv(65536)
            if not data:
                raise BenchError("server closed the connection")
            self.buf += data
        raise BenchError("reply line too long")

    def sync(self) -> None:
        """A `version` round trip: everything sent before it has been processed."""
        self.sock.sendall(b"version\r\n")
        for _ in range(1_000_000):
            line = self._line()
            if line.startswith(b"VERSION "):
                return
            self.unexpected.append(line)
        raise BenchError("no VERSION reply")

    def stats(self) -> dict[str, str]:
        self.sock.sendall(b"stats\r\n")
        out = {}
        for _ in range(10000):
            line = self._line()
            if line == b"END":
                return out
            parts = line.split(b" ", 2)
            if parts[0] == b"STAT" and len(parts) == 3:
                out[parts[1].decode()] = parts[2].decode()
            else:
                self.unexpected.append(line)
        raise BenchError("stats reply too long")

    def store(self, start: int, count: int, value: bytes) -> None:
        """set key:<start> .. key:<start+count-1> noreply, BATCH per sendall."""
        tail = b" 0 0 %d noreply\r\n%s\r\n" % (len(value), value)
        end = start + count
        batches = 0
        for lo in range(start, end, BATCH):
            hi = min(lo + BATCH, end)
            self.sock.sendall(b"".join([b"set key:%d%s" % (i, tail) for i in range(lo, hi)]))
            batches += 1
            if batches % SYNC_EVERY == 0:
                self.sync()
        self.sync()


def settle(server: Server, client: Client, max_wait: float = 15.0) -> tuple[int, dict]:
    """Wait (bounded) until a background hash table expansion is over and the RSS
    stops moving; return (RSS, stats)."""
    deadline = time.monotonic() + max_wait
    prev = rss(server.pid)
    st = client.stats()
    for _ in range(int(max_wait / 0.25) + 1):
        if time.monotonic() > deadline:
            log(f"warning: {server.name}: RSS still moving after {max_wait:.0f} s")
            break
        time.sleep(0.25)
        cur = rss(server.pid)
        st = client.stats()
        expanding = st.get("hash_is_expanding", "0") != "0"
        if not expanding and abs(cur - prev) < 64 * 1024:
            return cur, st
        prev = cur
    return rss(server.pid), st


def server_cmd(name: str, port: int, mem_mb: int, args) -> list[str]:
    if name == "memcached":
        cmd = [args.memcached, "-m", str(mem_mb), "-U", "0", "-t", "1",
               "-l", "127.0.0.1", "-p", str(port)]
        if os.geteuid() == 0:
            cmd += ["-u", "root"]  # memcached refuses to run as root without -u
        return cmd
    return [sys.executable, "-m", "trio_mc", "serve", "-m", str(mem_mb), "-t", "1",
            "-l", "127.0.0.1", "-p", str(port)]


def display_cmd(cmd: list[str]) -> str:
    """The command with the port as PORT (it changes every run)."""
    out = list(cmd)
    for i, a in enumerate(out[:-1]):
        if a == "-p":
            out[i + 1] = "PORT"
    if out[0] == sys.executable:
        out[0] = "python"
    return shlex.join(out)


def run_one(name: str, mem_mb: int, items: int, args) -> dict:
    port = free_port()
    # Not pinned, no wrapper: srv.pid is the server itself, whose RSS is read.
    srv = Server(name, server_cmd(name, port, mem_mb, args), port,
                 logfile=OUT_DIR / f"memory-{name}.log")
    res: dict = {"server": name, "cmd": display_cmd(srv.cmd), "mem_mb": mem_mb, "items": items}
    try:
        srv.start(args.ready_timeout)
        time.sleep(0.5)  # let start-up allocations finish before the baseline
        client = Client(port)
        try:
            res["rss_empty"] = rss(srv.pid)
            t0 = time.monotonic()
            client.store(0, items, b"v" * VALUE_SIZE)
            res["load_s"] = time.monotonic() - t0
            rss_after, st = settle(srv, client)
            status = proc_status(srv.pid)
            res["unexpected"] = len(client.unexpected)
            if client.unexpected:
                log(f"warning: {name}: {len(client.unexpected)} unexpected replies, first "
                    f"{client.unexpected[0][:80]!r}")
        finally:
            client.close()
        if child_pids(srv.pid):
            log(f"warning: {name} has child processes; only pid {srv.pid} is measured")
        res.update(
            rss_after=rss_after,
            hwm=status["VmHWM"],
            curr_items=int(st["curr_items"]),
            evictions=int(st["evictions"]),
            bytes=int(st["bytes"]),
            limit_maxbytes=int(st["limit_maxbytes"]),
            hash_bytes=int(st.get("hash_bytes", 0)),
            version=st.get("version", "?"),
        )
        res["growth"] = res["rss_after"] - res["rss_empty"]
    finally:
        srv.stop()
    return res


# --------------------------------------------------------------------------
# output


def mib(n: int) -> str:
    return f"{n / MiB:.1f}"


def print_tables(per_item: list[dict], bound: list[dict], args, invocation: str) -> None:
    print(f"Command: `{invocation}`")
    print()
    print(setup_line(per_item + bound))
    print()
    if per_item:
        n = per_item[0]["items"]
        print(f"Per item: {n:,} items, keys `key:0` .. `key:{n - 1}`, {VALUE_SIZE}-byte values, "
              f"`set ... noreply` in batches of {BATCH}, -m 1024 (no evictions).")
        print()
        base = next((r for r in per_item if r["server"] == "memcached"), None)
        print("| server | command | items stored | RSS empty MiB | RSS after MiB | "
              "RSS growth MiB | RSS B/item | `bytes` B/item | RSS B/item vs memcached | "
              "evictions | load s |")
        print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for r in per_item:
            per = r["growth"] / r["items"]
            ratio = f"{per / (base['growth'] / base['items']):.2f}" if base else "–"
            print(f"| {r['server']} | `{r['cmd']}` | {r['curr_items']:,} | {mib(r['rss_empty'])} | "
                  f"{mib(r['rss_after'])} | {mib(r['growth'])} | {per:.1f} | "
                  f"{r['bytes'] / r['items']:.1f} | {ratio} | {r['evictions']} | "
                  f"{r['load_s']:.1f} |")
        print()
    if bound:
        r0 = bound[0]
        print(f"-m bound: -m {r0['mem_mb']}, {r0['items']:,} distinct {VALUE_SIZE}-byte values "
              f"written ({args.bound_factor:g} x the limit in value bytes); target for trio-mc: "
              f"RSS growth <= -m + {round((BOUND_TARGET - 1) * 100)} %.")
        print()
        print("| server | command | items written | RSS empty MiB | RSS after MiB | "
              "RSS growth MiB | growth / -m | peak growth (VmHWM) MiB | "
              f"growth <= {BOUND_TARGET:.2f} x -m | curr_items | evictions | `bytes` MiB | "
              "RSS growth B/item kept |")
        print("|---|---|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|")
        for r in bound:
            limit = r["mem_mb"] * MiB
            ok = "yes" if r["growth"] <= BOUND_TARGET * limit else "**no**"
            print(f"| {r['server']} | `{r['cmd']}` | {r['items']:,} | {mib(r['rss_empty'])} | "
                  f"{mib(r['rss_after'])} | {mib(r['growth'])} | {r['growth'] / limit:.2f} | "
                  f"{mib(r['hwm'] - r['rss_empty'])} | {ok} | {r['curr_items']:,} | "
                  f"{r['evictions']:,} | {mib(r['bytes'])} | "
                  f"{r['growth'] / max(1, r['curr_items']):.1f} |")
        print()
    print("RSS = VmRSS of the server process (/proc/PID/status), read when empty (after "
          "`version` answered) and after the load once the RSS stopped moving; growth = "
          "after - empty. `bytes` = the server's own `bytes` stat (memcached: sum of item "
          "sizes). Peak growth = VmHWM - RSS empty.")


def setup_line(results: list[dict]) -> str:
    versions = sorted({r["version"] for r in results if r["server"] == "memcached"})
    try:
        head = subprocess.run(["git", "-C", str(REPO_DIR), "log", "-1", "--format=%h"],
                              capture_output=True, text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(REPO_DIR), "status", "--porcelain",
                                "--", "trio_mc"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        head, dirty = "?", ""
    tree = f"trio-mc at commit {head}" + (" + uncommitted changes in trio_mc/" if dirty else "")
    return (f"{time.strftime('%F %T')}; memcached {', '.join(versions) or '–'}; "
            f"Python {platform.python_version()}; kernel {platform.release()}; {tree}")


# --------------------------------------------------------------------------


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--items", type=int, default=1_000_000,
                   help="items stored in the per-item experiment (default 1000000)")
    p.add_argument("--only", action="append", choices=SERVERS,
                   help="run only this server (repeatable)")
    p.add_argument("--bound-mb", type=int, default=64,
                   help="-m of the bound experiment (default 64)")
    p.add_argument("--bound-factor", type=float, default=4.0,
                   help="value bytes written in the bound experiment, x -m (default 4)")
    p.add_argument("--no-bound", action="store_true", help="skip the -m bound experiment")
    p.add_argument("--no-per-item", action="store_true", help="skip the per-item experiment")
    p.add_argument("--memcached", default="/usr/bin/memcached")
    p.add_argument("--ready-timeout", type=float, default=30.0)
    args = p.parse_args(argv)
    if not 1 <= args.items <= 50_000_000:
        p.error("--items must be in [1, 50000000]")
    if not 1 <= args.bound_mb <= 4096 or not 0 < args.bound_factor <= 20:
        p.error("--bound-mb must be in [1, 4096], --bound-factor in (0, 20]")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    invocation = shlex.join(["python3", "bench/memory.py", *(sys.argv[1:] if argv is None else argv)])
    servers = [s for s in SERVERS if not args.only or s in args.only]
    if "memcached" in servers and not Path(args.memcached).exists():
        raise SystemExit(f"memcached not found at {args.memcached}")

    def on_term(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    per_item: list[dict] = []
    bound: list[dict] = []
    failed = False
    plan = []
    if not args.no_per_item:
        plan += [(per_item, s, 1024, args.items) for s in servers]
    if not args.no_bound:
        n = int(args.bound_factor * args.bound_mb * MiB / VALUE_SIZE)
        plan += [(bound, s, args.bound_mb, n) for s in servers]
    try:
        for dest, name, mem_mb, items in plan:
            tag = f"[-m {mem_mb}, {items:,} items] {name}"
            log(f"{tag}: running")
            try:
                r = run_one(name, mem_mb, items, args)
            except (BenchError, OSError) as e:
                log(f"{tag}: FAILED: {e}")
                failed = True
                continue
            dest.append(r)
            log(f"{tag}: RSS {mib(r['rss_empty'])} -> {mib(r['rss_after'])} MiB, "
                f"{r['growth'] / max(1, r['curr_items']):.1f} B/item kept, curr_items {r['curr_items']:,}, "
                f"evictions {r['evictions']:,}, load {r['load_s']:.1f} s")
            if r["unexpected"]:
                failed = True
            if dest is per_item and (r["curr_items"] != items or r["evictions"]):
                log(f"{tag}: CHECK FAILED: curr_items {r['curr_items']} != {items} "
                    f"or evictions {r['evictions']} != 0")
                failed = True
            if dest is bound and not r["evictions"]:
                log(f"{tag}: CHECK FAILED: no evictions")
                failed = True
    except KeyboardInterrupt:
        log("interrupted; servers stopped")
        print_tables(per_item, bound, args, invocation)
        return 130
    print_tables(per_item, bound, args, invocation)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
