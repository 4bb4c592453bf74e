"""Differential placement: keys stored through real nutcracker 0.5.0 sit where trio-mc says.

Three memcached backends on 127.0.0.1 plus one on a unix socket live for the whole module.
Each case writes a nutcracker pool over some of them, starts nutcracker, sets every key of
``KEYS`` through it (one pipelined batch), then asks each backend directly which keys it holds
and compares with :meth:`Continuum.server_for`.  The backends are flushed between cases.

A server line on 127.0.0.1:11211 names its server by the host alone.  Rather than bind the
well-known port, those cases point the line at 11211 where nothing of ours listens: keys
predicted for it must reach none of our backends, the others must be exactly where predicted.
The ejection case does the same with a refused port and ``auto_eject_hosts``: after one failed
request the continuum rebuilt over the live servers must match nutcracker's.
"""

from __future__ import annotations

import math
import os
import random
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import pytest
from procs import (
    MEMCACHED,
    START_ATTEMPTS,
    ServerProcess,
    ServerStartError,
    free_port,
    require_memcached,
    start_memcached,
)

from trio_mc.proxy import distribution
from trio_mc.proxy.distribution import Continuum, server_name
from trio_mc.proxy.hashkit import HASHES

NUTCRACKER = shutil.which("nutcracker") or "/usr/sbin/nutcracker"
HOST = "127.0.0.1"
IO_TIMEOUT = 5.0  # seconds any socket read may take
DEAD = "127.0.0.1:11211"  # a server line address nothing of ours listens on


# Keys that ketama with weights 1, 29, 30 (servers server1..3) places differently when the
# points per server are computed in exact arithmetic (232 for weight 29) instead of float32
# (228): found by search, for md5 and for murmur.  Only ~0.07% of keys are such.
FLOAT32_KEYS = [b"f32:%d" % i for i in (380, 2601, 4529, 5193, 1958, 2063, 4929, 5966)]


def _keys() -> list[bytes]:
    """~300 keys: short similar ones, random ASCII, bytes >= 0x80, UTF-8, hash-tag shapes."""
    rng = random.Random(8)
    keys = [b"key:%d" % i for i in range(60)] + [b"k%d" % i for i in range(40)]
    printable = bytes(range(0x21, 0x7F))
    high = printable + bytes(range(0x80, 0x100))
    keys += [bytes(rng.choices(printable, k=rng.randrange(1, 40))) for _ in range(40)]
    for _ in range(60):  # each with at least one byte >= 0x80 (sign-extended by twemproxy)
        body = rng.choices(high, k=rng.randrange(0, 30))
        body.insert(rng.randrange(len(body) + 1), rng.randrange(0x80, 0x100))
        keys.append(bytes(body))
    words = ["ключ", "日本語", "café", "naïve", "straße", "θ", "ß", "€uro", "ü", "中文键"]
    keys += [f"{w}:{i}".encode() for w in words for i in range(3)]
    keys += [b"{user%d}:%s" % (i, part) for part in (b"profile", b"cart") for i in range(10)]
    keys += [b"{}x%d" % i for i in range(5)] + [b"{a%d}{b}" % i for i in range(5)]
    keys += [b"x{y%d" % i for i in range(5)] + [b"a}b{c%d}" % i for i in range(5)]
    keys += [b"$x%d$y" % i for i in range(5)] + [b"{\xc3\xa9%d}tail" % i for i in range(5)]
    keys += [b"L" * 250, b"\xff" * 250, b"\x80", b"\x7f\x80"]
    keys += FLOAT32_KEYS
    keys = list(dict.fromkeys(keys))  # no duplicates, order kept
    assert all(0 < len(k) <= 250 and not any(c <= 0x20 for c in k) for k in keys)
    return keys


KEYS = _keys()


def _read_until(sock: socket.socket, done: Callable[[bytes], bool]) -> bytes:
    """Read until ``done(data)``; bounded by IO_TIMEOUT overall."""
    data = b""
    deadline = time.monotonic() + IO_TIMEOUT
    while not done(data):
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"timed out; read so far: {data[-200:]!r}"
        sock.settimeout(remaining)
        chunk = sock.recv(65536)
        assert chunk, f"connection closed; read so far: {data[-200:]!r}"
        data += chunk
    return data


