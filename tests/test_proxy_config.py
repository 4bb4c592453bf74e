"""Proxy config (trio_mc.proxy.config): keys, defaults, refusals, TOML = YAML, and nutcracker.

The differential tests run the real ``nutcracker -t -c FILE`` (0.5.0) on every YAML config of
tests/proxy_conf/ and on generated ones, and require trio-mc to accept exactly the configs
nutcracker accepts, except the deviations listed in DEVIATIONS with their reasons.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from procs import ServerProcess, free_port

from trio_mc.proxy.config import (
    DISTRIBUTIONS,
    HASHES,
    MAX_CONFIG_BYTES,
    ConfigError,
    ListenConfig,
    PoolConfig,
    ServerConfig,
    check,
    load,
    parse_listen,
    parse_server,
)

CORPUS = Path(__file__).parent / "proxy_conf"
NUTCRACKER = shutil.which("nutcracker") or "/usr/sbin/nutcracker"
NUTCRACKER_TIMEOUT = 10.0  # seconds for one `nutcracker -t`; it takes a few ms

#: Corpus files where trio-mc's verdict is deliberately the opposite of nutcracker 0.5.0's.
DEVIATIONS = {
    "dev-reuseport.yml": "reuseport is twemproxy master's key (SO_REUSEPORT); 0.5.0 refuses it",
    "dev-server-probe.yml": "server_probe is trio-mc's own key (probe an ejected server)",
    "dev-redis-pool.yml": "trio-mc proxies memcached only: redis: true is refused",
    "dev-number-wraps.yml": "nutcracker's int overflows (2**32+1 becomes 1); trio-mc refuses it",
    "dev-unix-perm-garbage.yml": "nutcracker's strtol drops non-octal digits (0999 is 0, no "
    "chmod); trio-mc refuses a permission that is not octal",
    "dev-listen-unresolvable.yml": "nutcracker resolves listen hostnames while reading the "
    "config; trio-mc resolves when it binds (reading a config does no network I/O)",
}


def write(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.write_text(text, encoding="utf-8")
    return path


@contextmanager
def config_file(name: str, text: str) -> Iterator[Path]:
    """A config file in a fresh directory (for hypothesis, where tmp_path cannot be used)."""
    with tempfile.TemporaryDirectory() as directory:
        yield write(Path(directory), name, text)


def nutcracker_accepts(path: Path) -> bool:
    result = subprocess.run(
        [NUTCRACKER, "-t", "-c", str(path)],
        capture_output=True,
        text=True,
        timeout=NUTCRACKER_TIMEOUT,
        check=False,
    )
    verdict = {0: "syntax is ok", 1: "syntax is invalid"}
    assert result.returncode in verdict, result
    assert verdict[result.returncode] in result.stdout + result.stderr, result
    return result.returncode == 0


def one_pool(path: Path) -> PoolConfig:
    pools = load(path)
    assert len(pools) == 1
    return pools[0]


MINIMAL_TOML = """\
[alpha]
listen = "127.0.0.1:22121"
servers = ["127.0.0.1:11211:1"]
"""

# --------------------------------------------------------------------------- keys, defaults


#: twemproxy 0.5.0's defaults (src/nc_conf.h), plus trio-mc's two keys (both off).
TWEMPROXY_DEFAULTS = {
    "hash": "fnv1a_64", "hash_tag": None, "distribution": "ketama",
    "timeout": None,  # twemproxy's -1: wait forever
    "backlog": 512, "client_connections": 0, "redis": False, "redis_auth": None, "redis_db": 0,
    "tcpkeepalive": False, "reuseport": False, "preconnect": False, "server_connections": 1,
    "auto_eject_hosts": False, "server_retry_timeout": 30000, "server_failure_limit": 2,
    "server_probe": False,
}  # fmt: skip


def test_defaults_are_twemproxys(tmp_path: Path) -> None:
    pool = one_pool(write(tmp_path, "conf.toml", MINIMAL_TOML))
    assert (pool.name, pool.listen) == (
        "alpha",
        ListenConfig("127.0.0.1", 22121, None, "127.0.0.1:22121"),
    )
    assert pool.servers == (ServerConfig("127.0.0.1", 11211, 1, "127.0.0.1"),)
    fields = {field.name for field in dataclasses.fields(PoolConfig)}
    assert fields - {"name", "listen", "servers"} == TWEMPROXY_DEFAULTS.keys()
    assert {key: getattr(pool, key) for key in TWEMPROXY_DEFAULTS} == TWEMPROXY_DEFAULTS
    assert PoolConfig(pool.name, pool.listen, pool.servers) == pool  # the dataclass defaults


EVERY_KEY_TOML = """\
[alpha]
listen = "/tmp/trio-mc-alpha.sock 0660"
hash = "murmur"
hash_tag = "$$"
distribution = "modula"
timeout = 400
backlog = 1024
client_connections = 10
redis = false
redis_db = 3
tcpkeepalive = true
reuseport = true
preconnect = true
server_connections = 4
auto_eject_hosts = true
server_retry_timeout = 2000
server_failure_limit = 3
server_probe = true
servers = ["127.0.0.1:11211:1 one", "localhost:11212:2", "/tmp/trio-mc-mc.sock:3"]
"""

EVERY_KEY_YAML = """\
alpha:
  listen: /tmp/trio-mc-alpha.sock 0660
  hash: murmur
  hash_tag: $$
  distribution: modula
  timeout: 400
  backlog: 1024
  client_connections: 10
  redis: false
  redis_db: 3
  tcpkeepalive: true
  reuseport: true
  preconnect: true
  server_connections: 4
  auto_eject_hosts: true
  server_retry_timeout: 2000
  server_failure_limit: 3
  server_probe: true
  servers:
    - 127.0.0.1:11211:1 one
    - localhost:11212:2
    - /tmp/trio-mc-mc.sock:3
