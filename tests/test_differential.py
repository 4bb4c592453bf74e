"""Differential tests: trio-mc must answer byte for byte like memcached 1.6.18.

Every session in ``tests/diff_corpus/*.txt`` is sent to a real memcached and
to trio-mc (concurrently); the reply bytes of every connection, and whether
the server closed it, must be identical.  memcached is the truth -- the corpus
holds no expected output.

Run::

    python -m pytest tests/test_differential.py -q
    TRIO_MC_DIFF_PEER=memcached python -m pytest tests/test_differential.py -q

The second form replaces trio-mc by a second real memcached: it proves that
the corpus and the harness are deterministic (every session must pass).

Both servers run with ``-o no_lru_crawler,no_lru_maintainer`` (makes the
in-place incr/decr padding exact) plus the corpus file's ``@flags``.  One
fresh pair of servers per corpus file; sessions of a file run in file order
on that pair, so CAS numbers stay comparable (both servers see the same
commands in the same order).  ``@fresh`` restarts the pair before a session.

Corpus format (one file = one server configuration)::

    # comment (whole line)
    @flags -C -I 2k             file header, before the first session: extra
                                server flags; an ``-o a,b`` is merged into the
                                base ``-o`` list
    === session-name            starts a session (name unique within the file)
    @fresh                      restart both servers before this session
    @pause 0.15                 pause after each chunk (default 5 ms); for
                                sessions whose outcome depends on chunks
                                arriving separately (2048-byte line limit)
    @mask <regex>               bytes regex; matches are replaced by <MASKED>
                                in both replies before comparing (explicit,
                                per session)
    > text                      one chunk, sent on connection 1
    + text                      appended to the previous chunk (same send)
    2> text                     one chunk sent on connection 2 (1..9)

Only the single space after the marker is dropped; the rest of the line is
the chunk text, with escapes: ``\\r \\n \\t \\0 \\s`` (space) ``\\\\``
``\\xNN``, and ``<<N*text>>`` = ``text`` (escapes allowed) repeated N times.
Nothing else is added: a command needs an explicit ``\\r\\n``.

Each chunk is a separate write (TCP_NODELAY) followed by a short pause, so
commands split across packets are exercised.  After the last chunk the
runner reads until every connection was quiet for ``QUIET`` seconds or was
closed by the server.
"""

from __future__ import annotations

import difflib
import os
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import trio

try:
    from procs import ServerProcess, ServerStartError, start_memcached, start_trio_mc
except ImportError:  # tests/ imported as a package
    from tests.procs import ServerProcess, ServerStartError, start_memcached, start_trio_mc

CORPUS_DIR = Path(__file__).resolve().parent / "diff_corpus"
BASE_OPTS = ["no_lru_crawler", "no_lru_maintainer"]
PEER = os.environ.get("TRIO_MC_DIFF_PEER", "trio_mc").replace("-", "_")  # or "memcached"
if PEER not in ("trio_mc", "memcached"):
    raise RuntimeError(f"TRIO_MC_DIFF_PEER must be trio_mc or memcached, not {PEER!r}")

CHUNK_PAUSE = 0.005  # between chunks on the same connection
SWITCH_PAUSE = 0.05  # before a chunk on another connection than the previous one
QUIET = 0.15  # reply complete after this long without bytes
SLOW_GRACE = 2.0  # extra wait for a side whose reply is a strict prefix of the other's
SWITCH_WAIT_MAX = 0.3  # bound on waiting for an answer before switching connections
SESSION_TIMEOUT = 15.0  # hard bound for one session on one server
MAX_SHOWN = 1500  # bytes of a reply shown in full in a failure message


# ---------------------------------------------------------------- corpus

class CorpusError(ValueError):
    pass


@dataclass
class Chunk:
    conn: int
    data: bytes


