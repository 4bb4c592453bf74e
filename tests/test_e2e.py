"""End to end: the real ``trio-mc serve -t 4`` process and an unmodified pymemcache client."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
from pymemcache.client.base import Client

from procs import ServerProcess, start_trio_mc


@pytest.fixture
def mc(server: ServerProcess) -> Iterator[Client]:
    client = Client(("127.0.0.1", server.port), default_noreply=False, timeout=5, connect_timeout=5)
    client.flush_all()
    yield client
    client.close()


def test_storage_commands(mc: Client) -> None:
    assert mc.set("k", b"v", expire=100, flags=7)
    assert mc.get("k") == b"v"
    assert mc.add("k", b"x") is False
    assert mc.add("new", b"x") is True
    assert mc.replace("k", b"w")
    assert mc.replace("absent", b"w") is False
    assert mc.append("k", b"z") and mc.prepend("k", b"a")
    assert mc.get("k") == b"awz"
    assert mc.delete("k") is True and mc.delete("k") is False


def test_gets_and_cas(mc: Client) -> None:
    mc.set("c", b"1")
    value, cas = mc.gets("c")
    assert value == b"1"
    assert mc.cas("c", b"2", cas) is True
    assert mc.cas("c", b"3", cas) is False
    assert mc.cas("missing", b"3", cas) is None
    assert mc.get("c") == b"2"


def test_incr_decr_touch_and_gat(mc: Client) -> None:
    mc.set("n", b"10")
    assert mc.incr("n", 5) == 15
    assert mc.decr("n", 100) == 0
    assert mc.incr("none", 1) is None
    assert mc.touch("n", 100) is True and mc.touch("none", 1) is False
    # pymemcache has no gat/gats helpers: send them raw.
    assert mc.raw_command(b"gat 50 n", b"END\r\n") == b"VALUE n 0 2\r\n0 \r\n"
    _, cas = mc.gets("n")
    assert mc.raw_command(b"gats 50 n", b"END\r\n") == b"VALUE n 0 2 %d\r\n0 \r\n" % int(cas)


def test_many_keys_in_one_get(mc: Client) -> None:
    values = {f"key:{i}": (b"value-%d" % i) * 3 for i in range(500)}
    assert mc.set_many(values) == []
    got = mc.get_many(list(values) + ["missing:1", "missing:2"])
    assert got == values


def test_large_values_near_the_item_limit(mc: Client) -> None:
    big = (b"\r\n\0END\r\n" + bytes(range(256)) * 4200)[:1048516]  # the largest that fits -I 1m
    assert len(big) == 1048516
    assert mc.set("b", big)
    assert mc.get("b") == big
    with pytest.raises(Exception, match="object too large"):
        mc.set("b2", big + b"!")


def test_noreply_client(server: ServerProcess) -> None:
    quiet = Client(("127.0.0.1", server.port), timeout=5)  # pymemcache's default: noreply
    quiet.set("q", b"1")
    quiet.incr("q", 1, noreply=True)
    assert quiet.get("q") == b"2"
    quiet.close()


def test_version_stats_and_flush(mc: Client) -> None:
    assert mc.version() == b"1.6.18"
    mc.set("s", b"1")
    stats = mc.stats()
    assert stats[b"curr_items"] >= 1 and stats[b"threads"] == 4
    assert b"maxbytes" in mc.stats("settings")
    mc.flush_all()
    assert mc.get("s") is None


def test_connections_spread_over_workers(server: ServerProcess) -> None:
    clients = [Client(("127.0.0.1", server.port), default_noreply=False, timeout=5) for _ in range(40)]
    for i, client in enumerate(clients):
        client.set(f"w{i}", b"%d" % i)
    assert all(client.get(f"w{i}") == b"%d" % i for i, client in enumerate(clients))
    for client in clients:
        client.close()


def test_shutdown_command_needs_A(server: ServerProcess) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as s:
        s.sendall(b"shutdown\r\n")
        assert s.recv(100) == b"ERROR: shutdown not enabled\r\n"


def test_shutdown_command_with_A() -> None:
    proc = start_trio_mc("-A", "-t", "2")
    try:
        with socket.create_connection(("127.0.0.1", proc.port), timeout=5) as s:
            s.sendall(b"shutdown\r\n")
            assert s.recv(100) == b""
        assert proc.proc is not None and proc.proc.wait(timeout=10) == 0
    finally:
        proc.close()