"""

EVERY_KEY = PoolConfig(
    name="alpha",
    listen=ListenConfig("/tmp/trio-mc-alpha.sock", 0, 0o660, "/tmp/trio-mc-alpha.sock 0660"),
    servers=(
        ServerConfig("127.0.0.1", 11211, 1, "one"),
        ServerConfig("localhost", 11212, 2, "localhost:11212"),
        ServerConfig("/tmp/trio-mc-mc.sock", 0, 3, "/tmp/trio-mc-mc.sock:"),
    ),
    hash="murmur",
    hash_tag=b"$$",
    distribution="modula",
    timeout=400,
    backlog=1024,
    client_connections=10,
    redis_db=3,
    tcpkeepalive=True,
    reuseport=True,
    preconnect=True,
    server_connections=4,
    auto_eject_hosts=True,
    server_retry_timeout=2000,
    server_failure_limit=3,
    server_probe=True,
)


@pytest.mark.parametrize(
    ("name", "text"), [("c.toml", EVERY_KEY_TOML), ("c.yml", EVERY_KEY_YAML)], ids=["toml", "yaml"]
)
def test_every_key(tmp_path: Path, name: str, text: str) -> None:
    assert load(write(tmp_path, name, text)) == [EVERY_KEY]
    keys = {line.split("=")[0].strip() for line in EVERY_KEY_TOML.splitlines()[1:]}
    # redis_auth is refused in a memcached pool (test_toml_refusals): every other field is here
    assert keys == {field.name for field in dataclasses.fields(PoolConfig)} - {"name", "redis_auth"}
    for field in dataclasses.fields(PoolConfig):
        if field.name not in ("name", "listen", "servers", "redis", "redis_auth"):
            assert getattr(EVERY_KEY, field.name) != field.default, field.name


def test_issue_example_toml(tmp_path: Path) -> None:
    text = """\
[alpha]
listen = "127.0.0.1:22121"
hash = "fnv1a_64"
hash_tag = "{}"
distribution = "ketama"
timeout = 400
auto_eject_hosts = true
server_retry_timeout = 2000
server_failure_limit = 2
server_connections = 1
preconnect = false
servers = ["127.0.0.1:11211:1 server1", "127.0.0.1:11212:1 server2"]
"""
    pool = one_pool(write(tmp_path, "conf.toml", text))
    assert pool.hash_tag == b"{}" and pool.timeout == 400 and pool.auto_eject_hosts
    assert [server.name for server in pool.servers] == ["server1", "server2"]
    assert [server.port for server in pool.servers] == [11211, 11212]


def test_every_hash_and_distribution(tmp_path: Path) -> None:
    assert len(HASHES) == 12 and DISTRIBUTIONS == ("ketama", "modula", "random")
    for hash_name in HASHES:
        for distribution in DISTRIBUTIONS:
            text = MINIMAL_TOML + f'hash = "{hash_name}"\ndistribution = "{distribution}"\n'
            pool = one_pool(write(tmp_path, "conf.toml", text))
            assert (pool.hash, pool.distribution) == (hash_name, distribution)


def test_timeout_zero_waits_forever_as_twemproxy(tmp_path: Path) -> None:
    # twemproxy arms no timer for timeout <= 0: 0 means the same as no timeout at all.
    assert one_pool(write(tmp_path, "c.toml", MINIMAL_TOML + "timeout = 0\n")).timeout is None
    assert one_pool(write(tmp_path, "c.toml", MINIMAL_TOML + "timeout = 1\n")).timeout == 1


def test_several_pools_keep_file_order(tmp_path: Path) -> None:
    text = MINIMAL_TOML.replace("alpha", "zeta") + MINIMAL_TOML.replace("22121", "22122")
    assert [pool.name for pool in load(write(tmp_path, "c.toml", text))] == ["zeta", "alpha"]


SERVER_ORDER_YAML = """\
alpha:
  listen: 127.0.0.1:{listen}
  distribution: modula
  servers:
    - 127.0.0.1:21211:1
    - 127.0.0.1:21212:1 aa
    - /tmp/trio-mc-order.sock:1
    - 127.0.0.1:21213:1 b
    - 127.0.0.1:11211:1
    - 127.0.0.1:21214:1 ab