@dataclass
class Session:
    file: str
    name: str
    line: int
    chunks: list[Chunk] = field(default_factory=list)
    masks: list[re.Pattern] = field(default_factory=list)
    fresh: bool = False
    pause: float = CHUNK_PAUSE
    flags: tuple[str, ...] = ()

    @property
    def id(self) -> str:
        return f"{Path(self.file).stem}.{self.name}"

    @property
    def conns(self) -> list[int]:
        return sorted({c.conn for c in self.chunks})


_TOKEN = re.compile(
    r"<<(?P<n>\d+)\*(?P<rep>(?:(?!>>).)*)>>"
    r"|\\x(?P<hex>[0-9a-fA-F]{2})"
    r"|\\(?P<esc>.)"
    r"|(?P<lit>[^\\<]+|<)",
    re.S,
)
_ESCAPES = {"r": b"\r", "n": b"\n", "t": b"\t", "0": b"\0", "s": b" ", "\\": b"\\"}


def decode_chunk(text: str) -> bytes:
    """Decode chunk text (escapes and <<N*text>> repetitions) to bytes."""
    out = bytearray()
    pos = 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:
            raise CorpusError(f"cannot decode {text[pos:pos + 20]!r}")
        if m.group("n") is not None:
            out += decode_chunk(m.group("rep")) * int(m.group("n"))
        elif m.group("hex") is not None:
            out.append(int(m.group("hex"), 16))
        elif m.group("esc") is not None:
            esc = m.group("esc")
            if esc not in _ESCAPES:
                raise CorpusError(f"unknown escape \\{esc}")
            out += _ESCAPES[esc]
        else:
            out += m.group("lit").encode("utf-8")
        pos = m.end()
    return bytes(out)


_CHUNK_LINE = re.compile(r"^(?P<conn>[1-9]?)>")


def parse_corpus(path: Path) -> list[Session]:
    sessions: list[Session] = []
    flags: tuple[str, ...] = ()
    cur: Session | None = None
    names: set[str] = set()
    for lineno, raw in enumerate(path.read_text("utf-8").splitlines(), 1):
        where = f"{path.name}:{lineno}"
        try:
            if not raw.strip() or raw.startswith("#"):
                continue
            if raw.startswith("==="):
                name = raw[3:].strip()
                if not re.fullmatch(r"[A-Za-z0-9_.\-]+", name) or name in names:
                    raise CorpusError(f"bad or duplicate session name {name!r}")
                names.add(name)
                cur = Session(str(path), name, lineno, flags=flags)
                sessions.append(cur)
                continue
            if raw.startswith("@flags"):
                if sessions:
                    raise CorpusError("@flags must come before the first session")
                flags = tuple(shlex.split(raw[len("@flags"):]))
                continue
            if cur is None:
                raise CorpusError("line outside of a session")
            if raw.startswith("@fresh"):
                cur.fresh = True
            elif raw.startswith("@pause "):
                cur.pause = float(raw[len("@pause "):])
                if not 0 <= cur.pause <= 1:
                    raise CorpusError("@pause must be between 0 and 1 second")
            elif raw.startswith("@mask "):
                cur.masks.append(re.compile(raw[len("@mask "):].encode("utf-8")))
            elif raw.startswith("+"):
                if not cur.chunks:
                    raise CorpusError("'+' line without a chunk to continue")
                text = raw[2:] if raw.startswith("+ ") else raw[1:]
                cur.chunks[-1].data += decode_chunk(text)
            elif m := _CHUNK_LINE.match(raw):
                text = raw[raw.index(">") + 1:]
                if text.startswith(" "):
                    text = text[1:]
                cur.chunks.append(Chunk(int(m.group("conn") or 1), decode_chunk(text)))
            else:
                raise CorpusError(f"cannot parse line {raw!r}")
        except CorpusError as e:
            raise CorpusError(f"{where}: {e}") from None
    for s in sessions:
        if not s.chunks:
            raise CorpusError(f"{path.name}:{s.line}: session {s.name} sends nothing")
    return sessions


def load_corpus() -> list[Session]:
    out: list[Session] = []
    for path in sorted(CORPUS_DIR.glob("*.txt")):
        out.extend(parse_corpus(path))
    return out


