"""Proxy pool configuration: twemproxy's (nutcracker 0.5.0's) keys, from TOML or its YAML.

``trio-mc proxy`` must run an existing twemproxy deployment unchanged, so a pool means what a
nutcracker pool means: the same keys, the same defaults, the same server-line syntax and the
same server *names* (what ketama hashes, so the names decide where every key lives).  Two
readers feed one validator:

* TOML (native, stdlib ``tomllib``): one table per pool, keys spelled as twemproxy's YAML keys,
  typed values (``timeout = 400``, ``preconnect = false``, ``servers = ["h:p:w name", ...]``).
* ``.yml``/``.yaml``: read as nutcracker reads it, with its strictness: one document, no
  ``---``/``...`` markers, directives, anchors, aliases, tags or flow collections, every scalar
  non-empty, each pool a block mapping holding exactly one block sequence.  Values are scalar
  text, converted by nutcracker's rules (numbers are ASCII digits, booleans exactly
  ``true``/``false``).  The reader walks PyYAML's event stream (on libyaml when PyYAML has it,
  the parser nutcracker itself uses) because ``safe_load`` would silently keep the last of two
  duplicate keys, which nutcracker refuses.

A pool's servers are kept in nutcracker's order (sorted by name, see ``_nutcracker_order``),
which is the order its distributions index and its stats list.

Every problem is reported with its file, pool and key, and all of them are collected in one
pass (``check``), so ``--test-conf`` shows a user everything to fix at once.

Where trio-mc differs from nutcracker's acceptance (tests/test_proxy_config.py lists each case):

* accepted: ``reuseport`` (twemproxy master's key) and ``server_probe`` (trio-mc's own);
* refused: ``redis: true`` (trio-mc proxies memcached only);
* refused: numbers above 2**31-1 (nutcracker's ``int`` overflows, so some huge values wrap to a
  small one and are accepted);
* refused: a unix listen permission that is not octal digits (nutcracker's ``strtol`` reads the
  leading octal digits and drops the rest: ``0999`` silently means "no chmod");
* not checked here: that a listen hostname resolves (nutcracker resolves it while reading the
  config; trio-mc resolves when it binds, so reading a config does no network I/O).
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final, NoReturn

import yaml
import yaml.events as ev

__all__ = [
    "DISTRIBUTIONS",
    "HASHES",
    "ConfigError",
    "ListenConfig",
    "PoolConfig",
    "ServerConfig",
    "check",
    "load",
    "parse_listen",
    "parse_server",
]

#: twemproxy's hash names (src/hashkit/nc_hashkit.h), in its order.
HASHES: Final = (
    "one_at_a_time", "md5", "crc16", "crc32", "crc32a", "fnv1_64",
    "fnv1a_64", "fnv1_32", "fnv1a_32", "hsieh", "murmur", "jenkins",
)  # fmt: skip
#: twemproxy's distribution names.
DISTRIBUTIONS: Final = ("ketama", "modula", "random")

#: nutcracker keeps numbers in a C ``int``; larger values are refused (see module docstring).
MAX_NUMBER: Final = 2**31 - 1
#: libmemcached's port: a server on it is named by its host alone (section 1.1 of the notes).
KETAMA_PORT: Final = 11211
#: ``sizeof(sun_path)`` on Linux: nutcracker refuses a unix listen path of this length or more.
UNIX_PATH_MAX: Final = 108
#: A config is read whole; this bounds what a wrong ``-c`` (a log file, a device) can cost.
MAX_CONFIG_BYTES: Final = 16 * 1024 * 1024

_DIGITS: Final = re.compile(r"[0-9]+")
_OCTAL: Final = re.compile(r"[0-7]+")
_YAML_LOADER: Final = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class ConfigError(Exception):
    """A config that cannot be used; ``problems`` holds one line per problem."""

    def __init__(self, problems: Sequence[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = list(problems)


@dataclass(frozen=True, slots=True)
class ListenConfig:
    """A pool's listen address: ``host:port``, or ``/path [perm]`` for a unix socket."""

    host: str  # a hostname or address (resolved when bound), or the unix socket path
    port: int  # 0 for a unix socket
    perm: int | None  # unix socket mode bits to chmod to; None leaves it as created
    text: str  # as written: nutcracker compares this text to find duplicate listen addresses

    @property
    def is_unix(self) -> bool:
        return self.host.startswith("/")


