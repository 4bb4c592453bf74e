"""The ``trio-mc`` command line: ``serve`` takes memcached 1.6.18's flags, ``proxy``
nutcracker 0.5.0's.

Existing scripts, init files and test harnesses start memcached and nutcracker with their
own flags, so each subcommand accepts the same options with the same meanings and
defaults, and refuses bad values the way its model does (a message on stderr, non-zero
exit).
"""

from __future__ import annotations

import errno
import functools
import getopt
import os
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass

from trio_mc import MEMCACHED_VERSION, __version__
from trio_mc.numbers import safe_strtoul
from trio_mc.proxy.serve import LOG_LEVEL_MAX, ProxyOptions
from trio_mc.proxy.stats_server import STATS_INTERVAL, STATS_PORT, StatsConfig
from trio_mc.settings import Settings

EX_USAGE = 64

# memcached's getopt string and long options (1.6.18).
_SHORT = "a:Ap:s:U:m:Mc:khiVrvdl:u:P:f:n:t:D:LR:Cb:B:I:SFXWY:e:o:N:Z"
_LONG = [
    "unix-mask=", "enable-shutdown", "port=", "unix-socket=", "udp-port=", "memory-limit=",
    "disable-evictions", "conn-limit=", "lock-memory", "help", "license", "version",
    "enable-coredumps", "verbose", "daemon", "listen=", "user=", "pidfile=",
    "slab-growth-factor=", "slab-min-size=", "threads=", "enable-largepages",
    "max-reqs-per-event=", "disable-cas", "listen-backlog=", "protocol=", "max-item-size=",
    "enable-sasl", "disable-flush-all", "disable-dumping", "disable-watch", "auth-file=",
    "memory-file=", "extended=", "napi-ids=", "enable-ssl",
]
_LONG_TO_SHORT = {
    "unix-mask": "a", "enable-shutdown": "A", "port": "p", "unix-socket": "s", "udp-port": "U",
    "memory-limit": "m", "disable-evictions": "M", "conn-limit": "c", "lock-memory": "k",
    "help": "h", "license": "i", "version": "V", "enable-coredumps": "r", "verbose": "v",
    "daemon": "d", "listen": "l", "user": "u", "pidfile": "P", "slab-growth-factor": "f",
    "slab-min-size": "n", "threads": "t", "enable-largepages": "L", "max-reqs-per-event": "R",
    "disable-cas": "C", "listen-backlog": "b", "protocol": "B", "max-item-size": "I",
    "enable-sasl": "S", "disable-flush-all": "F", "disable-dumping": "X", "disable-watch": "W",
    "auth-file": "Y", "memory-file": "e", "extended": "o", "napi-ids": "N", "enable-ssl": "Z",
}

