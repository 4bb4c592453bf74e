"""Reply bytes, exactly as memcached 1.6.18 writes them.

Every reply the server sends is built here, so the wire format lives in one file.  Fixed
replies are module constants (no per-command allocation); variable ones are small functions.
"""

from __future__ import annotations

from collections.abc import Iterable

from trio_mc.protocol.base64 import encode as b64encode

STORED = b"STORED\r\n"
NOT_STORED = b"NOT_STORED\r\n"
EXISTS = b"EXISTS\r\n"
NOT_FOUND = b"NOT_FOUND\r\n"
DELETED = b"DELETED\r\n"
TOUCHED = b"TOUCHED\r\n"
END = b"END\r\n"
OK = b"OK\r\n"
RESET = b"RESET\r\n"
ERROR = b"ERROR\r\n"
MN = b"MN\r\n"

CLIENT_ERROR_FORMAT = b"CLIENT_ERROR bad command line format\r\n"
CLIENT_ERROR_EXPTIME = b"CLIENT_ERROR invalid exptime argument\r\n"
CLIENT_ERROR_DELTA = b"CLIENT_ERROR invalid numeric delta argument\r\n"
CLIENT_ERROR_NON_NUMERIC = b"CLIENT_ERROR cannot increment or decrement non-numeric value\r\n"
CLIENT_ERROR_BAD_CHUNK = b"CLIENT_ERROR bad data chunk\r\n"
CLIENT_ERROR_DELETE_USAGE = (
    b"CLIENT_ERROR bad command line format.  Usage: delete <key> [noreply]\r\n"
)
CLIENT_ERROR_FLUSH_DISABLED = b"CLIENT_ERROR flush_all not allowed\r\n"
CLIENT_ERROR_SHUTDOWN_MODE = b"CLIENT_ERROR invalid shutdown mode\r\n"
CLIENT_ERROR_STATS_DETAIL = b"CLIENT_ERROR usage: stats detail on|off|dump\r\n"
CLIENT_ERROR_CACHEDUMP_DISABLED = b"CLIENT_ERROR stats cachedump not allowed\r\n"
CLIENT_ERROR_BAD_LINE = b"CLIENT_ERROR bad command line\r\n"
SERVER_ERROR_TOO_LARGE = b"SERVER_ERROR object too large for cache\r\n"
SERVER_ERROR_NO_MEMORY = b"SERVER_ERROR out of memory storing object\r\n"
SERVER_ERROR_OOM = b"SERVER_ERROR out of memory\r\n"
SHUTDOWN_DISABLED = b"ERROR: shutdown not enabled\r\n"
MEMLIMIT_TOO_SMALL = b"MEMLIMIT_TOO_SMALL cannot set maxbytes to less than 8m\r\n"
MEMLIMIT_NOT_BYTES = b"MEMLIMIT_ADJUST_FAILED input value is megabytes not bytes\r\n"
TOO_MANY_CONNECTIONS = b"ERROR Too many open connections\r\n"


#: What starts a get hit; the store keeps the rest of the line with the item.
VALUE = b"VALUE "


def value_suffix(flags: int, length: int) -> bytes:
    """`` <flags> <bytes>\\r\\n``: what follows ``VALUE <key>`` in a get/gat hit.  The store
    keeps it in each item (it is injected as ``Store(value_suffix=...)``)."""
    return b" %d %d\r\n" % (flags, length)


def value_suffix_cas(flags: int, length: int, cas: int) -> bytes:
    """`` <flags> <bytes> <cas>\\r\\n``: what follows ``VALUE <key>`` in a gets/gats hit."""
    return b" %d %d %d\r\n" % (flags, length, cas)


def value_header(key: bytes, flags: int, nbytes: int) -> bytes:
    """``VALUE <key> <flags> <bytes>\\r\\n`` for get/gat."""
    return VALUE + key + value_suffix(flags, nbytes)


def value_header_cas(key: bytes, flags: int, nbytes: int, cas: int) -> bytes:
    """``VALUE <key> <flags> <bytes> <cas>\\r\\n`` for gets/gats."""
    return VALUE + key + value_suffix_cas(flags, nbytes, cas)


def number(value: int) -> bytes:
    """The reply to a successful incr/decr."""
    return b"%d\r\n" % value


def version(text: str) -> bytes:
    return b"VERSION %s\r\n" % text.encode()


def stat_lines(stats: Iterable[tuple[str, object]], *, end: bool = True) -> bytes:
    """``STAT <name> <value>`` lines, then ``END`` (memcached's ``APPEND_STAT``)."""
    body = b"".join(b"STAT %s %s\r\n" % (name.encode(), str(value).encode()) for name, value in stats)
    return body + END if end else body


# -- meta protocol ---------------------------------------------------------------------------