"""
SERVER_ORDER = ["b", "aa", "ab", "127.0.0.1", "127.0.0.1:21211", "/tmp/trio-mc-order.sock:"]


def test_server_order(tmp_path: Path) -> None:
    # nutcracker sorts a pool's servers by name (shorter first, then bytewise), and modula's
    # indexes and the stats follow that order, not the file's.
    pool = one_pool(write(tmp_path, "c.yml", SERVER_ORDER_YAML.format(listen=22121)))
    assert [server.name for server in pool.servers] == SERVER_ORDER


def test_server_order_is_nutcrackers(tmp_path: Path) -> None:
    """The order of nutcracker's own stats JSON (one key per server, in its server order)."""
    path = write(tmp_path, "c.yml", SERVER_ORDER_YAML.format(listen=free_port()))
    stats_port = free_port()
    command = [NUTCRACKER, "-c", path, "-s", stats_port, "-a", "127.0.0.1", "-i", "100"]
    with ServerProcess([str(part) for part in command], stats_port) as nutcracker:
        with socket.create_connection(("127.0.0.1", stats_port), timeout=5) as sock:
            data = b""
            while chunk := sock.recv(65536):  # nutcracker sends one JSON object and closes
                data += chunk
        pool_stats = json.loads(data)["alpha"]
        assert nutcracker.proc is not None and nutcracker.proc.poll() is None
    names = [key for key, value in pool_stats.items() if isinstance(value, dict)]
    assert names == [server.name for server in one_pool(path).servers] == SERVER_ORDER


