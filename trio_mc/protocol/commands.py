"""The commands the parser produces: plain data, no behaviour.

Each class is one request as memcached understands it after tokenizing and validating the
command line (and reading its data block, for storage commands).  Values that depend on the
server clock (exptime) are passed through as the client's raw integers; turning them into
server time is the store's job, because the protocol layer has no clock.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class Get:
    """get/gets/gat/gats/bget (a plain single-key get is a :data:`GetKey` instead).
    ``exptime`` is set only for the touching variants."""

    keys: list[bytes]
    with_cas: bool
    exptime: int | None = None


@dataclass(slots=True)
class Store:
    """set/add/replace/append/prepend/cas with its data block (``data`` ends in ``\\r\\n``)."""

    mode: int  # trio_mc.modes
    key: bytes
    flags: int
    exptime: int
    data: bytes
    cas: int
    noreply: bool


@dataclass(slots=True)
class TooLarge:
    """A storage command whose item can never fit ``-I``; its data block is swallowed unread."""

    mode: int  # trio_mc.modes
    key: bytes
    noreply: bool


@dataclass(slots=True)
class Delete:
    key: bytes
    noreply: bool


@dataclass(slots=True)
class Arith:
    """incr/decr."""

    key: bytes
    incr: bool
    delta: int
    noreply: bool


@dataclass(slots=True)
class Touch:
    key: bytes
    exptime: int
    noreply: bool


@dataclass(slots=True)
class FlushAll:
    """``delay`` is ``None`` when the argument was not a number (the reply is an error)."""

    delay: int | None
    noreply: bool


@dataclass(slots=True)
class Verbosity:
    level: int
    noreply: bool


@dataclass(slots=True)
class MemLimit:
    """cache_memlimit; ``megabytes`` is ``None`` for a non-numeric argument."""

    megabytes: int | None
    noreply: bool


@dataclass(slots=True)
class Shutdown:
    """shutdown; ``mode`` is ``b""`` (immediate), ``b"graceful"`` or an invalid token."""

    mode: bytes | None


@dataclass(slots=True)
class Stats:
    """stats with its sub-command tokens (``args`` may be empty)."""

    args: list[bytes]


@dataclass(slots=True)
class Version:
    pass


@dataclass(slots=True)
class Watch:
    """watch: turn the connection into a log stream of these kinds."""

    kinds: list[bytes]


@dataclass(slots=True)
class Auth:
    """An ASCII authentication attempt (``-Y``): ``set <any> <any> <any> <n>`` + "user pass"."""

    user: bytes
    password: bytes


@dataclass(slots=True)
class Binary:
    """A binary-protocol request frame (``too_large``: its value was not kept)."""

    opcode: int
    key: bytes
    extras: bytes
    value: bytes
    cas: int
    opaque: int
    bodylen: int
    too_large: bool


@dataclass(slots=True)
class Admin:
    """The maintenance commands (``slabs``, ``lru``, ``lru_crawler``, ``debugtime``), whose
    arguments are checked where they are executed, as memcached does."""

    name: bytes
    args: list[bytes]


@dataclass(slots=True)
class Quit:
    """quit: send what is pending, then close; later pipelined commands are not run."""


@dataclass(slots=True)
class Close:
    """Close without a reply (an HTTP request line, an over-long line)."""

    reason: str


@dataclass(slots=True)
class Reply:
    """A reply decided by the parser alone (``ERROR``, a ``CLIENT_ERROR`` for a bad line)."""

    data: bytes




@dataclass(slots=True)
class MetaGet:
    """mg.  ``tokens`` keeps the request's flags in order (return flags are answered in that
    order, and T/N/R/t apply in it).  ``late_error`` is an error memcached reports only after
    it has applied the command (an over-long opaque)."""

    key: bytes
    tokens: list[bytes]
    binary: bool = False
    quiet: bool = False
    value: bool = False
    no_update: bool = False
    ttl: int | None = None
    vivify: int | None = None
    recache: int | None = None
    compare_cas: int | None = None
    new_cas: int | None = None
    late_error: bytes | None = None


@dataclass(slots=True)
class MetaSet:
    """ms with its data block (``data`` ends in ``\\r\\n``; ``need`` is its length)."""

    key: bytes
    tokens: list[bytes]
    binary: bool = False
    quiet: bool = False
    stale: bool = False
    ttl: int | None = None
    vivify: int | None = None
    client_flags: int = 0
    compare_cas: int | None = None
    new_cas: int | None = None
    mode: int = 0  # the M token's byte (0: none)
    need: int = 0
    data: bytes = b""


@dataclass(slots=True)
class MetaDelete:
    """md; ``stale`` (I) marks instead of deleting, ``drop_value`` (x) keeps an empty item."""

    key: bytes
    tokens: list[bytes]
    binary: bool = False
    quiet: bool = False
    stale: bool = False
    drop_value: bool = False
    ttl: int | None = None
    compare_cas: int | None = None
    new_cas: int | None = None


@dataclass(slots=True)
class MetaArith:
    """ma; ``mode`` is the M token's byte (0, I, +: incr; D, -: decr)."""

    key: bytes
    tokens: list[bytes]
    binary: bool = False
    quiet: bool = False
    value: bool = False
    ttl: int | None = None
    vivify: int | None = None
    compare_cas: int | None = None
    new_cas: int | None = None
    delta: int = 1
    initial: int = 0
    mode: int = 0
    late_error: bytes | None = None


Meta = MetaGet | MetaSet | MetaDelete | MetaArith


@dataclass(slots=True)
class MetaSwallow:
    """An ms refused once its length was known: the reply, then its data block is discarded.

    ``drop_key`` is set when the value was too large: memcached then drops the old value.
    """

    reply: bytes
    need: int
    drop_key: bytes | None


@dataclass(slots=True)
class MetaDebug:
    """me: memcached's item debug line."""

    key: bytes


#: A plain ``get <key>``, the most common request, is its key itself: no object is built.
GetKey = bytes

Command = (
    GetKey | Get | Store | TooLarge | Delete | Arith | Touch | FlushAll | Verbosity | MemLimit
    | Shutdown | Stats | Version | Quit | Close | Reply | MetaGet | MetaSet | MetaDelete | MetaArith
    | MetaSwallow | MetaDebug | Watch
    | Admin | Auth | Binary
)
