"""memcached-tool (the perl script Debian's memcached package ships) against trio-mc:
``display``, ``stats``, ``settings`` and ``dump`` read what they expect."""

from __future__ import annotations

import shutil
import socket
import subprocess
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pytest
from procs import ServerProcess, ask, start_trio_mc

#: On PATH if the distribution puts it there; else where Debian's package installs it.
TOOL = shutil.which("memcached-tool") or "/usr/share/memcached/scripts/memcached-tool"
ITEMS = {b"alpha": (5, b"abc"), b"beta": (0, b"x" * 3000), b"w%rd": (7, b"sp ace")}


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    assert Path(TOOL).exists(), f"memcached-tool not found at {TOOL} (Debian's memcached package)"
    with start_trio_mc() as proc:
        with closing(socket.create_connection(("127.0.0.1", proc.port), timeout=10)) as s:
            for key, (flags, value) in ITEMS.items():
                exptime = 100 if key == b"beta" else 0
                assert ask(s, b"set %b %d %d %d\r\n%b\r\n" % (key, flags, exptime, len(value), value)) == b"STORED\r\n"
        yield proc


def _tool(server: ServerProcess, mode: str) -> str:
    result = subprocess.run(["perl", TOOL, f"127.0.0.1:{server.port}", mode], capture_output=True,
                            timeout=30)
    assert result.returncode == 0, result.stderr
    return result.stdout.decode("latin-1")


def test_display_lists_the_slab_classes_in_use(server: ServerProcess) -> None:
    lines = _tool(server, "display").splitlines()
    assert lines[0].split() == ["#", "Item_Size", "Max_age", "Pages", "Count", "Full?", "Evicted",
                                "Evict_Time", "OOM"]
    rows = {line.split()[0]: line.split() for line in lines[1:]}
    assert rows["1"][1:2] == ["96B"] and rows["1"][4] == "2"  # alpha and w%rd
    assert [row[4] for row in rows.values()] in (["2", "1"], ["1", "2"])  # beta in a bigger class


def test_stats_shows_the_counters(server: ServerProcess) -> None:
    fields = dict(line.split()[:2] for line in _tool(server, "stats").splitlines()[1:])
    assert fields["curr_items"] == "3" and fields["cmd_set"] == "3" and fields["version"] == "1.6.18"


def test_settings_shows_the_command_line(server: ServerProcess) -> None:
    fields = dict(line.split()[:2] for line in _tool(server, "settings").splitlines()[1:])
    assert fields["tcpport"] == str(server.port) and fields["item_size_max"] == "1048576"
    assert fields["maxbytes"] == str(64 * 1024 * 1024) and fields["inter"] == "127.0.0.1"


def test_dump_writes_every_item_back_as_add_commands(server: ServerProcess) -> None:
    dumped = _tool(server, "dump").encode("latin-1")
    commands = {}
    rest = dumped
    while rest:
        line, _, rest = rest.partition(b"\r\n")
        _, key, flags, exptime, size = line.split()
        commands[key] = (int(flags), int(exptime), rest[:int(size)])
        rest = rest[int(size) + 2:]
    assert {key: (flags, value) for key, (flags, _, value) in commands.items()} == ITEMS
    assert commands[b"alpha"][1] == 0 and commands[b"beta"][1] > 0  # absolute expiry time