@dataclass(frozen=True, slots=True)
class ServerConfig:
    """One backend from a ``host:port:weight [name]`` or ``/path:weight [name]`` line."""

    host: str  # a hostname or address (resolved on each connect, as twemproxy), or a path
    port: int  # 0 for a unix socket
    weight: int
    name: str  # what ketama hashes and stats report; see parse_server

    @property
    def is_unix(self) -> bool:
        return self.host.startswith("/")

    @property
    def spec(self) -> str:
        """The server line that parses back to this server (the name always written out)."""
        address = self.host if self.is_unix else f"{self.host}:{self.port}"
        return f"{address}:{self.weight} {self.name}"


@dataclass(frozen=True, slots=True)
class PoolConfig:
    """One pool: twemproxy 0.5.0's keys with its defaults, plus ``reuseport``/``server_probe``.

    ``redis`` and ``redis_auth`` keep their keys' values for completeness, but a loaded config
    always has the defaults: a redis pool is refused and so is ``redis_auth`` in a memcached
    pool.  ``client_connections`` is accepted and unused, as in 0.5.0 (which resets it to 0).
    """

    name: str
    listen: ListenConfig
    servers: tuple[ServerConfig, ...]  # in nutcracker's order (see _nutcracker_order)
    hash: str = "fnv1a_64"
    hash_tag: bytes | None = None  # two bytes: nutcracker counts bytes, so "é" is a valid tag
    distribution: str = "ketama"
    timeout: int | None = None  # ms; None waits forever (twemproxy's -1; it arms no timer on 0)
    backlog: int = 512
    client_connections: int = 0
    redis: bool = False
    redis_auth: str | None = None
    redis_db: int = 0
    tcpkeepalive: bool = False
    reuseport: bool = False
    preconnect: bool = False
    server_connections: int = 1
    auto_eject_hosts: bool = False
    server_retry_timeout: int = 30000  # ms
    server_failure_limit: int = 2
    server_probe: bool = False  # trio-mc: an ejected server must answer `version` to rejoin


class _Bad(ValueError):
    """One value's problem; the caller adds the file, pool and key."""


def _bad(message: str) -> NoReturn:
    raise _Bad(message)


# --------------------------------------------------------------------------- values
#
# A converter takes a YAML scalar's text (``from_yaml``) or a TOML value, and returns the
# field's value or raises _Bad.  YAML text follows nutcracker's rules; TOML values must have
# the matching TOML type.


def _number_text(text: str, what: str) -> int:
    """nutcracker's ``nc_atoi``: ASCII digits only, no sign, no spaces (as a C int)."""
    label = f"{what} " if what else ""
    if not _DIGITS.fullmatch(text):
        _bad(f"{label}must be a non-negative integer, got {text!r}")
    value = int(text) if len(text) <= 20 else MAX_NUMBER + 1  # int() refuses 4300+ digits
    if value > MAX_NUMBER:
        _bad(f"{label}{text[:20]} is larger than {MAX_NUMBER}")
    return value


def _number(value: object, from_yaml: bool) -> int:
    if from_yaml:
        assert isinstance(value, str)
        return _number_text(value, "")
    if isinstance(value, bool) or not isinstance(value, int):
        _bad(f"expected a non-negative integer, got {_toml_type(value)}")
    if not 0 <= value <= MAX_NUMBER:
        _bad(f"{value} is not in 0..{MAX_NUMBER}")
    return value


def _timeout(value: object, from_yaml: bool) -> int | None:
    return _number(value, from_yaml) or None


def _server_connections(value: object, from_yaml: bool) -> int:
    number = _number(value, from_yaml)
    if number == 0:
        _bad("must be at least 1")
    return number


def _bool(value: object, from_yaml: bool) -> bool:
    if from_yaml:
        if value == "true":
            return True
        if value == "false":
            return False
        _bad(f"must be true or false, got {value!r}")
    if not isinstance(value, bool):
        _bad(f"expected true or false, got {_toml_type(value)}")
    return value