# --------------------------------------------------------------------------- server lines


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("127.0.0.1:11211:1", ServerConfig("127.0.0.1", 11211, 1, "127.0.0.1")),
        ("127.0.0.1:21211:1", ServerConfig("127.0.0.1", 21211, 1, "127.0.0.1:21211")),
        ("127.0.0.1:11211:5 server1", ServerConfig("127.0.0.1", 11211, 5, "server1")),
        ("mc.example:11212:2", ServerConfig("mc.example", 11212, 2, "mc.example:11212")),
        ("::1:11212:1", ServerConfig("::1", 11212, 1, "::1:11212")),
        ("/tmp/mc.sock:3", ServerConfig("/tmp/mc.sock", 0, 3, "/tmp/mc.sock:")),
        ("/tmp/mc.sock:3 cache", ServerConfig("/tmp/mc.sock", 0, 3, "cache")),
        # the port as written, as nutcracker: a leading zero stays in the name ...
        ("127.0.0.1:021211:1", ServerConfig("127.0.0.1", 21211, 1, "127.0.0.1:021211")),
        # ... but the 11211 rule looks at the number
        ("127.0.0.1:011211:1", ServerConfig("127.0.0.1", 11211, 1, "127.0.0.1")),
        ("127.0.0.1:11211:01", ServerConfig("127.0.0.1", 11211, 1, "127.0.0.1")),
        ("127.0.0.1:11211:1 ", ServerConfig("127.0.0.1", 11211, 1, "")),  # empty name
        ("my host:11211:1 n", ServerConfig("my host", 11211, 1, "n")),
    ],
)
def test_server_lines(line: str, expected: ServerConfig) -> None:
    assert parse_server(line) == expected
    assert parse_server(expected.spec) == expected


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("127.0.0.1:11211", "expected host:port:weight [name], got '127.0.0.1:11211'"),
        ("127.0.0.1", "expected host:port:weight [name], got '127.0.0.1'"),
        ("", "expected host:port:weight [name], got ''"),
        ("127.0.0.1:11211:0", "weight 0 in '127.0.0.1:11211:0' (must be at least 1)"),
        ("127.0.0.1:11211:x", "weight must be a non-negative integer, got 'x'"),
        ("127.0.0.1:11211:-1", "weight must be a non-negative integer, got '-1'"),
        ("127.0.0.1:11211:1 a b", "weight must be a non-negative integer, got '1 a'"),
        ("127.0.0.1:11211:2147483648", "weight 2147483648 is larger than 2147483647"),
        ("127.0.0.1:0:1", "bad port '0' (1..65535)"),
        ("127.0.0.1:65536:1", "bad port '65536' (1..65535)"),
        ("127.0.0.1::1", "port must be a non-negative integer, got ''"),
        ("/tmp/a:b.sock:1", "expected /path:weight [name], got '/tmp/a:b.sock:1'"),
        ("/tmp/a.sock", "expected /path:weight [name], got '/tmp/a.sock'"),
    ],
)
def test_server_line_refusals(line: str, message: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_server(line)
    assert str(info.value) == message


names = st.text(st.characters(codec="utf-8", exclude_characters=" \x00"), max_size=12)
hosts = st.one_of(
    st.sampled_from(["127.0.0.1", "::1", "localhost", "mc-1.example"]),
    st.text(st.characters(codec="utf-8", exclude_characters=" :/\x00"), max_size=12),
)


@settings(max_examples=300, deadline=None)
@given(hosts, st.integers(1, 65535), st.integers(1, 2**31 - 1), st.none() | names)
def test_server_line_round_trip(host: str, port: int, weight: int, name: str | None) -> None:
    line = f"{host}:{port}:{weight}" + ("" if name is None else f" {name}")
    server = parse_server(line)
    default = host if port == 11211 else f"{host}:{port}"
    assert server == ServerConfig(host, port, weight, default if name is None else name)
    assert parse_server(server.spec) == server


@settings(max_examples=200, deadline=None)
@given(
    st.text(st.characters(codec="utf-8", exclude_characters="\x00 :"), min_size=1).map(
        lambda tail: "/" + tail
    ),
    st.integers(1, 2**31 - 1),
    st.none() | names,
)
def test_unix_server_line_round_trip(path: str, weight: int, name: str | None) -> None:
    server = parse_server(f"{path}:{weight}" + ("" if name is None else f" {name}"))
    assert server == ServerConfig(path, 0, weight, f"{path}:" if name is None else name)
    assert server.is_unix and parse_server(server.spec) == server


@settings(max_examples=500, deadline=None)
@given(st.text(st.sampled_from("0123456789:/ ab.\t-"), max_size=24))
def test_server_line_any_text_parses_or_says_why(line: str) -> None:
    try:
        server = parse_server(line)
    except ValueError as exc:
        assert str(exc)
    else:
        assert server.weight >= 1 and parse_server(server.spec) == server


# --------------------------------------------------------------------------- listen


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:22121", ListenConfig("127.0.0.1", 22121, None, "127.0.0.1:22121")),
        ("0.0.0.0:1", ListenConfig("0.0.0.0", 1, None, "0.0.0.0:1")),
        ("::1:22121", ListenConfig("::1", 22121, None, "::1:22121")),
        ("localhost:65535", ListenConfig("localhost", 65535, None, "localhost:65535")),
        ("/tmp/p.sock", ListenConfig("/tmp/p.sock", 0, None, "/tmp/p.sock")),
        ("/tmp/p.sock 0666", ListenConfig("/tmp/p.sock", 0, 0o666, "/tmp/p.sock 0666")),
        ("/tmp/p.sock 777", ListenConfig("/tmp/p.sock", 0, 0o777, "/tmp/p.sock 777")),
        ("/tmp/p.sock 0", ListenConfig("/tmp/p.sock", 0, None, "/tmp/p.sock 0")),  # no chmod
        ("/tmp/my dir/p 0600", ListenConfig("/tmp/my dir/p", 0, 0o600, "/tmp/my dir/p 0600")),
    ],
)
def test_listen(text: str, expected: ListenConfig) -> None:
    assert parse_listen(text) == expected
    assert expected.is_unix == text.startswith("/")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("127.0.0.1", "expected host:port or /unix/path, got '127.0.0.1'"),
        (":22121", "no host in ':22121'"),
        ("127.0.0.1:0", "bad port '0' (1..65535)"),
        ("127.0.0.1:65536", "bad port '65536' (1..65535)"),
        ("127.0.0.1:+80", "port must be a non-negative integer, got '+80'"),
        ("/tmp/p.sock 1000", "bad unix socket permission '1000' (octal, at most 0777)"),
        ("/tmp/p.sock 0999", "bad unix socket permission '0999' (octal, at most 0777)"),
        ("/tmp/" + "a" * 103, "unix socket path is longer than 107 bytes"),
    ],
)
def test_listen_refusals(text: str, message: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_listen(text)
    assert str(info.value) == message


def test_listen_unix_path_limit() -> None:
    assert parse_listen("/" + "a" * 106).host == "/" + "a" * 106  # 107 bytes + NUL fits
    with pytest.raises(ValueError):
        parse_listen("/" + "é" * 54)  # 109 bytes: the limit counts bytes


@settings(max_examples=200, deadline=None)
@given(hosts.filter(bool), st.integers(1, 65535))
def test_listen_round_trip(host: str, port: int) -> None:
    assert parse_listen(f"{host}:{port}") == ListenConfig(host, port, None, f"{host}:{port}")


# --------------------------------------------------------------------------- refusals


#: (a line added to MINIMAL_TOML, the one problem after "FILE: pool 'alpha': ")
TOML_REFUSALS = [
    ('hash = "foo"', f"key 'hash': unknown hash 'foo' (one of: {', '.join(HASHES)})"),
    ('distribution = "x"', "key 'distribution': unknown distribution 'x' (one of: ketama, modula, random)"),
    ('hash_tag = "{"', "key 'hash_tag': must be two characters (bytes), like '{}', got 1 bytes"),
    ('timeout = "400"', "key 'timeout': expected a non-negative integer, got a string"),
    ("timeout = -1", "key 'timeout': -1 is not in 0..2147483647"),
    ("backlog = 2147483648", "key 'backlog': 2147483648 is not in 0..2147483647"),
    ("backlog = 1.5", "key 'backlog': expected a non-negative integer, got a float"),
    ("backlog = true", "key 'backlog': expected a non-negative integer, got a boolean"),
    ('preconnect = "true"', "key 'preconnect': expected true or false, got a string"),
    ("preconnect = 1", "key 'preconnect': expected true or false, got an integer"),
    ("server_connections = 0", "key 'server_connections': must be at least 1"),
    ("redis = true", "key 'redis': redis pools are not supported by trio-mc proxy"),
    ('redis_auth = "pw"', "key 'redis_auth': only valid in a redis pool"),
    ("abort_on_timeout = true", "key 'abort_on_timeout': unknown key"),
    ('hash = ["md5"]', "key 'hash': expected a string, got an array"),
    ("[alpha.nested]", "key 'nested': unknown key"),
]  # fmt: skip


@pytest.mark.parametrize(("line", "message"), TOML_REFUSALS)
def test_toml_refusals(tmp_path: Path, line: str, message: str) -> None:
    path = write(tmp_path, "c.toml", MINIMAL_TOML + line + "\n")
    assert check(path) == [f"{path}: pool 'alpha': {message}"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[alpha]\nservers = ["127.0.0.1:11211:1"]\n', "pool 'alpha': missing key 'listen'"),
        ('[alpha]\nlisten = "127.0.0.1:1"\n', "pool 'alpha': missing key 'servers'"),
        (
            '[alpha]\nlisten = "127.0.0.1:1"\nservers = []\n',
            ("pool 'alpha': key 'servers': no servers"),
        ),
        (
            '[alpha]\nlisten = "127.0.0.1:1"\nservers = "127.0.0.1:11211:1"\n',
            ("pool 'alpha': key 'servers': expected an array of server lines, got a string"),
        ),
        (
            '[alpha]\nlisten = "127.0.0.1:1"\nservers = [1]\n',
            ("pool 'alpha': key 'servers': expected a server line string, got an integer"),
        ),
        (
            '[alpha]\nlisten = 22121\nservers = ["h:1:1"]\n',
            ("pool 'alpha': key 'listen': expected a string, got an integer"),
        ),
        (
            '[alpha]\nlisten = "h:1"\nservers = ["h:1:1 a", "h:2:1 a"]\n',
            ("pool 'alpha': key 'servers': two servers named 'a'"),
        ),
        ('listen = "h:1"\n', "top-level key 'listen' is not a pool table ([listen])"),
        ('[""]\nlisten = "h:1"\nservers = ["h:1:1"]\n', "empty pool name"),
        ("", "no pools"),
    ],
)
def test_toml_pool_refusals(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, "c.toml", text)
    assert check(path) == [f"{path}: {message}"]