SESSIONS = load_corpus()


# ---------------------------------------------------------------- runner

@dataclass
class ConnReply:
    data: bytes = b""
    closed: bool = False  # server closed (EOF or reset)
    timed_out: bool = False  # still sending at SESSION_TIMEOUT


class Progress:
    """Live state of one side of a session (read by the other side's runner)."""

    def __init__(self, conns: list[int]) -> None:
        self.bufs = {c: bytearray() for c in conns}
        self.closed = {c: False for c in conns}
        self.last_activity = trio.current_time()
        self.sending = True

    def quiet(self) -> bool:
        """Everything sent, and no byte for QUIET seconds (or all closed)."""
        return not self.sending and (
            all(self.closed.values()) or trio.current_time() - self.last_activity >= QUIET)

    def lags_behind(self, other: "Progress") -> bool:
        """True if some connection has a strict prefix of ``other``'s reply,
        or the same reply while ``other``'s connection was closed."""
        for c, buf in self.bufs.items():
            theirs = other.bufs[c]
            if self.closed[c]:
                continue
            if len(buf) < len(theirs) and theirs.startswith(buf):
                return True
            if other.closed[c] and buf == theirs:
                return True
        return False

    def result(self, timed_out: bool) -> dict[int, ConnReply]:
        return {c: ConnReply(bytes(b), self.closed[c], timed_out) for c, b in self.bufs.items()}


async def run_session(port: int, session: Session, me: Progress | None = None,
                      other: Progress | None = None) -> dict[int, ConnReply]:
    """Play ``session`` against 127.0.0.1:port; return the replies per connection.

    Chunks are sent in order, each followed by ``session.pause``.  Before a
    chunk on another connection than the previous one, the runner waits
    (bounded) until the previous connection answered, so the server has
    applied it, then ``SWITCH_PAUSE``.

    The reply is complete when nothing arrived for ``QUIET`` seconds (or all
    connections were closed).  When ``other`` -- the other server's progress
    in a concurrent run -- is given, this side also waits for ``other`` to go
    quiet and, for up to ``SLOW_GRACE`` more seconds, while its own reply is a
    strict prefix of the other's: a server stalled by a loaded machine gets
    time to finish instead of failing on timing.  It never changes what is
    compared.
    """
    me = me or Progress(session.conns)
    streams: dict[int, trio.SocketStream] = {}

    async def reader(conn: int, stream: trio.SocketStream) -> None:
        while True:
            try:
                data = await stream.receive_some(1 << 16)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                data = b""
            if not data:
                me.closed[conn] = True
                me.last_activity = trio.current_time()
                return
            me.bufs[conn] += data
            me.last_activity = trio.current_time()

    async def wait_for_answer(conn: int, before: int) -> None:
        deadline = trio.current_time() + SWITCH_WAIT_MAX
        while (len(me.bufs[conn]) == before and not me.closed[conn]
               and trio.current_time() < deadline):
            await trio.sleep(0.005)

    def finished(quiet_since: float) -> bool:
        if not me.quiet():
            return False
        if other is None:
            return True
        if trio.current_time() - quiet_since >= SLOW_GRACE:
            return True
        return other.quiet() and not me.lags_behind(other)

    timed_out = False
    try:
        with trio.move_on_after(SESSION_TIMEOUT) as scope:
            for c in session.conns:
                streams[c] = await trio.open_tcp_stream("127.0.0.1", port)
            async with trio.open_nursery() as nursery:
                for c, st in streams.items():
                    nursery.start_soon(reader, c, st)
                prev: tuple[int, int] | None = None  # (conn, reply length before its send)
                for chunk in session.chunks:
                    if prev is not None and chunk.conn != prev[0]:
                        await wait_for_answer(*prev)
                        await trio.sleep(SWITCH_PAUSE)
                    prev = (chunk.conn, len(me.bufs[chunk.conn]))
                    if not me.closed[chunk.conn]:
                        try:
                            await streams[chunk.conn].send_all(chunk.data)
                        except (trio.BrokenResourceError, trio.ClosedResourceError):
                            pass  # the reader records the close
                    me.last_activity = trio.current_time()
                    await trio.sleep(session.pause)
                me.sending = False
                quiet_since: float | None = None
                while True:
                    if me.quiet():
                        if quiet_since is None:
                            quiet_since = trio.current_time()
                        if finished(quiet_since):
                            break
                    else:
                        quiet_since = None
                    await trio.sleep(0.01)
                nursery.cancel_scope.cancel()
        timed_out = scope.cancelled_caught
    finally:
        me.sending = False
        for st in streams.values():
            await st.aclose()
    return me.result(timed_out)