HELP = f"""trio-mc {__version__} (memcached {MEMCACHED_VERSION} protocol)
usage: trio-mc serve [memcached options]
-p, --port=<num>          TCP port to listen on (default: 11211)
-U, --udp-port=<num>      UDP port to bind (default: 0, off; trio-mc does not answer UDP)
-s, --unix-socket=<file>  UNIX socket to listen on (disables network support)
-a, --unix-mask=<mask>    access mask for UNIX socket, in octal (default: 700)
-A, --enable-shutdown     enable ascii "shutdown" command
-l, --listen=<addr>       interface to listen on (default: 127.0.0.1; trio-mc
                          differs from memcached here: use -l 0.0.0.0 to open it)
-d, --daemon              run as a daemon
-u, --user=<user>         assume identity of <username> (only when run as root)
-m, --memory-limit=<num>  item memory in megabytes (default: 64)
-M, --disable-evictions   return error on memory exhausted instead of evicting
-c, --conn-limit=<num>    max simultaneous connections (default: 1024)
-v, --verbose             verbose (print errors/warnings while in event loop)
-vv                       very verbose (also print client commands/responses)
-vvv                      extremely verbose (internal state transitions)
-h, --help                print this help and exit
-V, --version             print version and exit
-P, --pidfile=<file>      save PID in <file> (removed at exit only with -d, as memcached)
-f, --slab-growth-factor=<num> chunk size growth factor (default: 1.25)
-n, --slab-min-size=<bytes> min space used for key+value+flags (default: 48)
-D <char>                 use <char> as the delimiter between key prefixes and IDs
                          (turns on per-prefix stats, see "stats detail")
-t, --threads=<num>       number of worker threads (default: 1, see README)
-R, --max-reqs-per-event  maximum number of requests per event (default: 20)
-C, --disable-cas         disable use of CAS
-b, --listen-backlog=<num> set the backlog queue limit (default: 1024)
-B, --protocol=<name>     protocol - one of ascii, binary, or auto (default: auto-negotiate)
-I, --max-item-size=<num> adjusts max item size (default: 1m, min: 1k, max: 1024m)
-Y, --auth-file=<file>    ASCII authentication: user:pass lines (first command must
                          be "set <any> 0 0 <n>" with "user pass" as its data)
-F, --disable-flush-all   disable flush_all command
-X, --disable-dumping     disable stats cachedump and lru_crawler metadump
-W  --disable-watch       disable watch commands (live logging)
-o, --extended            comma separated list of extended options
   - maxconns_fast, no_maxconns_fast, hashpower=<n>, tail_repair_time=<s>,
     hash_algorithm=<jenkins|murmur3|xxh3>, lru_crawler, no_lru_crawler,
     lru_crawler_sleep=<us>, lru_crawler_tocrawl=<n>, lru_maintainer, no_lru_maintainer,
     hot_lru_pct=<n>, warm_lru_pct=<n>, hot_max_factor=<f>, warm_max_factor=<f>,
     temporary_ttl=<s>, idle_timeout=<s>, slab_chunk_max=<bytes>, slab_reassign,
     no_slab_reassign, slab_automove=<0-2>, no_slab_automove, slab_automove_ratio=<f>,
     slab_automove_window=<n>, watcher_logbuf_size=<kb>, worker_logbuf_size=<kb>,
     track_sizes, no_hashexpand, modern, no_modern, read_buf_mem_limit=<mb>,
     no_chunked_items, (no_)inline_ascii_resp, (no_)drop_privileges, relaxed_privileges
"""


EX_NOUSER = 67
EX_OSERR = 71


class UsageError(Exception):
    """A bad command line: the message is printed on stderr and the process exits with
    ``status`` (memcached: 1 for what its option loop refuses, 64 for its later checks)."""

    def __init__(self, message: str, status: int = 1) -> None:
        super().__init__(message)
        self.status = status


