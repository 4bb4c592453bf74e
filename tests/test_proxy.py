"""``trio-mc proxy`` on its own: its documented deviations from twemproxy and what it does beyond.

Where twemproxy closes a client silently (an unsupported or malformed command), trio-mc
answers memcached's own reply in its place and keeps the connection: those replies are
compared with the same bytes sent to a memcached directly.  Beyond twemproxy: ``gat``/``gats``
split and merged like ``get``; meta commands routed by key (base64 keys hashed decoded), each
reply compared with the same request sent directly to a mirror of the backend holding the key;
quiet mode answered exactly as memcached would.  Then process behaviour: a refused backend,
clients that leave or never read, a unix listen socket, two pools, ``-t``, SIGTERM, ``-T 2``.

The module's proxy fronts set A of three memcached backends (servers named server1..3);
set B is a mirror: a request routed to ``A[i]`` is also sent directly to ``B[i]``, so both
hold the same items and the proxy's reply must equal B's.  (The byte-for-byte comparison with
nutcracker is in test_proxy_differential.py.)
"""

from __future__ import annotations

import base64
import os
import re
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from procs import (
    HOST,
    REPO_ROOT,
    ServerProcess,
    exited,
    free_port,
    memcacheds,
    pool_toml,
    read_quiet,
    rss_kib,
    start_proxy,
    wait_for_port,
)

IO_TIMEOUT = 5.0


def connect(port: int) -> socket.socket:
    sock = socket.create_connection((HOST, port), timeout=IO_TIMEOUT)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def read_until(sock: socket.socket, end: bytes, count: int = 1) -> bytes:
    """Read until the data ends with ``end`` and holds it ``count`` times (bounded)."""
    data = b""
    deadline = time.monotonic() + IO_TIMEOUT
    while not (data.endswith(end) and data.count(end) >= count):
        assert time.monotonic() < deadline, f"timed out, read {data[-300:]!r}"
        chunk = sock.recv(1 << 16)
        assert chunk, f"closed, read {data[-300:]!r}"
        data += chunk
    return data


def ask(port: int, request: bytes, end: bytes = b"\r\n", count: int = 1) -> bytes:
    with connect(port) as sock:
        sock.sendall(request)
        return read_until(sock, end, count)


# ------------------------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def backends() -> Iterator[tuple[list[ServerProcess], list[ServerProcess]]]:
    """Set A (behind the proxy) and set B (its mirror), three memcached each."""
    with memcacheds(6) as procs:
        yield procs[:3], procs[3:]


def lines_for(servers: list[ServerProcess]) -> list[str]:
    return [f"{HOST}:{s.port}:1 server{i + 1}" for i, s in enumerate(servers)]