def test_toml_syntax_error_names_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "c.toml", MINIMAL_TOML + 'listen = "127.0.0.1:22122"\n')
    [problem] = check(path)  # TOML itself refuses duplicate keys
    assert problem.startswith(f"{path}: ") and "line 4" in problem


def test_toml_duplicate_listen_across_pools(tmp_path: Path) -> None:
    path = write(tmp_path, "c.toml", MINIMAL_TOML + MINIMAL_TOML.replace("alpha", "beta"))
    assert check(path) == [
        f"{path}: pool 'beta': listens on '127.0.0.1:22121' as pool 'alpha' does"
    ]


YAML_REFUSALS = {
    "bad-unknown-key.yml": ["3: pool 'alpha': key 'abort_on_timeout': unknown key"],
    "bad-duplicate-key.yml": ["4: pool 'alpha': key 'hash': duplicate key"],
    "bad-missing-weight.yml": [
        "4: pool 'alpha': key 'servers': expected host:port:weight [name], got '127.0.0.1:11211'"
    ],
    "bad-weight-zero.yml": [
        "4: pool 'alpha': key 'servers': weight 0 in '127.0.0.1:11211:0' (must be at least 1)"
    ],
    "bad-flow-sequence.yml": ["3: flow syntax ([...] or {...}) is not allowed"],
    "bad-anchor-alias.yml": [
        "1: anchor &pool is not allowed",
        "5: alias *pool is not allowed",
        "5: pool 'beta': expected a mapping of keys",
    ],
    "bad-tag.yml": ["2: tag tag:yaml.org,2002:str is not allowed"],
    "bad-hash.yml": [
        f"3: pool 'alpha': key 'hash': unknown hash 'foo' (one of: {', '.join(HASHES)})"
    ],
    "bad-bool-yes.yml": ["3: pool 'alpha': key 'preconnect': must be true or false, got 'yes'"],
    "bad-bool-capital.yml": [
        "3: pool 'alpha': key 'auto_eject_hosts': must be true or false, got 'True'"
    ],
    "bad-two-documents.yml": [
        "5: '---' document markers are not allowed",
        ": expected exactly one YAML document, found 2",
    ],
    "bad-empty-file.yml": [": expected exactly one YAML document, found 0"],
    "bad-missing-listen.yml": ["1: pool 'alpha': missing key 'listen'"],
    "bad-empty-servers.yml": [
        "3: pool 'alpha': key 'servers': the value is empty",
        "1: pool 'alpha': key 'servers': no servers",
    ],
    "bad-servers-scalar.yml": ["3: pool 'alpha': key 'servers': expected a sequence of lines"],
    "bad-redis-auth-memcache.yml": [
        "1: pool 'alpha': key 'redis_auth': only valid in a redis pool"
    ],
    "dev-redis-pool.yml": [
        "1: pool 'alpha': key 'redis': redis pools are not supported by trio-mc proxy"
    ],
    "bad-duplicate-pool.yml": [
        f"5: pool 'alpha' is defined twice (first at {CORPUS / 'bad-duplicate-pool.yml'}:1)"
    ],
    "bad-duplicate-listen.yml": [
        "5: pool 'beta': listens on '127.0.0.1:22121' as pool 'alpha' does"
    ],
    "bad-duplicate-server-name.yml": ["5: pool 'alpha': key 'servers': two servers named 'one'"],
    "bad-negative-number.yml": [
        "3: pool 'alpha': key 'timeout': must be a non-negative integer, got '-1'"
    ],
    "bad-nested-mapping.yml": ["4: pool 'alpha': key 'hash': the value is not a plain scalar"],
    "bad-top-level-sequence.yml": ["1: the top level must be a mapping of pool names to pools"],
    "bad-tab-indent.yml": ["3: YAML syntax: found a tab character that violates indentation"],
}