def _string(value: object, from_yaml: bool) -> str:
    if not isinstance(value, str):
        _bad(f"expected a string, got {_toml_type(value)}")
    return value


def _hash(value: object, from_yaml: bool) -> str:
    name = _string(value, from_yaml)
    if name not in HASHES:
        _bad(f"unknown hash {name!r} (one of: {', '.join(HASHES)})")
    return name


def _distribution(value: object, from_yaml: bool) -> str:
    name = _string(value, from_yaml)
    if name not in DISTRIBUTIONS:
        _bad(f"unknown distribution {name!r} (one of: {', '.join(DISTRIBUTIONS)})")
    return name


def _hash_tag(value: object, from_yaml: bool) -> bytes:
    tag = _string(value, from_yaml).encode()
    if len(tag) != 2:
        _bad(f"must be two characters (bytes), like '{{}}', got {len(tag)} bytes")
    return tag


def _listen(value: object, from_yaml: bool) -> ListenConfig:
    return parse_listen(_string(value, from_yaml))


_TOML_TYPES: Final[dict[type, str]] = {
    bool: "a boolean", int: "an integer", float: "a float", str: "a string",
    list: "an array", dict: "a table",
}  # fmt: skip


def _toml_type(value: object) -> str:
    return _TOML_TYPES.get(type(value), f"a {type(value).__name__}")  # (or a date, a time)


_Converter = Callable[[object, bool], Any]

#: Every pool key but ``servers`` (which adds one server per value), with its converter.
_CONVERTERS: Final[dict[str, _Converter]] = {
    "listen": _listen,
    "hash": _hash,
    "hash_tag": _hash_tag,
    "distribution": _distribution,
    "timeout": _timeout,
    "backlog": _number,
    "client_connections": _number,
    "redis": _bool,
    "redis_auth": _string,
    "redis_db": _number,
    "tcpkeepalive": _bool,
    "reuseport": _bool,
    "preconnect": _bool,
    "server_connections": _server_connections,
    "auto_eject_hosts": _bool,
    "server_retry_timeout": _number,
    "server_failure_limit": _number,
    "server_probe": _bool,
}
SERVERS_KEY: Final = "servers"


# --------------------------------------------------------------------------- lines


def parse_listen(text: str) -> ListenConfig:
    """Parse ``host:port`` or ``/path [perm]`` as nutcracker does (port after the last ``:``).

    Raises ValueError with the reason.  The host may itself hold colons (``::1:22121``).
    """
    if text.startswith("/"):
        path, space, perm_text = text.rpartition(" ")
        perm = None
        if not space:
            path = text
        elif not _OCTAL.fullmatch(perm_text) or int(perm_text, 8) > 0o777:
            raise ValueError(f"bad unix socket permission {perm_text!r} (octal, at most 0777)")
        else:
            perm = int(perm_text, 8) or None  # nutcracker skips chmod for 0
        if len(path.encode()) >= UNIX_PATH_MAX:
            raise ValueError(f"unix socket path is longer than {UNIX_PATH_MAX - 1} bytes")
        return ListenConfig(path, 0, perm, text)
    host, colon, port_text = text.rpartition(":")
    if not colon:
        raise ValueError(f"expected host:port or /unix/path, got {text!r}")
    if not host:
        raise ValueError(f"no host in {text!r}")
    return ListenConfig(host, _port(port_text), None, text)


def _port(text: str) -> int:
    port = _number_text(text, "port")
    if not 1 <= port <= 65535:
        raise ValueError(f"bad port {text!r} (1..65535)")
    return port