@pytest.fixture(scope="module")
def proxy(backends: tuple[list[ServerProcess], list[ServerProcess]],
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    lines = lines_for(backends[0])
    proc = start_proxy(lambda p: pool_toml("alpha", f"{HOST}:{p}", lines, timeout=2000),
                       tmp_path_factory.mktemp("proxy"))
    try:
        yield proc
    finally:
        code, out = proc.stop(), proc.output()
        proc.close()
        assert code == 0, out


@pytest.fixture(autouse=True)
def flushed(backends: tuple[list[ServerProcess], list[ServerProcess]]) -> None:
    for b in backends[0] + backends[1]:
        assert ask(b.port, b"flush_all\r\n") == b"OK\r\n"


class Mirror:
    """Finds which backend of A holds a key (set through the proxy) and asks B's twin."""

    def __init__(self, a: list[ServerProcess], b: list[ServerProcess]) -> None:
        self.a, self.b = a, b
        self.where: dict[bytes, int] = {}

    def holder(self, key: bytes) -> int:
        """The index of the one backend of A holding ``key`` (it must be stored)."""
        if key not in self.where:
            held = [i for i, mc in enumerate(self.a)
                    if ask(mc.port, b"mg " + key + b"\r\n") != b"EN\r\n"]
            assert len(held) == 1, (key, held)
            self.where[key] = held[0]
        return self.where[key]

    def ask_b(self, key: bytes, request: bytes, end: bytes = b"\r\n") -> bytes:
        return ask(self.b[self.holder(key)].port, request, end)


@pytest.fixture
def mirror(backends: tuple[list[ServerProcess], list[ServerProcess]]) -> Mirror:
    return Mirror(*backends)


def _cas_masked(reply: bytes) -> bytes:
    """CAS numbers differ between A and B (A also served the other tests): mask them."""
    return re.sub(rb"(?m)^((?:VA|HD|NF|NS|EX|EN|ME) .*? )c\d+", rb"\1c<cas>", reply)


KEYS = [b"alpha", b"bravo", b"charlie", b"delta", b"echo", b"foxtrot", b"golf", b"hotel"]


# ----------------------------------------------------- deviations: memcached's own replies

@pytest.mark.parametrize("command", [
    b"stats\r\n", b"stats items\r\n", b"flush_all\r\n", b"watch\r\n", b"verbosity 1\r\n",
    b"lru_crawler metadump all\r\n", b"shutdown\r\n", b"garbage\r\n", b"GET alpha\r\n",
])
def test_unsupported_command_gets_error_in_place(command: bytes, proxy: ServerProcess) -> None:
    """twemproxy closes the client (losing the earlier replies); trio-mc answers ERROR in
    place, keeps the order, and the connection stays usable."""
    with connect(proxy.port) as sock:
        sock.sendall(b"set alpha 0 0 1\r\na\r\nget alpha\r\n" + command + b"get alpha bravo\r\n")
        assert read_until(sock, b"END\r\n", 2) == (
            b"STORED\r\nVALUE alpha 0 1\r\na\r\nEND\r\nERROR\r\nVALUE alpha 0 1\r\na\r\nEND\r\n")
        sock.sendall(b"delete alpha\r\n")
        assert read_until(sock, b"\r\n") == b"DELETED\r\n"


@pytest.mark.parametrize("request_", [
    pytest.param(b"set alpha 0 0 3\r\nabcd\r\nget alpha\r\n", id="bad-data-chunk"),
    pytest.param(b"set alpha 0 0 -1\r\nget alpha\r\n", id="negative-length"),
    pytest.param(b"set alpha 0 0 1\r\n1\r\nincr alpha x\r\nget alpha\r\n", id="delta-not-a-number"),
    pytest.param(b"delete alpha 0\r\ndelete alpha 1\r\n", id="legacy-delete-time"),
    pytest.param(b"get " + b"k" * 251 + b"\r\nget alpha\r\n", id="key-too-long"),
    pytest.param(b"get alpha\nset alpha 0 0 1\na\r\nget alpha\n", id="bare-newlines"),
    pytest.param(b"get\r\ntouch alpha\r\n", id="missing-arguments"),
])
def test_malformed_request_answered_as_memcached(request_: bytes, proxy: ServerProcess,
                                                 backends: tuple[list[ServerProcess], list[ServerProcess]]) -> None:
    """Bytes twemproxy closes on get the reply memcached itself gives them (all keys of
    these requests are on one backend or missing, so one memcached is the reference)."""
    with connect(backends[1][0].port) as sock:
        sock.sendall(request_)
        expected, _ = read_quiet(sock)
    with connect(proxy.port) as sock:
        sock.sendall(request_)
        got = read_until(sock, expected[-5:]) if expected else b""  # then nothing more
        more, closed = read_quiet(sock, 0.1)
        got += more
    assert not closed
    assert got == expected


# ------------------------------------------------------------------- beyond twemproxy

def test_gat_and_gats_split_and_merged_like_get(proxy: ServerProcess) -> None:
    with connect(proxy.port) as sock:
        sock.sendall(b"".join(b"set %s %d 0 2\r\nv%d\r\n" % (k, i, i) for i, k in enumerate(KEYS)
                              if k != b"alpha"))
        read_until(sock, b"STORED\r\n", len(KEYS) - 1)
        keys = b" ".join([*KEYS, b"missing", b"bravo"])
        sock.sendall(b"get " + keys + b"\r\n")
        get = read_until(sock, b"END\r\n")
        sock.sendall(b"gat 100 " + keys + b"\r\n")
        gat = read_until(sock, b"END\r\n")
        sock.sendall(b"gets " + keys + b"\r\n")
        gets = read_until(sock, b"END\r\n")
        sock.sendall(b"gats 0 " + keys + b"\r\n")
        gats = read_until(sock, b"END\r\n")
    assert get.count(b"VALUE ") == len(KEYS)  # 7 hits + bravo again
    assert gat == get
    assert gats == gets
    assert gets != get


def test_meta_commands_routed_by_key(proxy: ServerProcess, mirror: Mirror) -> None:
    """Each meta reply through the proxy equals the same request sent to the mirror of the
    backend that holds the key."""
    with connect(proxy.port) as sock:
        for key in KEYS:
            req = b"ms %s 2 T0 F5\r\nhi\r\n" % key
            sock.sendall(req)
            assert read_until(sock, b"\r\n") == b"HD\r\n"
            assert mirror.ask_b(key, req) == b"HD\r\n"
        assert len(set(mirror.where.values())) == 3, "KEYS should cover every backend"
        requests = [
            b"mg %s v f t s k\r\n", b"mg %s v c O123 k\r\n", b"ma %s\r\n",
            b"ms %s 1 MA\r\nx\r\n", b"mg %s v\r\n", b"md %s I\r\n", b"mg %s v c\r\n",
            b"ms %s 1 T0\r\n7\r\n", b"ma %s N0 D5 v\r\n", b"ma %s MD D2 v t\r\n",
            b"md %s\r\n", b"mg %s v\r\n", b"me %s\r\n",
        ]
        for template in requests:
            for key in KEYS:
                req = template % key  # fenced with mn: the reply is what comes before MN
                sock.sendall(req + b"mn\r\n")
                got = read_until(sock, b"MN\r\n")
                assert _cas_masked(got) == _cas_masked(mirror.ask_b(key, req + b"mn\r\n", b"MN\r\n")), req


def test_meta_base64_keys_hashed_decoded(proxy: ServerProcess, mirror: Mirror) -> None:
    """``mg <base64> b`` finds the item ``set <decoded>`` stored, whatever server it is on,
    and is answered as memcached answers it (1.6.18 returns mg's ``k`` decoded)."""
    with connect(proxy.port) as sock:
        for i, key in enumerate(KEYS):
            req = b"set %s 0 0 1\r\n%d\r\n" % (key, i)
            sock.sendall(req)
            assert read_until(sock, b"\r\n") == b"STORED\r\n"
            assert mirror.ask_b(key, req) == b"STORED\r\n"
        for key in KEYS:
            encoded = base64.b64encode(key)
            for req in (b"mg %s b v k c\r\n" % encoded, b"ms %s 2 b k\r\nb-\r\n" % encoded,
                        b"ma %s b k\r\n" % encoded, b"mg %s b k q v\r\n" % encoded):
                sock.sendall(req + b"mn\r\n")
                got = read_until(sock, b"MN\r\n")
                assert _cas_masked(got) == _cas_masked(mirror.ask_b(key, req + b"mn\r\n", b"MN\r\n")), req
        sock.sendall(b"get " + b" ".join(KEYS) + b"\r\n")
        values = read_until(sock, b"END\r\n")
    assert values.count(b"VALUE ") == len(KEYS)
    assert values.count(b" 0 2\r\nb-\r\n") == len(KEYS)


def test_meta_quiet_mode_as_memcached(proxy: ServerProcess, mirror: Mirror) -> None:
    """Quiet commands of many servers pipelined with mn: suppressed replies are absent, the
    others (errors, hits of mg q) in order, and mn answered once, where it was sent."""
    with connect(proxy.port) as sock:
        sock.sendall(b"".join(b"ms %s 1 q\r\n%d\r\n" % (k, i) for i, k in enumerate(KEYS[:4])) + b"mn\r\n")
        assert read_until(sock, b"MN\r\n") == b"MN\r\n"  # successful ms q: nothing
        for k in KEYS[:4]:
            mirror.ask_b(k, b"ms %s 1\r\n%d\r\n" % (k, KEYS.index(k)))
        pipeline = [
            b"mg alpha q v k\r\n", b"mg nothere q v\r\n", b"md bravo q\r\n", b"md nothere q\r\n",
            b"ma charlie q\r\n", b"ma nothere q\r\n", b"mg delta q k\r\n", b"mn\r\n",
            b"mg bravo q v\r\n", b"ms echo 1 q I\r\nz\r\n", b"mn\r\n",
        ]
        sock.sendall(b"".join(pipeline))
        got = read_until(sock, b"MN\r\n", 2)
    expected = b""
    for req in pipeline:
        if req == b"mn\r\n":
            expected += b"MN\r\n"
            continue
        key = req.split()[1]
        target = mirror.b[0] if key == b"nothere" else mirror.b[mirror.holder(key)]
        expected += ask(target.port, req + b"mn\r\n", b"MN\r\n")[:-4]
    assert got == expected
    assert b"EN\r\n" not in got and b"VA 1" in got


def test_refused_backend(tmp_path: Path, backends: tuple[list[ServerProcess], list[ServerProcess]]) -> None:
    """Keys of a server nothing listens on get twemproxy's SERVER_ERROR Connection refused;
    the others are served; a multi-get touching it fails whole; the proxy keeps working."""
    dead = free_port()
    lines = [f"{HOST}:{dead}:1 dead", f"{HOST}:{backends[0][0].port}:1 live"]
    proc = start_proxy(lambda p: pool_toml("alpha", f"{HOST}:{p}", lines), tmp_path)
    try:
        with connect(proc.port) as sock:
            replies = {}
            for key in KEYS:
                sock.sendall(b"set %s 0 0 1\r\n1\r\n" % key)
                replies[key] = read_until(sock, b"\r\n")
            assert set(replies.values()) == {b"STORED\r\n", b"SERVER_ERROR Connection refused\r\n"}
            down = next(k for k, r in replies.items() if r != b"STORED\r\n")
            up = next(k for k, r in replies.items() if r == b"STORED\r\n")
            sock.sendall(b"mg %s v\r\nget %s %s\r\nget %s\r\nmn\r\n" % (down, up, down, up))
            assert read_until(sock, b"MN\r\n") == (
                b"SERVER_ERROR Connection refused\r\nSERVER_ERROR Connection refused\r\n"
                b"VALUE %s 0 1\r\n1\r\nEND\r\nMN\r\n" % up)
    finally:
        code = proc.stop()
        proc.close()
    assert code == 0


def test_client_leaving_mid_multiget_does_not_disturb_others(proxy: ServerProcess) -> None:
    big = b"x" * 100_000
    with connect(proxy.port) as sock:
        sock.sendall(b"".join(b"set big%d 0 0 %d\r\n%s\r\n" % (i, len(big), big) for i in range(40)))
        read_until(sock, b"STORED\r\n", 40)
    keys = b" ".join(b"big%d" % i for i in range(40))
    other = connect(proxy.port)
    try:
        for round_ in range(5):
            leaver = connect(proxy.port)
            leaver.sendall((b"get " + keys + b"\r\n") * 3)
            leaver.recv(1000)
            leaver.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            leaver.close()  # RST with replies in flight
            other.sendall(b"set small 0 0 1\r\n%d\r\nget small big3\r\n" % round_)
            assert read_until(other, b"END\r\n") == (
                b"STORED\r\nVALUE small 0 1\r\n%d\r\nVALUE big3 0 100000\r\n%s\r\nEND\r\n" % (round_, big))
    finally:
        other.close()
    assert ask(proxy.port, b"get " + keys + b"\r\n", b"END\r\n").count(b"VALUE ") == 40


def test_client_that_never_reads_is_bounded(proxy: ServerProcess) -> None:
    """2,000 pipelined gets of a 100 KB value (200 MB of replies), never read: the proxy
    stops reading that client (128 requests, 1 MB of replies pending), its memory stays
    bounded and another client is still answered within 100 ms."""
    assert proxy.proc is not None
    big = b"y" * 100_000
    assert ask(proxy.port, b"set big 0 0 %d\r\n%s\r\n" % (len(big), big)) == b"STORED\r\n"
    before = rss_kib(proxy.proc.pid)
    hog = socket.socket()
    hog.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    hog.connect((HOST, proxy.port))
    try:
        hog.setblocking(False)
        pending = b"get big\r\n" * 2000
        deadline = time.monotonic() + 2.0
        while pending and time.monotonic() < deadline:
            try:
                pending = pending[hog.send(pending):]
            except BlockingIOError:
                time.sleep(0.01)
        time.sleep(0.3)
        latencies = []
        with connect(proxy.port) as sock:
            for _ in range(7):
                start = time.monotonic()
                sock.sendall(b"get nothere\r\n")
                assert read_until(sock, b"END\r\n") == b"END\r\n"
                latencies.append(time.monotonic() - start)
        growth = rss_kib(proxy.proc.pid) - before
    finally:
        hog.close()
    assert sorted(latencies)[3] < 0.1, latencies
    assert growth < 64 * 1024, f"RSS grew by {growth} KiB"
    assert ask(proxy.port, b"get big\r\n", b"END\r\n").endswith(big + b"\r\nEND\r\n")


def test_unix_listen_socket_with_permissions_and_two_pools(
        tmp_path: Path, backends: tuple[list[ServerProcess], list[ServerProcess]]) -> None:
    """Two pools, one per backend: a TCP one and one on a unix socket chmod-ed 0600; each
    pool's keys land on its own backend; SIGTERM removes the socket file and exits 0."""
    path = tmp_path / "proxy.sock"
    a, b = backends[0][0], backends[0][1]

    def conf(port: int) -> str:
        return (pool_toml("tcp", f"{HOST}:{port}", [f"{HOST}:{a.port}:1"])
                + pool_toml("unix", f"{path} 0600", [f"{HOST}:{b.port}:1"]))

    proc = start_proxy(conf, tmp_path)
    try:
        assert stat.S_ISSOCK(path.stat().st_mode)
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert ask(proc.port, b"set via_tcp 0 0 1\r\nt\r\n") == b"STORED\r\n"
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(IO_TIMEOUT)
            sock.connect(str(path))
            sock.sendall(b"set via_unix 0 0 1\r\nu\r\nget via_unix via_tcp\r\n")
            assert read_until(sock, b"END\r\n") == b"STORED\r\nVALUE via_unix 0 1\r\nu\r\nEND\r\n"
        assert ask(a.port, b"get via_tcp via_unix\r\n", b"END\r\n") == b"VALUE via_tcp 0 1\r\nt\r\nEND\r\n"
        assert ask(b.port, b"get via_tcp via_unix\r\n", b"END\r\n") == b"VALUE via_unix 0 1\r\nu\r\nEND\r\n"
    finally:
        code = proc.stop()
        out = proc.output()
        proc.close()
    assert code == 0, out
    assert not path.exists()


def _proxy_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "trio_mc", "proxy", *args], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=30)