# ---------------------------------------------------------------- servers

def _server_args(flags: tuple[str, ...]) -> list[str]:
    """Base ``-o`` options merged with the file's flags (one ``-o`` only)."""
    opts = list(BASE_OPTS)
    rest: list[str] = []
    it = iter(flags)
    for a in it:
        if a == "-o":
            opts.extend(x for x in next(it).split(",") if x)
        elif a.startswith("-o"):
            opts.extend(x for x in a[2:].split(",") if x)
        else:
            rest.append(a)
    return [*rest, "-o", ",".join(opts)]


class ServerPool:
    """Holds one memcached + peer pair for the corpus file being run.

    Replaced pairs are only sent SIGTERM and reaped later (memcached takes up
    to a second to notice SIGTERM); ``close()`` stops everything.
    """

    def __init__(self) -> None:
        self.key: tuple | None = None
        self.pair: tuple[ServerProcess, ServerProcess] | None = None
        self.retired: list[ServerProcess] = []
        self.start_errors: dict[tuple[str, ...], ServerStartError] = {}

    def get(self, session: Session) -> tuple[ServerProcess, ServerProcess]:
        key = (session.file, session.flags)
        dead = self.pair is not None and any(p.proc.poll() is not None for p in self.pair)
        if self.pair is None or key != self.key or session.fresh or dead:
            self._retire()
            if session.flags in self.start_errors:  # don't retry for every session
                first = self.start_errors[session.flags]
                raise ServerStartError(f"(earlier start failed, not retried) {first}",
                                       first.exited) from None
            args = _server_args(session.flags)
            try:
                ref = start_memcached(*args)
                try:
                    # trio-mc's own default is one worker thread (see README); give it
                    # memcached's four so `stats settings` compares like for like.
                    peer = start_memcached(*args) if PEER == "memcached" else start_trio_mc("-t", "4", *args)
                except BaseException:
                    ref.close()
                    raise
            except ServerStartError as e:
                self.start_errors[session.flags] = e
                raise
            self.pair, self.key = (ref, peer), key
        return self.pair

    def _retire(self) -> None:
        if self.pair is not None:
            for p in self.pair:
                p.terminate()
            self.retired.extend(self.pair)
            self.pair = self.key = None
        still = []
        for p in self.retired:
            if p.proc is not None and p.proc.poll() is None:
                still.append(p)
            else:
                p.close()
        self.retired = still

    def close(self) -> None:
        self._retire()
        for p in self.retired:
            p.close()
        self.retired = []


@pytest.fixture(scope="module")
def server_pool():
    pool = ServerPool()
    try:
        yield pool
    finally:
        pool.close()


# ---------------------------------------------------------------- compare

def _apply_masks(data: bytes, masks: list[re.Pattern]) -> bytes:
    for m in masks:
        data = m.sub(b"<MASKED>", data)
    return data


def _show(data: bytes) -> str:
    if len(data) <= MAX_SHOWN:
        return repr(data)
    return f"{data[:MAX_SHOWN // 2]!r} ...[{len(data)} bytes]... {data[-MAX_SHOWN // 4:]!r}"