def meta_key(key: bytes, binary: bool) -> bytes:
    """The ``k`` return flag: the key, base64 with a ``b`` flag when it is binary."""
    if binary:
        return b" k" + b64encode(key) + b" b"
    return b" k" + key


def meta_flags(tokens: list[bytes], values: dict[int, bytes], key: bytes, binary: bool) -> bytes:
    """Return flags in request order: ``O`` echoes its token, ``k`` the key, and every
    flag in ``values`` its value (``t`` -> `` t30``); other flags return nothing."""
    out = []
    for token in tokens:
        flag = token[0]
        if flag == 0x4F:  # O
            out.append(b" " + token)
        elif flag == 0x6B:  # k
            out.append(meta_key(key, binary))
        else:
            value = values.get(flag)
            if value is not None:
                out.append(b" %c%b" % (flag, value))
    return b"".join(out)


def meta_debug(key: bytes, binary: bool, exp: int, la: int, cas: int, fetched: bool, clsid: int,
               size: int) -> bytes:
    """The ``me`` line."""
    shown = b64encode(key) if binary else key
    return b"ME %b exp=%d la=%d cas=%d fetch=%b cls=%d size=%d\r\n" % (
        shown, exp, la, cas, b"yes" if fetched else b"no", clsid, size)


# Meta status codes (a reply line is the code, its return flags, then CRLF).
HD, NF, NS, EX, EN_CODE = b"HD", b"NF", b"NS", b"EX", b"EN"
EN = b"EN\r\n"


def meta_line(code: bytes, flags: bytes) -> bytes:
    """A meta reply line: ``HD``/``NF``/... or a ``VA <size>`` head, then its flags."""
    return code + flags + b"\r\n"


def meta_value_head(size: int) -> bytes:
    return b"VA %d" % size

# -- replies the server decides outside the storage commands -------------------------------

SERVER_ERROR_GET_OOM = b"SERVER_ERROR out of memory writing get response\r\n"
CLIENT_ERROR_UNAUTHENTICATED = b"CLIENT_ERROR unauthenticated\r\n"
CLIENT_ERROR_AUTH_TERMINATION = b"CLIENT_ERROR bad command line termination\r\n"
CLIENT_ERROR_AUTH_FORMAT = b"CLIENT_ERROR bad authentication token format\r\n"
CLIENT_ERROR_AUTH_FAILURE = b"CLIENT_ERROR authentication failure\r\n"
CLIENT_ERROR_WATCH_DISABLED = b"CLIENT_ERROR watch commands not allowed\r\n"
ERROR_WATCH_PIPELINED = b"ERROR cannot pipeline other commands before watch\r\n"
CLIENT_ERROR_REASSIGN_DISABLED = b"CLIENT_ERROR slab reassignment disabled\r\n"
#: ``slabs reassign`` answers, by the store's result (OK, BADCLASS, NOSPARE, SAME).
REASSIGN = (
    OK,
    b"BADCLASS invalid src or dst class id\r\n",
    b"NOSPARE source class has no spare pages\r\n",
    b"SAME src and dst class are identical\r\n",
)
CLIENT_ERROR_CRAWLER_DISABLED = b"CLIENT_ERROR lru crawler disabled\r\n"
BADCLASS_CRAWLER = b"BADCLASS invalid class id\r\n"
ERROR_METADUMP_DISABLED = b"ERROR metadump not allowed\r\n"
ERROR_METADUMP_PIPELINED = b"ERROR cannot pipeline other commands before metadump\r\n"
CLIENT_ERROR_CRAWLER_SLEEP = b"CLIENT_ERROR sleep must be one second or less\r\n"
CLIENT_ERROR_ILLEGAL_SLAB = b"CLIENT_ERROR Illegal slab id\r\n"
OPAQUE_TOO_LONG = b"CLIENT_ERROR opaque token too long\r\n"


def crawler_toggle_failed(enable: bool) -> bytes:
    return b"ERROR failed to %b lru crawler thread\r\n" % (b"start" if enable else b"stop")


def metadump_line(key: bytes, exp: int, la: int, cas: int, fetched: bool, clsid: int, size: int) -> bytes:
    """One ``lru_crawler metadump`` line (the key URI-encoded by the caller)."""
    return b"key=%b exp=%d la=%d cas=%d fetch=%b cls=%d size=%d\n" % (
        key, exp, la, cas, b"yes" if fetched else b"no", clsid, size)


def cachedump_line(key: bytes, nbytes: int, exp: int) -> bytes:
    """One ``stats cachedump`` line."""
    return b"ITEM %b [%d b; %d s]\r\n" % (key, nbytes, exp)


def server_error(text: bytes) -> bytes:
    """``SERVER_ERROR <text>``: how a proxy reports a request it could not forward
    (twemproxy writes the errno text, e.g. ``Connection refused``)."""
    return b"SERVER_ERROR " + text + b"\r\n"