def test_test_conf_flag(tmp_path: Path) -> None:
    good = tmp_path / "good.toml"
    good.write_text(pool_toml("alpha", f"{HOST}:22121", ["127.0.0.1:11211:1 one"], hash="md5"))
    bad = tmp_path / "bad.toml"
    bad.write_text(pool_toml("alpha", f"{HOST}:22121", ["127.0.0.1:11211:1 one"], hash="md6")
                   + pool_toml("beta", f"{HOST}:22122", [], distribution="ketama"))
    yml = tmp_path / "bad.yml"
    yml.write_text("alpha:\n  listen: 127.0.0.1:22121\n  servres:\n   - 127.0.0.1:11211:1\n")
    ok = _proxy_cli("-t", "-c", str(good))
    assert (ok.returncode, ok.stdout.strip()) == (0, f"trio-mc proxy: configuration file '{good}' syntax is ok")
    for path, words in ((bad, ["alpha", "hash", "beta", "servers"]), (yml, ["alpha", "servres"])):
        res = _proxy_cli("--test-conf", "-c", str(path))
        assert res.returncode == 1
        assert res.stderr.rstrip().endswith(f"configuration file '{path}' syntax is invalid")
        assert all(w in res.stderr for w in words), res.stderr
    missing = _proxy_cli("-c", str(tmp_path / "none.toml"))
    assert missing.returncode == 1 and "none.toml" in missing.stderr