def parse_server(line: str) -> ServerConfig:
    """Parse ``host:port:weight [name]`` or ``/path:weight [name]``; raises ValueError.

    Split from the right, as nutcracker does: the name is whatever follows the last space
    (possibly empty), the weight follows the last colon before it, then the port.  The weight
    is mandatory and positive.  The name, when not given, is the rule that decides ketama's
    ring (section 1.1 of the notes): the host alone on port 11211 (libmemcached's habit),
    else ``host:port`` with the port as written; a unix server's default name is its path
    followed by ``:`` (nutcracker appends the colon and an empty port).
    """
    rest, space, name = line.rpartition(" ")
    if not space:
        rest = line
    address, colon, weight_text = rest.rpartition(":")
    unix = line.startswith("/")
    host, port_colon, port_text = address.rpartition(":")
    if not colon or unix == bool(port_colon):
        form = "/path:weight [name]" if unix else "host:port:weight [name]"
        raise ValueError(f"expected {form}, got {line!r}")
    weight = _number_text(weight_text, "weight")
    if weight == 0:
        raise ValueError(f"weight 0 in {line!r} (must be at least 1)")
    if unix:
        host, port, port_text = address, 0, ""
    else:
        port = _port(port_text)
    if not space:
        name = host if port == KETAMA_PORT else f"{host}:{port_text}"
    return ServerConfig(host, port, weight, name)


# --------------------------------------------------------------------------- validation


@dataclass(slots=True)
class _Entry:
    """One ``key: value`` of a pool as read (a YAML sequence gives one entry per item)."""

    key: str
    value: object
    where: str  # "file" or "file:line", the start of each message about it


@dataclass(slots=True)
class _RawPool:
    name: str
    where: str
    entries: list[_Entry]
    given: set[str]  # every key written, even one whose value the reader already refused


def _build(pool: _RawPool, from_yaml: bool, problems: list[str]) -> PoolConfig | None:
    """Validate one pool's entries into a PoolConfig, adding every problem found."""
    start = len(problems)
    fields: dict[str, Any] = {}
    servers: dict[str, ServerConfig] = {}  # by name: a pool's server names must be unique

    def problem(where: str, message: str) -> None:
        problems.append(f"{where}: pool {pool.name!r}: {message}")

    def add_server(line: object) -> None:
        if not isinstance(line, str):
            _bad(f"expected a server line string, got {_toml_type(line)}")
        server = parse_server(line)
        if server.name in servers:
            _bad(f"two servers named {server.name!r}")
        servers[server.name] = server

    for entry in pool.entries:
        key = entry.key
        try:
            if key == SERVERS_KEY:
                if not from_yaml and not isinstance(entry.value, list):
                    _bad(f"expected an array of server lines, got {_toml_type(entry.value)}")
                for line in entry.value if isinstance(entry.value, list) else [entry.value]:
                    try:
                        add_server(line)
                    except ValueError as exc:
                        problem(entry.where, f"key {key!r}: {exc}")
            elif key not in _CONVERTERS:
                _bad("unknown key")
            elif key in fields:
                _bad("duplicate key")
            else:
                fields[key] = _CONVERTERS[key](entry.value, from_yaml)
        except ValueError as exc:
            problem(entry.where, f"key {key!r}: {exc}")
            fields.setdefault(key, None)  # a bad value still counts for "duplicate key"
    for key in ("listen", SERVERS_KEY):
        if key not in pool.given:
            problem(pool.where, f"missing key {key!r}")
    if not servers and SERVERS_KEY in pool.given and len(problems) == start:
        problem(pool.where, f"key {SERVERS_KEY!r}: no servers")
    if fields.get("redis"):
        problem(pool.where, "key 'redis': redis pools are not supported by trio-mc proxy")
    elif fields.get("redis_auth") is not None:
        problem(pool.where, "key 'redis_auth': only valid in a redis pool")
    if len(problems) > start or fields.get("listen") is None or not servers:
        return None  # (a value the YAML reader refused is reported already)
    ordered = tuple(sorted(servers.values(), key=_nutcracker_order))
    return PoolConfig(name=pool.name, servers=ordered, **fields)


def _nutcracker_order(server: ServerConfig) -> tuple[int, bytes]:
    """nutcracker's order of a pool's servers: by name, shorter names first, then bytewise.

    nutcracker sorts a pool's servers to find duplicate names and keeps that order: modula's
    indexes and the stats JSON follow it, not the file's order (observed: listing ``aa``
    before ``b`` still makes ``b`` modula's server 0 and the first server in the stats).
    """
    name = server.name.encode()
    return len(name), name