@pytest.mark.parametrize("name", sorted(YAML_REFUSALS))
def test_yaml_refusals(name: str) -> None:
    path = CORPUS / name
    assert check(path) == [
        f"{path}{suffix}" if suffix.startswith(":") else f"{path}:{suffix}"
        for suffix in YAML_REFUSALS[name]
    ]


def test_every_problem_in_one_pass(tmp_path: Path) -> None:
    text = """\
alpha:
  listen: 127.0.0.1:22121
  hash: foo
  timeout: soon
  servers:
    - 127.0.0.1:11211
    - 127.0.0.1:11212:1
beta:
  listen: 127.0.0.1:22121
  preconnect: yes
  servers:
    - 127.0.0.1:11211:0
"""
    path = write(tmp_path, "c.yml", text)
    assert check(path) == [
        f"{path}:3: pool 'alpha': key 'hash': unknown hash 'foo' (one of: {', '.join(HASHES)})",
        f"{path}:4: pool 'alpha': key 'timeout': must be a non-negative integer, got 'soon'",
        (
            f"{path}:6: pool 'alpha': key 'servers': expected host:port:weight [name], "
            "got '127.0.0.1:11211'"
        ),
        f"{path}:10: pool 'beta': key 'preconnect': must be true or false, got 'yes'",
        (
            f"{path}:12: pool 'beta': key 'servers': weight 0 in '127.0.0.1:11211:0' "
            "(must be at least 1)"
        ),
    ]
    with pytest.raises(ConfigError) as info:
        load(path)
    assert info.value.problems == check(path)
    assert str(info.value) == "\n".join(check(path))


def test_file_problems(tmp_path: Path) -> None:
    missing = tmp_path / "none.yml"
    assert check(missing) == [f"{missing}: cannot read: No such file or directory"]
    other = write(tmp_path, "c.json", "{}")
    assert check(other) == [f"{other}: unknown config format (name it .toml, .yml or .yaml)"]
    big = write(tmp_path, "c.yaml", "#" * (MAX_CONFIG_BYTES + 1))
    assert check(big) == [f"{big}: larger than {MAX_CONFIG_BYTES} bytes"]
    binary = tmp_path / "c.yml"
    binary.write_bytes(b"alpha:\n  listen: \xff\n")
    [problem] = check(binary)
    assert problem.startswith(f"{binary}") and "YAML syntax" in problem


def test_yaml_extension_forms_read_alike(tmp_path: Path) -> None:
    assert load(write(tmp_path, "a.yaml", EVERY_KEY_YAML)) == [EVERY_KEY]
    assert load(write(tmp_path, "a.YML", EVERY_KEY_YAML)) == [EVERY_KEY]


# --------------------------------------------------------------------------- TOML = YAML


def yaml_quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(item) for item in value) + "]"
    assert isinstance(value, str)
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def yaml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value) if isinstance(value, int) else yaml_quote(str(value))


def render_toml(pools: Sequence[tuple[str, dict[str, object]]]) -> str:
    return "".join(
        f"[{toml_value(name)}]\n" + "".join(f"{k} = {toml_value(v)}\n" for k, v in keys.items())
        for name, keys in pools
    )


