"""``watch``: memcached's live log stream of fetches, stores, evictions and connections.

A watcher is a connection that asked for a log stream.  Events are formatted once, pushed
into every interested watcher's bounded buffer (``-o watcher_logbuf_size``) from whichever
thread produced them, and the watcher's own task writes them out.  When a slow watcher's
buffer is full, lines are dropped and counted; the next line it gets is ``skipped=N``, as
memcached does.  With no watchers the only cost at a log point is one truth test.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable

import trio

_SAFE = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")


def uriencode(key: bytes) -> bytes:
    """memcached's key encoding in log lines: unreserved bytes as-is, the rest %XX."""
    return b"".join(bytes((c,)) if c in _SAFE else b"%%%02X" % c for c in key)


class Watcher:
    """One watching connection: what it wants and what waits to be written to it."""

    def __init__(self, kinds: frozenset[bytes], limit: int) -> None:
        self.kinds = kinds
        self.limit = limit
        self.lines: deque[bytes] = deque()
        self.size = 0
        self.skipped = 0
        self._token = trio.lowlevel.current_trio_token()
        self._ready = trio.Event()
        self._wake_pending = False

    def push(self, line: bytes) -> None:
        """Queue a line (logger lock held; any thread)."""
        if self.size + len(line) > self.limit:
            self.skipped += 1
            return
        if self.skipped:
            note = b"skipped=%d\n" % self.skipped
            self.lines.append(note)
            self.size += len(note)
            self.skipped = 0
        self.lines.append(line)
        self.size += len(line)
        if not self._wake_pending:
            self._wake_pending = True
            try:
                self._token.run_sync_soon(self._ready.set)
            except trio.RunFinishedError:
                pass


class Logger:
    """Routes log events to watchers; shared by every worker thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._watchers: list[Watcher] = []
        self._gid = itertools.count(1)
        #: The kinds some watcher wants: the only thing a log point checks.
        self.kinds: frozenset[bytes] = frozenset()
        self.fetchers = False  # b"fetchers" in kinds, for the get fast path

    @property
    def watchers(self) -> int:
        """``log_watchers``."""
        return len(self._watchers)

    def _update(self) -> None:
        self.kinds = frozenset().union(*(w.kinds for w in self._watchers))
        self.fetchers = b"fetchers" in self.kinds

    def log(self, kind: bytes, body: bytes) -> None:
        """Send ``type=... `` text to every watcher of ``kind``."""
        now = time.time()
        with self._lock:
            line = b"ts=%d.%d gid=%d %b\n" % (int(now), int(now % 1 * 1_000_000), next(self._gid), body)
            for watcher in self._watchers:
                if kind in watcher.kinds:
                    watcher.push(line)

    async def stream(self, watcher: Watcher, send: Callable[[bytes], Awaitable[None]]) -> None:
        """Write a watcher's lines until its connection fails (runs in its own task)."""
        with self._lock:
            self._watchers.append(watcher)
            self._update()
        try:
            while True:
                await watcher._ready.wait()
                with self._lock:
                    watcher._ready = trio.Event()
                    watcher._wake_pending = False
                    batch = b"".join(watcher.lines)
                    watcher.lines.clear()
                    watcher.size = 0
                await send(batch)
        finally:
            with self._lock:
                self._watchers.remove(watcher)
                self._update()