def test_sigterm_closes_everything(tmp_path: Path, backends: tuple[list[ServerProcess], list[ServerProcess]]) -> None:
    """SIGTERM (twice) with clients connected and backend connections open: exit 0, every
    client sees EOF, the backends see their connections closed, the port is free again."""
    a = backends[0]

    def backend_conns() -> int:
        reply = ask(a[0].port, b"stats\r\n", b"END\r\n")
        return int(next(line.split()[2] for line in reply.split(b"\r\n") if line.startswith(b"STAT curr_conn")))

    idle = backend_conns()
    proc = start_proxy(lambda p: pool_toml("alpha", f"{HOST}:{p}", [f"{HOST}:{a[0].port}:1"]), tmp_path, "-T", "2")
    clients = [connect(proc.port) for _ in range(4)]
    try:
        for i, c in enumerate(clients):
            c.sendall(b"set k%d 0 0 1\r\n%d\r\n" % (i, i))
            assert read_until(c, b"\r\n") == b"STORED\r\n"
        assert backend_conns() > idle
        assert proc.proc is not None
        proc.proc.send_signal(signal.SIGTERM)
        time.sleep(0.005)
        if proc.proc.poll() is None:  # a second one while it shuts down changes nothing
            proc.proc.send_signal(signal.SIGTERM)
        code = proc.proc.wait(timeout=5)
        for c in clients:
            assert read_quiet(c, 1.0) == (b"", True)
        deadline = time.monotonic() + 3
        while backend_conns() > idle and time.monotonic() < deadline:
            time.sleep(0.02)
        assert backend_conns() == idle
        with socket.socket() as s:  # nothing listens there any more
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((HOST, proc.port))
    finally:
        for c in clients:
            c.close()
        proc.close()
    assert code == 0, proc.output()