def describe_diff(session: Session, ref: dict[int, ConnReply], got: dict[int, ConnReply]) -> str:
    lines = [f"session {session.id} ({Path(session.file).name}:{session.line}), "
             f"peer={PEER}: replies differ"]
    for c in session.conns:
        a, b = ref[c], got[c]
        if (a.data, a.closed, a.timed_out) == (b.data, b.closed, b.timed_out):
            continue
        lines.append(f"-- connection {c}:")
        if a.closed != b.closed:
            lines.append(f"   closed by server: memcached={a.closed} {PEER}={b.closed}")
        if a.timed_out or b.timed_out:
            lines.append(f"   timed out: memcached={a.timed_out} {PEER}={b.timed_out}")
        if a.data != b.data:
            i = next((k for k in range(min(len(a.data), len(b.data))) if a.data[k] != b.data[k]),
                     min(len(a.data), len(b.data)))
            lo = max(0, i - 60)
            lines.append(f"   first difference at byte {i} "
                         f"(lengths memcached={len(a.data)} {PEER}={len(b.data)})")
            lines.append(f"   memcached: ...{a.data[lo:i + 80]!r}")
            lines.append(f"   {PEER:9}: ...{b.data[lo:i + 80]!r}")
            diff = list(difflib.unified_diff(
                [repr(x) for x in a.data.split(b"\r\n")], [repr(x) for x in b.data.split(b"\r\n")],
                "memcached", PEER, lineterm="", n=1))
            if diff:
                lines.append("   line diff (split on \\r\\n):")
                lines.extend(f"     {d[:200]}" for d in diff[:40])
                if len(diff) > 40:
                    lines.append(f"     ... {len(diff) - 40} more diff lines")
            lines.append(f"   memcached full: {_show(a.data)}")
            lines.append(f"   {PEER:9} full: {_show(b.data)}")
    return "\n".join(lines)


async def run_pair(session: Session, ref_port: int, peer_port: int):
    """Play ``session`` against both servers concurrently; (ref, peer) replies."""
    progress = {"ref": Progress(session.conns), "peer": Progress(session.conns)}
    results: dict[str, dict[int, ConnReply]] = {}

    async def play(label: str, port: int) -> None:
        other = progress["peer" if label == "ref" else "ref"]
        results[label] = await run_session(port, session, progress[label], other)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(play, "ref", ref_port)
        nursery.start_soon(play, "peer", peer_port)
    return results["ref"], results["peer"]


@pytest.fixture
def servers(request, server_pool: ServerPool) -> tuple[ServerProcess, ServerProcess]:
    """The (memcached, peer) pair for this test's session (started lazily)."""
    return server_pool.get(request.node.callspec.params["session"])


@pytest.mark.parametrize("session", SESSIONS, ids=[s.id for s in SESSIONS])
def test_differential(session: Session, servers: tuple[ServerProcess, ServerProcess]):
    ref_srv, peer_srv = servers
    # a plain sync test running its own event loop: clean tracebacks
    ref, got = trio.run(run_pair, session, ref_srv.port, peer_srv.port)
    for r in (*ref.values(), *got.values()):
        r.data = _apply_masks(r.data, session.masks)
    assert not any(r.timed_out for r in ref.values()), (
        f"memcached itself did not finish session {session.id} in {SESSION_TIMEOUT}s")
    same = all((ref[c].data, ref[c].closed, ref[c].timed_out)
               == (got[c].data, got[c].closed, got[c].timed_out) for c in session.conns)
    msg = describe_diff(session, ref, got) if not same else ""
    if peer_srv.proc.poll() is not None:
        msg += (f"\n{PEER} exited (code {peer_srv.proc.returncode}) during this session; "
                f"output tail:\n{peer_srv.output()[-3000:]}")
    assert same and peer_srv.proc.poll() is None, msg


def test_corpus_is_not_empty():
    files = {Path(s.file).name for s in SESSIONS}
    assert "meta.txt" in files and len(SESSIONS) > 50, files


def test_decode_chunk():
    assert decode_chunk(r"set a 0 0 1\r\nx\0\x41\s\\<<3*ab>>\r\n<x") == \
        b"set a 0 0 1\r\nx\0A \\ababab\r\n<x"
    with pytest.raises(CorpusError):
        decode_chunk(r"\q")