def render_yaml(pools: Sequence[tuple[str, dict[str, object]]]) -> str:
    lines = []
    for name, keys in pools:
        lines.append(f"{yaml_quote(name)}:")
        for key, value in keys.items():
            if isinstance(value, list):
                lines.append(f"  {key}:")
                lines += [f"    - {yaml_quote(item)}" for item in value]
            else:
                lines.append(f"  {key}: {yaml_value(value)}")
    return "\n".join(lines) + "\n"


numbers = st.integers(0, 2**31 - 1)
server_lines = st.builds(
    lambda host, port, weight, name: f"{host}:{port}:{weight}" + (f" {name}" if name else ""),
    st.sampled_from(["127.0.0.1", "localhost", "::1", "mc.example"]),
    st.integers(1, 65535),
    st.integers(1, 1000),
    st.none() | st.text("abcxyz-_0123456789", min_size=1, max_size=6),
) | st.builds(lambda n, w: f"/tmp/mc{n}.sock:{w}", st.integers(0, 99), st.integers(1, 9))
OPTIONAL_KEYS: dict[str, st.SearchStrategy[object]] = {
    "hash": st.sampled_from(HASHES),
    "hash_tag": st.sampled_from(["{}", "$$", "[]", "é", "ab"]),
    "distribution": st.sampled_from(DISTRIBUTIONS),
    "timeout": numbers,
    "backlog": numbers,
    "client_connections": numbers,
    "redis": st.just(False),
    "redis_db": numbers,
    "tcpkeepalive": st.booleans(),
    "reuseport": st.booleans(),
    "preconnect": st.booleans(),
    "server_connections": st.integers(1, 2**31 - 1),
    "auto_eject_hosts": st.booleans(),
    "server_retry_timeout": numbers,
    "server_failure_limit": numbers,
    "server_probe": st.booleans(),
}


@st.composite
def valid_pools(draw: st.DrawFn) -> list[tuple[str, dict[str, object]]]:
    names = draw(
        st.lists(
            st.text("abcdefgh_-é", min_size=1, max_size=8), min_size=1, max_size=3, unique=True
        )
    )
    pools = []
    for index, name in enumerate(names):
        keys = draw(st.lists(st.sampled_from(sorted(OPTIONAL_KEYS)), unique=True))
        pool: dict[str, object] = {key: draw(OPTIONAL_KEYS[key]) for key in keys}
        pool["listen"] = draw(
            st.sampled_from([f"127.0.0.1:{22121 + index}", f"/tmp/trio-mc-p{index}.sock 0644"])
        )
        lines = draw(st.lists(server_lines, min_size=1, max_size=5))
        pool["servers"] = list({parse_server(line).name: line for line in lines}.values())
        order = draw(st.permutations(sorted(pool)))
        pools.append((name, {key: pool[key] for key in order}))
    return pools


@settings(max_examples=200, deadline=None)
@given(valid_pools())
def test_toml_and_yaml_mean_the_same(pools: list[tuple[str, dict[str, object]]]) -> None:
    with config_file("c.toml", render_toml(pools)) as toml_path:
        from_toml = load(toml_path)
    with config_file("c.yml", render_yaml(pools)) as yaml_path:
        from_yaml = load(yaml_path)
    assert from_toml == from_yaml
    for (name, keys), pool in zip(pools, from_toml, strict=True):
        lines = keys["servers"]
        assert pool.name == name and isinstance(lines, list)
        # nutcracker's order: by name, shorter first, then bytewise (test_server_order)
        servers = sorted(map(parse_server, lines), key=lambda s: (len(s.name.encode()), s.name))
        assert pool.servers == tuple(servers)
        for key, value in keys.items():
            if key == "hash_tag":
                assert pool.hash_tag == str(value).encode()
            elif key == "timeout":
                assert pool.timeout == (value or None)
            elif key not in ("listen", "servers"):
                assert getattr(pool, key) == value


# --------------------------------------------------------------------------- nutcracker


CORPUS_FILES = sorted(path.name for path in CORPUS.glob("*.yml"))


def test_corpus_is_named_and_deviations_are_listed() -> None:
    assert len(CORPUS_FILES) >= 30
    assert all(name.startswith(("ok-", "bad-", "dev-")) for name in CORPUS_FILES)
    assert sorted(DEVIATIONS) == [name for name in CORPUS_FILES if name.startswith("dev-")]


@pytest.mark.parametrize("name", CORPUS_FILES)
def test_corpus_against_nutcracker(name: str) -> None:
    path = CORPUS / name
    nutcracker = nutcracker_accepts(path)
    if not name.startswith("dev-"):
        assert nutcracker == name.startswith("ok-")  # the file name records nutcracker's verdict
    problems = check(path)
    ours = not problems
    if name in DEVIATIONS:
        assert ours != nutcracker, DEVIATIONS[name]
    else:
        assert ours == nutcracker, problems