def test_worker_threads(tmp_path: Path, backends: tuple[list[ServerProcess], list[ServerProcess]]) -> None:
    """-T 2: clients spread over two worker loops, each with its own backend connections,
    see one consistent store (a value set through one client is read by all)."""
    lines = lines_for(backends[0])
    proc = start_proxy(lambda p: pool_toml("alpha", f"{HOST}:{p}", lines), tmp_path, "-T", "2")
    errors: list[BaseException] = []

    def client(n: int) -> None:
        try:
            with connect(proc.port) as sock:
                for i in range(30):
                    keys = [b"t%d:%d" % (n, (i + j) % 30) for j in range(5)]
                    sock.sendall(b"set t%d:%d 0 0 4\r\n%04d\r\n" % (n, i, i) + b"get " + b" ".join(keys) + b"\r\n")
                    reply = read_until(sock, b"END\r\n")
                    assert reply.startswith(b"STORED\r\nVALUE t%d:%d 0 4\r\n%04d\r\n" % (n, i, i)), reply
        except BaseException as exc:  # noqa: BLE001 (reported by the main thread)
            errors.append(exc)

    try:
        threads = [threading.Thread(target=client, args=(n,)) for n in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=20)
        assert not errors, errors[0]
        everything = b"get " + b" ".join(b"t%d:%d" % (n, i) for n in range(6) for i in range(30)) + b"\r\n"
        assert ask(proc.port, everything, b"END\r\n").count(b"VALUE ") == 180
    finally:
        code = proc.stop()
        out = proc.output()
        proc.close()
    assert code == 0, out