_C_INT = re.compile(r"\s*[-+]?\d*")
_C_FLOAT = re.compile(r"\s*[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


def _atoi(value: str) -> int:
    """C's ``atoi``, which memcached uses for most numbers: the leading digits, else 0
    (``-p abc`` is port 0, ``-m 1g`` is 1 MB)."""
    digits = _C_INT.match(value).group().strip()  # type: ignore[union-attr]
    return int(digits) if digits.lstrip("+-") else 0


def _atof(value: str) -> float:
    """C's ``atof``: the leading number, else 0."""
    m = _C_FLOAT.match(value)
    return float(m.group()) if m else 0.0


def _strtoul(name: str, value: str) -> int:
    """The ``-o`` options that check their number, with memcached's ``safe_strtoul``."""
    number = safe_strtoul(value.encode())
    if number is None:
        raise UsageError(f"could not parse argument to {name}")
    return number


def _int(opt: str, value: str) -> int:
    try:
        return int(value, 10)
    except ValueError:
        raise UsageError(f"option {opt}: '{value}' is not a number") from None


def _float(opt: str, value: str) -> float:
    try:
        return float(value)
    except ValueError:
        raise UsageError(f"option {opt}: '{value}' is not a number") from None


def _size(value: str) -> int:
    """``-I``: bytes, with an optional k/m suffix (any other suffix is ignored, as ``atoi``)."""
    unit = value[-1:].lower()
    if unit in ("k", "m"):
        return _atoi(value[:-1]) * (1024 if unit == "k" else 1024 * 1024)
    return _atoi(value)


#: How memcached words a missing ``-o`` value, where it is not "Missing <name> argument".
_MISSING = {
    "hashpower": "Missing numeric argument for hashpower",
    "tail_repair_time": "Missing numeric argument for tail_repair_time",
    "idle_timeout": "Missing numeric argument for idle_timeout",
    "lru_crawler_sleep": "Missing lru_crawler_sleep value",
    "lru_crawler_tocrawl": "Missing lru_crawler_tocrawl value",
}


def _need(name: str, value: str | None) -> str:
    """An ``-o`` suboption's value, which it must have (``name=`` is an empty value)."""
    if value is None:
        raise UsageError(_MISSING.get(name, f"Missing {name} argument"))
    return value


def _extended(s: Settings, spec: str, chunk_max_set: list[bool]) -> None:
    """``-o a,b=c``: memcached's extended options."""
    for item in spec.split(","):
        if not item:
            continue
        name, eq, text = item.partition("=")
        value = text if eq else None
        need = functools.partial(_need, name, value)

        if name == "maxconns_fast":
            s.maxconns_fast = True
        elif name == "no_maxconns_fast":
            s.maxconns_fast = False
        elif name == "hashpower":
            n = _atoi(need())
            if n < 12:
                raise UsageError(f"Initial hashtable multiplier of {n} is too low")
            if n > 32:
                raise UsageError(f"Initial hashtable multiplier of {n} is too high\n"
                                 'Choose a value based on "STAT hash_power_level" from a running instance')
            s.hashpower_init = n
        elif name == "tail_repair_time":
            n = _atoi(need())
            if n < 10:
                raise UsageError("Cannot set tail_repair_time to less than 10 seconds")
            s.tail_repair_time = n
        elif name == "hash_algorithm":
            algorithm = need()
            if algorithm not in ("jenkins", "murmur3", "xxh3"):
                raise UsageError("Unknown hash_algorithm option (jenkins, murmur3, xxh3)")
            s.hash_algorithm = algorithm
        elif name == "lru_crawler":
            s.lru_crawler = True
        elif name == "no_lru_crawler":
            s.lru_crawler = False
        elif name == "lru_crawler_sleep":
            n = _atoi(need())
            if not 0 <= n <= 1_000_000:
                raise UsageError("LRU crawler sleep must be between 0 and 1 second")
            s.lru_crawler_sleep = n
        elif name == "lru_crawler_tocrawl":
            tocrawl = need()
            if not tocrawl.isdigit() or int(tocrawl) > 0xFFFFFFFF:
                raise UsageError("lru_crawler_tocrawl takes a numeric 32bit value")
            s.lru_crawler_tocrawl = int(tocrawl)
        elif name == "lru_maintainer":
            s.lru_maintainer_thread = s.lru_segmented = True
        elif name == "no_lru_maintainer":
            s.lru_maintainer_thread = s.lru_segmented = False
        elif name in ("hot_lru_pct", "warm_lru_pct"):
            n = _atoi(need())
            if not 1 <= n < 80:
                raise UsageError(f"{name} must be > 1 and < 80")
            setattr(s, name, n)
        elif name in ("hot_max_factor", "warm_max_factor"):
            f = _atof(need())
            if f <= 0:
                raise UsageError(f"{name} must be > 0")
            setattr(s, name, f)
        elif name == "temporary_ttl":
            s.temp_lru = True
            s.temporary_ttl = _atoi(need())
        elif name == "idle_timeout":
            s.idle_timeout = _atoi(need())
        elif name == "slab_chunk_max":
            s.slab_chunk_size_max = _strtoul(name, need())
            chunk_max_set[0] = True
        elif name == "no_chunked_items":
            s.slab_chunk_size_max = 1024 * 1024
        elif name == "slab_reassign":
            s.slab_reassign = True
        elif name == "no_slab_reassign":
            s.slab_reassign = False
        elif name == "slab_automove":
            n = 1 if value is None else _atoi(value)
            if not 0 <= n <= 2:
                raise UsageError("slab_automove must be between 0 and 2")
            s.slab_automove = n
        elif name == "no_slab_automove":
            s.slab_automove = 0
        elif name == "slab_automove_ratio":
            f = _atof(need())
            if not 0 < f <= 1:
                raise UsageError("slab_automove_ratio must be > 0 and < 1")
            s.slab_automove_ratio = f
        elif name == "slab_automove_window":
            n = _atoi(need())
            if n < 3:
                raise UsageError("slab_automove_window must be > 2")
            s.slab_automove_window = n
        elif name == "watcher_logbuf_size":
            s.logger_watcher_buf_size = _strtoul(name, need()) * 1024
        elif name == "worker_logbuf_size":
            s.logger_buf_size = _strtoul(name, need()) * 1024
        elif name == "read_buf_mem_limit":
            s.read_buf_mem_limit = _strtoul(name, need()) * 1024 * 1024
        elif name == "track_sizes":
            s.track_sizes = True
        elif name == "no_modern":
            if not chunk_max_set[0]:
                s.slab_chunk_size_max = 1024 * 1024
            s.slab_reassign = False
            s.slab_automove = 0
            s.maxconns_fast = False
            s.lru_segmented = False
            s.hash_algorithm = "jenkins"
            s.lru_crawler = False
            s.lru_maintainer_thread = False
        elif name == "relaxed_privileges":
            s.debug_commands = True  # memcached's tests pass this debug-build option
        elif name in ("modern", "no_hashexpand", "inline_ascii_resp", "no_inline_ascii_resp",
                      "resp_obj_mem_limit", "slab_sizes", "sock_cookie_id", "drop_privileges",
                      "no_drop_privileges"):
            pass  # accepted for compatibility; nothing to change in trio-mc
        else:
            raise UsageError(f'Illegal suboption "{item}"')


def _getopt(args: list[str]) -> tuple[list[tuple[str, str]], str]:
    """The options up to the first bad one, and glibc's message for that one ("" if none).

    memcached acts on each option as its loop reaches it, so an error in a good option
    before the bad one is the one reported: the good prefix is returned to be applied first.
    """
    try:
        return getopt.gnu_getopt(args, _SHORT, _LONG)[0], ""
    except getopt.GetoptError as exc:
        bad = exc
    opts: list[tuple[str, str]] = []
    for end in range(len(args)):
        try:
            getopt.gnu_getopt(args[:end + 1], _SHORT, _LONG)
        except getopt.GetoptError as exc:
            if (exc.opt, exc.msg) == (bad.opt, bad.msg):  # not an option cut from its value
                opts = getopt.gnu_getopt(args[:end], _SHORT, _LONG)[0]
                break
    opt = bad.opt
    if len(opt) == 1:  # a short option
        if "requires" in bad.msg:
            return opts, f"option requires an argument -- '{opt}'"
        return opts, f"invalid option -- '{opt}'"
    if "requires" in bad.msg:
        return opts, f"option '--{opt}' requires an argument"
    if "must not have" in bad.msg:
        return opts, f"option '--{opt}' doesn't allow an argument"
    if "unique prefix" in bad.msg:
        choices = " ".join(f"'--{name.rstrip('=')}'" for name in _LONG if name.startswith(opt))
        return opts, f"option '--{opt}' is ambiguous; possibilities: {choices}"
    return opts, f"unrecognized option '--{opt}'"


def parse_serve_args(argv: Sequence[str]) -> Settings | str:
    """Parse ``serve`` flags; returns settings, or text to print and exit 0 with (-h, -V)."""
    s = Settings()
    # memcached's --verbose takes an optional level; getopt cannot express that.
    args = []
    for arg in argv:
        if arg.startswith("--verbose="):
            s.verbose = _atoi(arg.split("=", 1)[1])
        else:
            args.append(arg)
    opts, error = _getopt(args)
    # Words that are not options are ignored, as memcached ignores them.
    chunk_max_set = [False]
    unsupported = ""
    listen: list[str] = []
    tcp_specified = udp_specified = False
    for opt, value in opts:
        flag = _LONG_TO_SHORT[opt[2:]] if opt.startswith("--") else opt[1]
        if flag == "h":
            return HELP
        if flag == "V":
            return f"trio-mc {__version__} (memcached {MEMCACHED_VERSION} protocol)\n"
        if flag == "i":
            return "trio-mc is BSD-licensed, as memcached is.\n"
        if flag == "p":
            s.port = _atoi(value)
            tcp_specified = True
        elif flag == "U":
            s.udpport = _atoi(value)  # bound and reported, but UDP requests are not served
            udp_specified = True
        elif flag == "s":
            s.socketpath = value
        elif flag == "a":
            octal = re.match(r"\s*[0-7]*", value).group().strip()  # type: ignore[union-attr]
            s.access = int(octal, 8) if octal else 0  # strtol(..., 8), as memcached
        elif flag == "A":
            s.shutdown_command = True
        elif flag == "l":
            listen.extend(part for part in value.replace(";", ",").split(",") if part)
        elif flag == "m":
            s.maxbytes = _atoi(value) * 1024 * 1024
        elif flag == "M":
            s.evict_to_free = False
        elif flag == "c":
            s.maxconns = _atoi(value)
            if s.maxconns <= 0:
                raise UsageError("Maximum connections must be greater than 0")
        elif flag == "t":
            s.num_threads = _atoi(value)
            if s.num_threads <= 0:
                raise UsageError("Number of threads must be greater than 0")
        elif flag == "R":
            s.reqs_per_event = _atoi(value)
            if s.reqs_per_event <= 0:
                raise UsageError("Number of requests per event must be greater than 0")
        elif flag == "f":
            s.factor = _atof(value)
            if s.factor <= 1.0:
                raise UsageError("Factor must be greater than 1")
        elif flag == "n":
            s.chunk_size = _atoi(value)
            if s.chunk_size <= 0:
                raise UsageError("Chunk size must be greater than 0")
        elif flag == "I":
            s.item_size_max = _size(value)
        elif flag == "b":
            s.backlog = _atoi(value)
        elif flag == "B":
            if value == "auto":
                s.binding_protocol = "auto-negotiate"
            elif value == "ascii":
                s.binding_protocol = "ascii"
            elif value == "binary":
                s.binding_protocol = "binary"
                s.binary_only = True  # a connection that does not start binary is closed
            else:
                raise UsageError(f"Invalid value for binding protocol: {value}\n"
                                 " -- should be one of auto, binary, or ascii", EX_USAGE)
        elif flag == "C":
            s.use_cas = False
        elif flag == "F":
            s.flush_enabled = False
        elif flag == "X":
            s.dump_enabled = False
        elif flag == "W":
            s.watch_enabled = False
        elif flag == "v":
            s.verbose += 1
        elif flag == "u":
            s.username = value
        elif flag == "d":
            s.daemonize = True
        elif flag == "P":
            s.pidfile = value
        elif flag == "D":
            if not value:
                raise UsageError("No delimiter specified")
            s.prefix_delimiter = value[0]  # memcached takes the first character
            s.detail_enabled = True
        elif flag == "o":
            _extended(s, value, chunk_max_set)
        elif flag == "Y":
            if not os.access(value, os.R_OK):
                reason = os.strerror(errno.ENOENT if not os.path.exists(value) else errno.EACCES)
                raise UsageError(f"Could not open authfile [{value}] for reading, error {reason}: {reason}")
            s.auth_file = value
        elif flag in ("k", "r", "L"):
            pass  # memory locking, core dumps, large pages: nothing to do in Python
        else:  # S, e, N, Z: SASL, memory file, NAPI, TLS; refused once all is parsed,
            unsupported = unsupported or opt  # where memcached would set the feature up
    if error:
        raise UsageError(f'trio-mc: {error}\nIllegal argument "?"')
    if listen:
        s.inter = listen
    if udp_specified and s.udpport != 0 and not tcp_specified:
        s.port = s.udpport  # memcached: -U alone moves the TCP port too
    if s.port > 65535 or s.udpport > 65535:
        raise UsageError(f"ERROR: Invalid port number {max(s.port, s.udpport)}.", EX_USAGE)
    _validate(s, chunk_max_set[0])
    if unsupported:
        raise UsageError(f"option {unsupported} is not supported by trio-mc")
    return s


def _validate(s: Settings, chunk_max_set: bool) -> None:
    """memcached's checks after the option loop (they exit 64, EX_USAGE)."""
    if s.item_size_max < 1024:
        raise UsageError("Item max size cannot be less than 1024 bytes.", EX_USAGE)
    if s.hot_lru_pct + s.warm_lru_pct > 80:
        raise UsageError("hot_lru_pct + warm_lru_pct cannot be more than 80% combined", EX_USAGE)
    if s.item_size_max > s.maxbytes // 2:
        raise UsageError("Cannot set item size limit higher than 1/2 of memory max.", EX_USAGE)
    if s.item_size_max > 1024 * 1024 * 1024:
        raise UsageError("Cannot set item size limit higher than a gigabyte.", EX_USAGE)
    if s.item_size_max > 1024 * 1024 and not chunk_max_set:
        s.slab_chunk_size_max = 512 * 1024
    if s.slab_chunk_size_max <= 0:
        raise UsageError("slab_chunk_max must be greater than 0", EX_USAGE)
    if s.slab_chunk_size_max > s.item_size_max:
        raise UsageError(f"slab_chunk_max (bytes: {s.slab_chunk_size_max}) cannot be larger "
                         f"than -I (item_size_max {s.item_size_max})", EX_USAGE)
    if s.item_size_max % s.slab_chunk_size_max:
        raise UsageError(f"-I (item_size_max: {s.item_size_max}) must be evenly divisible by "
                         f"slab_chunk_max (bytes: {s.slab_chunk_size_max})", EX_USAGE)
    if (1024 * 1024) % s.slab_chunk_size_max:
        raise UsageError(f"slab_chunk_max (bytes: {s.slab_chunk_size_max}) must divide evenly "
                         "into 1048576 (slab_page_size)", EX_USAGE)


PROXY_HELP = f"""trio-mc {__version__} proxy (nutcracker 0.5.0 compatible)
usage: trio-mc proxy -c <conf> [options]
-h, --help                print this help and exit
-V, --version             print the version and exit
-t, --test-conf           check the configuration and exit (0 if it is usable)
-d, --daemonize           run as a daemon
-v, --verbose=<N>         log level, 0-11 (default: 5, notice)
-o, --output=<file>       log file (default: stderr)
-c, --conf-file=<file>    pool configuration: TOML (.toml) or nutcracker YAML (.yml, .yaml)
    --pool=<file>         the same
-s, --stats-port=<N>      stats listener port (default: {STATS_PORT})
-a, --stats-addr=<addr>   stats listener address (default: 127.0.0.1; trio-mc
                          differs from nutcracker here: use -a 0.0.0.0 to open it)
-i, --stats-interval=<N>  stats aggregation interval in ms (default: {STATS_INTERVAL})
-p, --pid-file=<file>     write the process id to <file> (removed on exit)
    --reload              check <conf>, then make the proxy whose pid is in the -p file
                          reload its config (trio-mc; the same as sending it SIGUSR1)
-m, --mbuf-size=<N>       accepted for nutcracker's scripts (512-16777216); trio-mc has no mbufs
-T, --threads=<N>         worker threads (trio-mc; default: 1)
"""


def parse_proxy_args(argv: Sequence[str]) -> ProxyArgs | str:
    """Parse ``proxy`` flags (nutcracker's spelling); text to print and exit 0 for -h, -V."""
    try:
        opts, rest = getopt.gnu_getopt(list(argv), "hVtdc:v:o:s:a:i:p:m:T:", [
            "help", "version", "test-conf", "daemonize", "conf-file=", "pool=", "verbose=",
            "output=", "stats-port=", "stats-addr=", "stats-interval=", "pid-file=",
            "mbuf-size=", "threads=", "reload"])
    except getopt.GetoptError as exc:
        raise UsageError(f"trio-mc proxy: {exc.msg}\n{PROXY_HELP}") from exc
    if rest:
        raise UsageError(f"trio-mc proxy: unexpected argument '{rest[0]}'")
    conf, test_conf, reload = "", False, False
    options: dict[str, object] = {}
    stats: dict[str, object] = {}
    for opt, value in opts:
        if opt in ("-h", "--help"):
            return PROXY_HELP
        if opt in ("-V", "--version"):
            return f"This is trio-mc-{__version__} (nutcracker 0.5.0 compatible proxy)\n"
        if opt in ("-t", "--test-conf"):
            test_conf = True
        elif opt == "--reload":
            reload = True
        elif opt in ("-c", "--conf-file", "--pool"):
            conf = value
        elif opt in ("-d", "--daemonize"):
            options["daemonize"] = True
        elif opt in ("-v", "--verbose"):
            level = _int(opt, value)
            if not 0 <= level <= LOG_LEVEL_MAX:
                raise UsageError(f"trio-mc proxy: option -v requires a number between 0 and {LOG_LEVEL_MAX}")
            options["log_level"] = level
        elif opt in ("-o", "--output"):
            options["log_file"] = value
        elif opt in ("-p", "--pid-file"):
            options["pid_file"] = value
        elif opt in ("-s", "--stats-port"):
            port = _int(opt, value)
            if not 1 <= port <= 65535:
                raise UsageError(f"trio-mc proxy: option -s value {port} is not a valid port")
            stats["port"] = port
        elif opt in ("-a", "--stats-addr"):
            stats["host"] = value
        elif opt in ("-i", "--stats-interval"):
            interval = _int(opt, value)
            if interval <= 0:
                raise UsageError(f"trio-mc proxy: option -i value {interval} is not a valid interval")
            stats["interval"] = interval
        elif opt in ("-m", "--mbuf-size"):
            if not 512 <= _int(opt, value) <= 16777216:
                raise UsageError("trio-mc proxy: mbuf chunk size must be between 512 and 16777216 bytes")
        elif opt in ("-T", "--threads"):
            threads = _int(opt, value)
            if threads < 1:
                raise UsageError("trio-mc proxy: number of threads must be greater than 0")
            options["threads"] = threads
    if not conf:
        raise UsageError(f"trio-mc proxy: a configuration file is needed (-c FILE)\n{PROXY_HELP}")
    if reload and "pid_file" not in options:
        raise UsageError("trio-mc proxy: --reload needs the running proxy's pid file (-p FILE)")
    return ProxyArgs(conf, test_conf, reload, ProxyOptions(conf, stats=StatsConfig(**stats), **options))  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class ProxyArgs:
    conf: str
    test_conf: bool
    reload: bool
    options: ProxyOptions


def _proxy_main(parsed: ProxyArgs) -> int:
    if parsed.test_conf or parsed.reload:
        from trio_mc.proxy.config import check

        problems = check(parsed.conf)
        for problem in problems:
            print(problem, file=sys.stderr)
        verdict = "is invalid" if problems else "is ok"
        print(f"trio-mc proxy: configuration file '{parsed.conf}' syntax {verdict}",
              file=sys.stderr if problems else sys.stdout)
        if problems or not parsed.reload:
            return 1 if problems else 0
        from trio_mc.proxy.serve import request_reload

        assert parsed.options.pid_file is not None
        return request_reload(parsed.options.pid_file)
    from trio_mc.proxy.serve import run

    return run(parsed.options)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print("usage: trio-mc serve [memcached options]   (trio-mc serve -h for the options)\n"
              "       trio-mc proxy -c FILE [options]    (trio-mc proxy -h for the options)")
        return 0 if args else EX_USAGE
    if args[0] in ("-V", "--version"):
        print(f"trio-mc {__version__} (memcached {MEMCACHED_VERSION} protocol)")
        return 0
    if args[0] not in ("serve", "proxy"):
        print(f"trio-mc: unknown command '{args[0]}' (expected: serve or proxy)", file=sys.stderr)
        return EX_USAGE
    try:
        parsed = (parse_serve_args if args[0] == "serve" else parse_proxy_args)(args[1:])
    except UsageError as exc:
        print(exc, file=sys.stderr)
        return exc.status
    if isinstance(parsed, str):  # -h, -V
        sys.stdout.write(parsed)
        return 0
    if isinstance(parsed, ProxyArgs):
        return _proxy_main(parsed)
    from trio_mc.server.serve import run

    return run(parsed)