@dataclass
class Backend:
    """A memcached the cases share; ``address`` is how a server line names it."""

    address: str
    family: int
    sockaddr: str | tuple[str, int]

    def connect(self) -> socket.socket:
        sock = socket.socket(self.family, socket.SOCK_STREAM)
        sock.settimeout(IO_TIMEOUT)
        sock.connect(self.sockaddr)
        return sock

    def holding(self, keys: Sequence[bytes]) -> set[bytes]:
        """The keys among ``keys`` this backend holds (multi-gets of 50 keys)."""
        found: set[bytes] = set()
        with self.connect() as sock:
            for i in range(0, len(keys), 50):
                sock.sendall(b"get " + b" ".join(keys[i:i + 50]) + b"\r\n")
                reply = _read_until(sock, lambda d: d.endswith(b"END\r\n"))
                found.update(line.split(b" ")[1] for line in reply.split(b"\r\n")
                             if line.startswith(b"VALUE "))
        return found

    def flush(self) -> None:
        with self.connect() as sock:
            sock.sendall(b"flush_all\r\n")
            assert _read_until(sock, lambda d: d.endswith(b"\r\n")) == b"OK\r\n"


@pytest.fixture(scope="module")
def backends(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Backend]]:
    """Three TCP memcached backends and one on a unix socket (its path is the 4th address)."""
    tcp: list[ServerProcess] = []
    path = tmp_path_factory.mktemp("placement") / "mc.sock"
    as_root = ["-u", "root"] if os.geteuid() == 0 else []
    require_memcached()
    unix = subprocess.Popen([MEMCACHED, "-U", "0", "-s", str(path), *as_root],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        for _ in range(3):
            tcp.append(start_memcached())
        found = [Backend(f"{HOST}:{mc.port}", socket.AF_INET, (HOST, mc.port)) for mc in tcp]
        found.append(Backend(str(path), socket.AF_UNIX, str(path)))
        deadline = time.monotonic() + IO_TIMEOUT
        while True:  # the unix socket memcached is ready once it accepts
            try:
                found[3].connect().close()
                break
            except OSError:
                assert unix.poll() is None and time.monotonic() < deadline, "memcached -s failed"
                time.sleep(0.02)
        yield found
    finally:
        for mc in tcp:
            mc.terminate()
        unix.terminate()
        for mc in tcp:
            mc.close()
        try:
            unix.wait(timeout=5)
        except subprocess.TimeoutExpired:
            unix.kill()
            unix.wait(timeout=5)


@dataclass
class Pool:
    """A case: server lines (``{0}``..``{3}`` stand for the backends' addresses) and keys."""

    servers: list[str]
    hash: str | None = None  # None: leave the key out, nutcracker's default applies
    distribution: str | None = None
    hash_tag: str | None = None
    extra: dict[str, str] = field(default_factory=dict)  # more pool keys, as YAML text

    def lines(self, backends: Sequence[Backend]) -> list[str]:
        """The server lines; ``{port0}``.. stand for the TCP backends' bare port numbers."""
        ports = {f"port{i}": b.address.rpartition(":")[2] for i, b in enumerate(backends)}
        return [s.format(*(b.address for b in backends), **ports) for s in self.servers]

    def yaml(self, listen_port: int, lines: Sequence[str]) -> str:
        out = ["pool:", f"  listen: {HOST}:{listen_port}", "  timeout: 2000"]
        if self.hash is not None:
            out.append(f"  hash: {self.hash}")
        if self.distribution is not None:
            out.append(f"  distribution: {self.distribution}")
        if self.hash_tag is not None:
            out.append(f'  hash_tag: "{self.hash_tag}"')
        out += [f"  {key}: {value}" for key, value in self.extra.items()]
        out.append("  servers:")
        out += [f"   - {line}" for line in lines]
        return "\n".join(out) + "\n"


@dataclass(frozen=True)
class LineServer:
    """A server line reduced to what the distributions need."""

    name: str
    weight: int


def parse_line(line: str) -> LineServer:
    """``host:port:weight [name]`` or ``/path:weight [name]`` to twemproxy's name and weight."""
    address, _, name = line.partition(" ")
    if address.startswith("/"):
        host, weight = address.rsplit(":", 1)
        port = None
    else:
        host, port, weight = address.rsplit(":", 2)
    return LineServer(server_name(host, port, name or None), int(weight))


def backend_of(line: str, backends: Sequence[Backend]) -> Backend | None:
    """The backend a server line connects to (ports compared by value), if one of ours."""
    address = line.partition(" ")[0].rsplit(":", 1)[0]
    if not address.startswith("/"):
        host, port = address.rsplit(":", 1)
        address = f"{host}:{int(port)}"
    return next((b for b in backends if b.address == address), None)


@contextmanager
def nutcracker(pool: Pool, lines: Sequence[str], tmp: Path) -> Iterator[socket.socket]:
    """Run nutcracker on ``pool``; yield a client connection to it.  Stopped on exit.

    Its two ports were free a moment ago; if one was taken since, nutcracker exits at once
    and is started again on fresh ones (at most START_ATTEMPTS times).
    """
    for attempt in range(1, START_ATTEMPTS + 1):
        listen = free_port()
        conf = tmp / "pool.yml"
        conf.write_text(pool.yaml(listen, lines))
        cmd = [NUTCRACKER, "-c", str(conf), "-s", str(free_port()), "-a", HOST,
               "-p", str(tmp / "nutcracker.pid"), "-o", str(tmp / "nutcracker.log")]
        nut = ServerProcess(cmd, listen, name="nutcracker")
        try:
            nut.start()
        except ServerStartError as e:
            nut.close()
            if e.exited and attempt < START_ATTEMPTS:
                continue
            raise
        try:
            with socket.create_connection((HOST, nut.port), timeout=IO_TIMEOUT) as sock:
                yield sock
            return
        finally:
            nut.close()


def set_keys(sock: socket.socket, keys: Sequence[bytes]) -> list[bytes]:
    """Set every key once in one pipelined batch; return the reply lines, in order."""
    sock.sendall(b"".join(b"set %s 0 0 1\r\n1\r\n" % k for k in keys))
    reply = _read_until(sock, lambda d: d.count(b"\r\n") >= len(keys))
    replies = reply.split(b"\r\n")[:-1]
    assert len(replies) == len(keys), replies[-3:]
    return replies


def continuum_of(pool: Pool, lines: Sequence[str]) -> Continuum:
    """trio-mc's map for the pool, defaults as nutcracker's."""
    return Continuum([parse_line(line) for line in lines], hash=pool.hash or "fnv1a_64",
                     distribution=pool.distribution or "ketama",
                     hash_tag=pool.hash_tag.encode() if pool.hash_tag else None)


def check_placement(continuum: Continuum, lines: Sequence[str], replies: Sequence[bytes],
                    backends: Sequence[Backend]) -> None:
    """Every key is STORED on exactly the backend predicted, or on none if that one is dead."""
    targets = [backend_of(line, backends) for line in lines]
    where = [b.holding(KEYS) for b in backends]
    mismatches = []
    for key, reply in zip(KEYS, replies):
        holders = [i for i, held in enumerate(where) if key in held]
        target = targets[continuum.server_for(key)]
        expected = [backends.index(target)] if target is not None else []
        if target is not None and reply != b"STORED" or holders != expected:
            mismatches.append((key, reply, holders, expected))
    assert not mismatches, f"{len(mismatches)} of {len(KEYS)} keys misplaced: {mismatches[:5]}"


def run_case(pool: Pool, backends: Sequence[Backend], tmp: Path) -> Continuum:
    """Set KEYS through nutcracker, check each lands where :class:`Continuum` predicts."""
    for b in backends:
        b.flush()
    lines = pool.lines(backends)
    with nutcracker(pool, lines, tmp) as sock:
        replies = set_keys(sock, KEYS)
    continuum = continuum_of(pool, lines)
    check_placement(continuum, lines, replies, backends)
    return continuum


TCP3 = ["{0}:1", "{1}:1", "{2}:1"]
NAMED3 = ["{0}:1 server1", "{1}:1 server2", "{2}:1 server3"]


@pytest.mark.parametrize("hash", sorted(HASHES))
def test_ketama_every_hash(hash: str, backends: list[Backend], tmp_path: Path) -> None:
    """host:port names (ports other than 11211), equal weights."""
    run_case(Pool(TCP3, hash=hash, distribution="ketama"), backends, tmp_path)


@pytest.mark.parametrize("hash", sorted(HASHES))
def test_modula_every_hash_with_weights(hash: str, backends: list[Backend],
                                        tmp_path: Path) -> None:
    """Weights 1, 2, 3 give each server that many slots."""
    pool = Pool(["{0}:1 a", "{1}:2 b", "{2}:3 c"], hash=hash, distribution="modula")
    run_case(pool, backends, tmp_path)


def test_float32_keys_tell_float32_from_exact(monkeypatch: pytest.MonkeyPatch) -> None:
    """The w1-29-30 cases below would catch exact arithmetic: FLOAT32_KEYS would move."""
    lines = ["h:1:1 server1", "h:1:29 server2", "h:1:30 server3"]
    pools = [Pool(lines, hash=h) for h in ("md5", "murmur")]
    as_float32 = [[continuum_of(p, lines).server_for(k) for k in FLOAT32_KEYS] for p in pools]
    monkeypatch.setattr(distribution, "ketama_points",
                        lambda w, total, n: math.floor(Fraction(w, total) * 40 * n) * 4)
    exact = [[continuum_of(p, lines).server_for(k) for k in FLOAT32_KEYS] for p in pools]
    assert all(a != b for a, b in zip(as_float32[0][:4] + as_float32[1][4:],
                                      exact[0][:4] + exact[1][4:]))


@pytest.mark.parametrize("servers", [
    pytest.param(NAMED3, id="named"),
    pytest.param(["{0}:1 server1", "{1}:29 server2", "{2}:30 server3"], id="named-w1-29-30"),
    pytest.param(["{0}:1 server1", "{1}:2 server2", "{2}:3 server3"], id="named-w123"),
    pytest.param(["{0}:5", "{1}:1", "{2}:1"], id="hostport-w511"),
    pytest.param(["{2}:1 server3", "{0}:1 server1", "{1}:1 server2"], id="named-reordered"),
    pytest.param(["{0}:1", "{1}:1000", "{2}:1000"], id="weight-with-no-points"),
    pytest.param(["{0}:1", "{1}:1", "{2}:1", "{3}:1"], id="unix-socket-unnamed"),
    pytest.param(["{0}:1", "{1}:1", "{3}:2 sock"], id="unix-socket-named"),
    pytest.param(["{0}:1", "{1}:1", DEAD + ":1"], id="port-11211"),
    pytest.param(["{0}:1 one", DEAD + ":1 two", "{1}:1 three"], id="port-11211-named"),
    pytest.param(["127.0.0.1:0{port0}:1", "{1}:1", "127.0.0.1:011211:1"], id="port-leading-zero"),
    pytest.param(["{0}:1 " + "n" * 300, "{1}:1 b", "{2}:1 c"], id="name-over-272-bytes"),
    pytest.param(["{0}:1 sérveur", "{1}:1 σ", "{2}:2 服务器"], id="utf8-names"),
])
@pytest.mark.parametrize("hash", ["md5", "murmur"])
def test_ketama_names_and_weights(hash: str, servers: list[str], backends: list[Backend],
                                  tmp_path: Path) -> None:
    run_case(Pool(servers, hash=hash, distribution="ketama"), backends, tmp_path)


def test_a_light_server_can_get_no_point() -> None:
    """Weight 1 beside 1000 and 1000: 1/2001 of 160*3 points rounds down to none."""
    lines = ["h:1:1", "h:2:1000", "h:3:1000"]
    continuum = continuum_of(Pool(lines, hash="md5"), lines)
    assert 0 not in {continuum.server_for(k) for k in KEYS}


def test_defaults_are_fnv1a_64_ketama(backends: list[Backend], tmp_path: Path) -> None:
    run_case(Pool(TCP3), backends, tmp_path)


@pytest.mark.parametrize("distribution", ["ketama", "modula"])
@pytest.mark.parametrize("tag", ["{}", "$$"])
def test_hash_tag(distribution: str, tag: str, backends: list[Backend], tmp_path: Path) -> None:
    pool = Pool(NAMED3, hash="fnv1a_64", distribution=distribution, hash_tag=tag)
    continuum = run_case(pool, backends, tmp_path)
    # The tag really decides: keys sharing a tag share a server.
    shared = tag[0] + "t" + tag[1]
    assert len({continuum.server_for(f"{shared}:{i}".encode()) for i in range(20)}) == 1


def test_single_server_pool(backends: list[Backend], tmp_path: Path) -> None:
    run_case(Pool(["{1}:1"], hash="md5"), backends, tmp_path)


def test_random_stores_each_key_on_one_server(backends: list[Backend], tmp_path: Path) -> None:
    """random picks any server per request: each key is stored exactly once, spread over all."""
    for b in backends:
        b.flush()
    pool = Pool(TCP3, distribution="random")
    lines = pool.lines(backends)
    with nutcracker(pool, lines, tmp_path) as sock:
        replies = set_keys(sock, KEYS)
    assert replies == [b"STORED"] * len(KEYS)
    held = [b.holding(KEYS) for b in backends[:3]]
    assert sorted(k for h in held for k in h) == sorted(KEYS)
    assert all(len(h) > len(KEYS) // 6 for h in held), [len(h) for h in held]
    assert not backends[3].holding(KEYS)


def test_ejected_server_leaves_the_ring(backends: list[Backend], tmp_path: Path) -> None:
    """After one failure (limit 1) a dead server is ejected and ketama is rebuilt without it."""
    dead = f"{HOST}:{free_port()}"  # nothing listens there: connections are refused
    pool = Pool(["{0}:1", "{1}:2", dead + ":1", "{2}:1"], hash="md5",
                extra={"auto_eject_hosts": "true", "server_failure_limit": "1",
                       "server_retry_timeout": "600000"})
    lines = pool.lines(backends)
    continuum = continuum_of(pool, lines)
    doomed = next(k for k in KEYS if continuum.server_for(k) == 2)
    with nutcracker(pool, lines, tmp_path) as sock:
        assert set_keys(sock, [doomed])[0].startswith(b"SERVER_ERROR")
        for b in backends:
            b.flush()
        replies = set_keys(sock, KEYS)
    continuum.rebuild([0, 1, 3])
    check_placement(continuum, lines, replies, backends)
    assert 2 not in {continuum.server_for(k) for k in KEYS}