def test_daemonize_and_busy_port(tmp_path: Path, backends: tuple[list[ServerProcess], list[ServerProcess]]) -> None:
    """-d: the command returns 0 at once, the daemon (forked twice, as nutcracker's) serves
    from ``/`` with the -p file holding its pid, and SIGTERM stops it and removes the file.
    A second proxy on the same port says why it cannot listen, in one line, and exits 1."""
    a = backends[0]
    port = free_port()
    conf = tmp_path / "pool.toml"
    conf.write_text(pool_toml("alpha", f"{HOST}:{port}", [f"{HOST}:{a[0].port}:1"]))
    pid_file, log = tmp_path / "proxy.pid", tmp_path / "proxy.log"
    base = [sys.executable, "-m", "trio_mc", "proxy", "-c", str(conf), "-p", str(pid_file), "-o", str(log)]
    started = subprocess.run([*base, "-d", "-s", str(free_port())], cwd=REPO_ROOT, timeout=30)
    assert started.returncode == 0
    wait_for_port(port)
    pid = int(pid_file.read_text())
    try:
        assert Path(f"/proc/{pid}/cwd").resolve() == Path("/")
        assert os.getsid(pid) != pid  # not a session leader: the second fork
        assert ask(port, b"set k 0 0 1\r\nv\r\n") == b"STORED\r\n"
        busy = subprocess.run([*base[:-4], "-s", str(free_port())], cwd=REPO_ROOT, timeout=30,
                              capture_output=True, text=True)
        assert busy.returncode == 1
        assert "failed to listen: [Errno 98] Address already in use" in busy.stderr
        assert "Traceback" not in busy.stderr, busy.stderr
    finally:
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 10
    while not exited(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert exited(pid)
    assert not pid_file.exists()
    assert "signal 15 (SIGTERM) received, exiting" in log.read_text()

