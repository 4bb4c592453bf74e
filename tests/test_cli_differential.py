"""Differential: ``trio-mc serve`` refuses a bad command line as memcached 1.6.18 does.

Each argument list goes to the real memcached and to trio-mc's command line; the exit status
and the text on stderr must be the same (memcached's program name, as getopt prints it, is
replaced by ``trio-mc``), and nothing may go to stdout.  trio-mc's side runs in-process (its
option parsing needs no server), so the table costs one short memcached run per row.

Run as root, memcached also needs ``-u root``; it is given to both.  Its "can't run as root
without the -u switch" comes only after the options were accepted, so no row depends on it.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from procs import MEMCACHED, REPO_ROOT, require_memcached

from trio_mc import cli

AS_ROOT = ["-u", "root"] if os.geteuid() == 0 else []

BAD = [
    # getopt's own messages (exit 1), and memcached's line after them
    ["-x"], ["-Z", "-x"], ["--foo"], ["--port"], ["-p"], ["-D"], ["--help=3"], ["--dis"],
    ["--max"],
    # values refused inside the option loop (exit 1)
    ["-t", "0"], ["-t", "abc"], ["-c", "0"], ["-c", "abc"], ["-c", "-1"], ["-R", "0"],
    ["-R", "abc"], ["-f", "1"], ["-f", "abc"], ["-f", "0.5"], ["-n", "0"], ["-n", "abc"],
    ["-D", ""], ["-Y", "/nonexistent/auth"],
    # the first error wins, in argument order
    ["-t", "0", "-x"], ["-x", "-t", "0"], ["-c", "0", "-t", "0"], ["-t", "0", "-I", "1"],
    # -o (exit 1)
    ["-o", "nonsense"], ["-o", "modern,nonsense"], ["-o", "hashpower=5"], ["-o", "hashpower=40"],
    ["-o", "hashpower"], ["-o", "hashpower=abc"], ["-o", "hashpower="], ["-o", "hash_algorithm=foo"],
    ["-o", "hash_algorithm"], ["-o", "hash_algorithm="], ["-o", "tail_repair_time"],
    ["-o", "tail_repair_time=5"], ["-o", "tail_repair_time=abc"], ["-o", "idle_timeout"],
    ["-o", "lru_crawler_sleep"], ["-o", "lru_crawler_sleep=-1"], ["-o", "lru_crawler_tocrawl"],
    ["-o", "lru_crawler_tocrawl=abc"], ["-o", "hot_lru_pct"], ["-o", "hot_lru_pct=abc"],
    ["-o", "warm_lru_pct=abc"], ["-o", "warm_lru_pct"], ["-o", "hot_max_factor=0"],
    ["-o", "hot_max_factor=abc"], ["-o", "warm_max_factor"], ["-o", "hot_max_factor"],
    ["-o", "temporary_ttl"], ["-o", "slab_automove=5"], ["-o", "slab_automove_ratio=2"],
    ["-o", "slab_automove_ratio=abc"], ["-o", "slab_automove_ratio"], ["-o", "slab_automove_window=2"],
    ["-o", "slab_automove_window=abc"], ["-o", "slab_automove_window"], ["-o", "watcher_logbuf_size"],
    ["-o", "watcher_logbuf_size=abc"], ["-o", "worker_logbuf_size"], ["-o", "worker_logbuf_size=abc"],
    ["-o", "read_buf_mem_limit"], ["-o", "read_buf_mem_limit=abc"],
    # checks after the loop (exit 64, EX_USAGE)
    ["-p", "99999"], ["-p", "65536"], ["-U", "99999"], ["-m", "abc"], ["-m", "0"], ["-m", "1g"],
    ["-I", "10"], ["-I", "2g"], ["-I", "abc"], ["-I", "0"], ["-I", "5m", "-m", "8"],
    ["-I", "2000m", "-m", "5000"], ["-I", "2k", "-m", "0"], ["-B", "foo"],
    ["-o", "slab_chunk_max=3000"], ["-o", "hot_lru_pct=60,warm_lru_pct=50"],
]


def _memcached(args: list[str]) -> tuple[int, str, str]:
    result = subprocess.run(["memcached", *AS_ROOT, *args], executable=MEMCACHED, capture_output=True,
                            text=True, timeout=10)
    return result.returncode, result.stdout, result.stderr.replace("memcached: ", "trio-mc: ")


def _trio_mc(args: list[str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> tuple[int, str, str]:
    def must_not_serve(settings: object) -> int:
        raise AssertionError(f"trio-mc accepted {args}")

    monkeypatch.setattr("trio_mc.server.serve.run", must_not_serve)
    status = cli.main(["serve", *AS_ROOT, *args])
    out, err = capsys.readouterr()
    return status, out, err


@pytest.mark.parametrize("args", BAD, ids=" ".join)
def test_bad_command_line_is_refused_as_memcached_does(
    args: list[str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    require_memcached()
    assert _trio_mc(args, capsys, monkeypatch) == _memcached(args)


def test_the_real_process_exits_with_the_status_and_message() -> None:
    result = subprocess.run([sys.executable, "-m", "trio_mc", "serve", "-t", "0", "-x"], cwd=REPO_ROOT,
                            capture_output=True, text=True, timeout=30)
    assert (result.returncode, result.stdout, result.stderr) == (1, "", "Number of threads must be greater than 0\n")
    result = subprocess.run([sys.executable, "-m", "trio_mc", "serve", "--nope"], cwd=REPO_ROOT,
                            capture_output=True, text=True, timeout=30)
    assert (result.returncode, result.stderr) == (1, "trio-mc: unrecognized option '--nope'\nIllegal argument \"?\"\n")