#: Per kind of value: (values nutcracker accepts, values it refuses).
SCALARS = {
    "number": (
        ["0", "1", "400", "2147483647", "007"],
        ["2147483648", "-1", "+1", "0x10", "1.5", "1e3", "1_000", " 7", "", "four"],
    ),
    "bool": (["true", "false"], ["True", "FALSE", "yes", "no", "on", "1", ""]),
    "hash": (list(HASHES), ["fnv1a", "MD5", ""]),
    "distribution": (list(DISTRIBUTIONS), ["consistent", ""]),
    "hash_tag": (["{}", "$$", "é"], ["{", "{}}", ""]),
    "listen": (
        [
            "127.0.0.1:22121",
            "127.0.0.1:22122",
            "0.0.0.0:22123",
            "::1:22124",
            "/tmp/trio-mc-d.sock",
            "/tmp/trio-mc-d.sock 0644",
            "localhost:22125",
        ],
        [
            "127.0.0.1",
            "127.0.0.1:0",
            "127.0.0.1:65536",
            "127.0.0.1:x",
            ":22121",
            "/tmp/trio-mc-d.sock 1000",
            "",
        ],
    ),
    "string": ([], ["secret", ""]),  # redis_auth: refused in a memcached pool
}
KEY_KINDS = {
    "listen": "listen", "hash": "hash", "hash_tag": "hash_tag", "distribution": "distribution",
    "timeout": "number", "backlog": "number", "client_connections": "number",
    "redis_db": "number", "server_connections": "number", "server_retry_timeout": "number",
    "server_failure_limit": "number", "tcpkeepalive": "bool", "preconnect": "bool",
    "auto_eject_hosts": "bool", "redis_auth": "string",
    "abort_on_timeout": "bool",  # not a 0.5.0 key: both refuse it
}  # fmt: skip


def server_parts(index: int) -> tuple[tuple[list[str], list[str]], ...]:
    """Line ``index``'s parts (host, port, weight, name), each (accepted, refused) as above."""
    return (
        (["127.0.0.1", "localhost", "::1", f"/tmp/trio-mc-s{index}.sock"], [""]),
        (
            [f":{11211 + index}", f":{21211 + index}", f":0{11211 + index}"],
            [":0", ":65536", ":x", ""],
        ),
        ([":1", ":2", ":01", ":100000"], [":0", ":", ":-1", ""]),
        (["", "", f" n{index}"], [" a b"]),
    )


def rarely(draw: st.DrawFn) -> bool:
    """True about 1 time in 20 (not on hypothesis's favourite boundary values)."""
    return draw(st.integers(0, 19)) == 7


def sometimes_wrong(draw: st.DrawFn, choices: tuple[list[str], list[str]]) -> str:
    """Mostly a value nutcracker accepts, rarely one it refuses."""
    good, bad = choices
    wrong = not good or rarely(draw)
    return draw(st.sampled_from(bad if wrong else good))


@st.composite
def nutcracker_configs(draw: st.DrawFn) -> str:
    """YAML configs, valid or not, made only of what both sides must judge alike."""
    lines = []
    for pool in range(draw(st.integers(1, 2))):
        lines.append(("alpha" if pool == 0 or rarely(draw) else "beta") + ":")
        keys = draw(
            st.lists(
                st.sampled_from(sorted(KEY_KINDS.keys() - {"listen"})), max_size=4, unique=True
            )
        )
        if keys and rarely(draw):
            keys.append(keys[0])  # a duplicate key
        if not rarely(draw):
            keys.append("listen")  # (or a missing listen)
        if not rarely(draw):
            keys = [key for key in keys if key not in ("redis_auth", "abort_on_timeout")]
        for key in draw(st.permutations(keys)):
            value = sometimes_wrong(draw, SCALARS[KEY_KINDS[key]])
            if rarely(draw):  # a one-item block sequence: nutcracker applies it as the value
                lines += [f"  {key}:", f"    - {yaml_quote(value)}"]
            else:
                lines.append(f"  {key}: {yaml_quote(value) if value else ''}".rstrip())
        if not rarely(draw):
            servers = []
            for index in range(draw(st.integers(1, 3))):
                parts = [sometimes_wrong(draw, choices) for choices in server_parts(index)]
                if parts[0].startswith("/"):
                    parts[1] = ""  # a unix server has no port
                servers.append(yaml_quote("".join(parts)))
                if rarely(draw):
                    servers.append(servers[-1])  # the same server twice
            if len(servers) == 1 and rarely(draw):
                lines.append(f"  servers: {servers[0]}")  # valid only beside another sequence
            else:
                lines += ["  servers:"] + [f"    - {server}" for server in servers]
    return "\n".join(lines) + "\n"


@settings(max_examples=300, deadline=None)
@given(nutcracker_configs())
def test_generated_configs_against_nutcracker(text: str) -> None:
    with config_file("c.yml", text) as path:
        problems = check(path)
        assert nutcracker_accepts(path) == (not problems), (text, problems)