def _validate(
    pools: Sequence[_RawPool], from_yaml: bool, file: str, problems: list[str]
) -> list[PoolConfig]:
    """Validate each pool, then what nutcracker checks across pools: names and listen text."""
    if not pools and not problems:
        problems.append(f"{file}: no pools")
    named: dict[str, str] = {}
    listening: dict[str, str] = {}
    configs = []
    for pool in pools:
        if not pool.name:
            problems.append(f"{pool.where}: empty pool name")
        elif pool.name in named:
            problems.append(
                f"{pool.where}: pool {pool.name!r} is defined twice (first at {named[pool.name]})"
            )
        named.setdefault(pool.name, pool.where)
        config = _build(pool, from_yaml, problems)
        if config is None:
            continue
        other = listening.setdefault(config.listen.text, pool.name)
        if other != pool.name:
            address = config.listen.text
            problems.append(
                f"{pool.where}: pool {pool.name!r}: listens on {address!r} as pool {other!r} does"
            )
        configs.append(config)
    return configs


# --------------------------------------------------------------------------- TOML


def _read_toml(data: bytes, file: str, problems: list[str]) -> list[_RawPool]:
    try:
        document = tomllib.loads(data.decode())
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        problems.append(f"{file}: {exc}")
        return []
    pools = []
    for name, table in document.items():
        if isinstance(table, dict):
            entries = [_Entry(key, value, file) for key, value in table.items()]
            pools.append(_RawPool(name, file, entries, set(table)))
        else:
            problems.append(f"{file}: top-level key {name!r} is not a pool table ([{name}])")
    return pools


# --------------------------------------------------------------------------- YAML


class _YamlReader:
    """Walks the event list of a nutcracker YAML config into raw pools, noting every problem.

    The shape nutcracker allows is exactly: a block mapping of pool names to block mappings,
    whose values are non-empty scalars except for one block sequence of non-empty scalars per
    pool (normally ``servers``; nutcracker applies any key's sequence item by item).
    """

    def __init__(self, events: list[ev.Event], file: str, problems: list[str]) -> None:
        self.events = events
        self.file = file
        self.problems = problems
        self.pos = 0
        self.pools: list[_RawPool] = []

    def where(self, event: ev.Event) -> str:
        mark = event.start_mark
        return f"{self.file}:{mark.line + 1}" if mark is not None else self.file

    def problem(self, event: ev.Event, message: str) -> None:
        self.problems.append(f"{self.where(event)}: {message}")

    def next(self) -> ev.Event:
        event = self.events[self.pos]
        self.pos += 1
        return event

    def check_features(self) -> None:
        """The token rules: YAML features nutcracker refuses wherever they appear."""
        documents = 0
        for event in self.events:
            if isinstance(event, ev.DocumentStartEvent):
                documents += 1
                if event.explicit:
                    self.problem(event, "'---' document markers are not allowed")
                if event.version or event.tags:
                    self.problem(event, "YAML directives are not allowed")
            elif isinstance(event, ev.DocumentEndEvent) and event.explicit:
                self.problem(event, "'...' document markers are not allowed")
            elif isinstance(event, ev.AliasEvent):
                self.problem(event, f"alias *{event.anchor} is not allowed")
            if isinstance(event, ev.NodeEvent) and not isinstance(event, ev.AliasEvent):
                if event.anchor is not None:
                    self.problem(event, f"anchor &{event.anchor} is not allowed")
                if isinstance(event, (ev.ScalarEvent, ev.CollectionStartEvent)) and event.tag:
                    self.problem(event, f"tag {event.tag} is not allowed")
            if isinstance(event, ev.CollectionStartEvent) and event.flow_style:
                self.problem(event, "flow syntax ([...] or {...}) is not allowed")
        if documents != 1:
            self.problems.append(
                f"{self.file}: expected exactly one YAML document, found {documents}"
            )

    def skip_node(self) -> None:
        depth = 0
        while True:
            event = self.next()
            if isinstance(event, ev.CollectionStartEvent):
                depth += 1
            elif isinstance(event, ev.CollectionEndEvent):
                depth -= 1
            if depth == 0:
                return

    def scalar(self, event: ev.Event, what: str) -> str | None:
        """A non-empty scalar's text, or None after noting the problem and skipping the node."""
        if isinstance(event, ev.ScalarEvent) and event.value:
            return str(event.value)
        self.pos -= 1
        self.skip_node()
        empty = isinstance(event, ev.ScalarEvent)
        self.problem(event, f"{what} {'is empty' if empty else 'is not a plain scalar'}")
        return None

    def read(self) -> list[_RawPool]:
        self.check_features()
        while self.pos < len(self.events):
            event = self.next()
            if isinstance(event, ev.MappingStartEvent):
                self.read_pools()
            elif isinstance(event, (ev.ScalarEvent, ev.SequenceStartEvent, ev.AliasEvent)):
                self.problem(event, "the top level must be a mapping of pool names to pools")
                self.pos -= 1
                self.skip_node()
        return self.pools

    def read_pools(self) -> None:
        while not isinstance(key_event := self.next(), ev.MappingEndEvent):
            name = self.scalar(key_event, "a pool name")
            if name is None:
                self.skip_node()
                continue
            value = self.next()
            if isinstance(value, ev.MappingStartEvent):
                self.read_pool(_RawPool(name, self.where(key_event), [], set()))
            else:
                self.problem(value, f"pool {name!r}: expected a mapping of keys")
                self.pos -= 1
                self.skip_node()

    def read_pool(self, pool: _RawPool) -> None:
        sequence: str | None = None  # the key holding the pool's one block sequence
        while not isinstance(key_event := self.next(), ev.MappingEndEvent):
            key = self.scalar(key_event, f"pool {pool.name!r}: a key")
            if key is None:
                self.skip_node()
                continue
            pool.given.add(key)
            about = f"pool {pool.name!r}: key {key!r}:"
            if not isinstance(self.events[self.pos], ev.SequenceStartEvent):
                self.read_value(pool, key, about)
                continue
            start = self.next()
            if sequence is not None:
                self.problem(
                    start, f"{about} a second sequence (one per pool, here key {sequence!r})"
                )
            sequence = sequence or key
            while not isinstance(self.events[self.pos], ev.SequenceEndEvent):
                self.read_value(pool, key, about)
            self.next()
        scalar_servers = [entry for entry in pool.entries if entry.key == SERVERS_KEY]
        if sequence is None and scalar_servers:
            self.problems.append(
                f"{scalar_servers[0].where}: pool {pool.name!r}: key 'servers': "
                "expected a sequence of lines"
            )
        self.pools.append(pool)

    def read_value(self, pool: _RawPool, key: str, about: str) -> None:
        event = self.next()
        text = self.scalar(event, f"{about} the value")
        if text is not None:
            pool.entries.append(_Entry(key, text, self.where(event)))


def _read_yaml(data: bytes, file: str, problems: list[str]) -> list[_RawPool]:
    try:
        events = list(yaml.parse(data, Loader=_YAML_LOADER))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f"{file}:{mark.line + 1}" if mark is not None else file
        problems.append(f"{at}: YAML syntax: {getattr(exc, 'problem', None) or exc}")
        return []
    return _YamlReader(events, file, problems).read()


# --------------------------------------------------------------------------- files

_READERS: Final = {".toml": _read_toml, ".yml": _read_yaml, ".yaml": _read_yaml}


def _load(path: str | os.PathLike[str]) -> tuple[list[PoolConfig], list[str]]:
    file = os.fspath(path)
    reader = _READERS.get(os.path.splitext(file)[1].lower())
    if reader is None:
        return [], [f"{file}: unknown config format (name it .toml, .yml or .yaml)"]
    try:
        with open(file, "rb") as handle:
            data = handle.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        return [], [f"{file}: cannot read: {exc.strerror}"]
    if len(data) > MAX_CONFIG_BYTES:
        return [], [f"{file}: larger than {MAX_CONFIG_BYTES} bytes"]
    problems: list[str] = []
    raw = reader(data, file, problems)
    pools = _validate(raw, reader is _read_yaml, file, problems)
    return pools, problems


def check(path: str | os.PathLike[str]) -> list[str]:
    """Every problem in the config at ``path`` (``--test-conf``); empty when it is usable."""
    return _load(path)[1]


def load(path: str | os.PathLike[str]) -> list[PoolConfig]:
    """The pools of the config at ``path``, in file order; raises ConfigError listing problems."""
    pools, problems = _load(path)
    if problems:
        raise ConfigError(problems)
    return pools
