"""The store's clock: memcached's ``current_time``, in whole seconds.

memcached keeps a relative clock (``rel_time_t``) that starts a little after zero and ticks in
whole seconds; item times and expiries are stored in it, and absolute Unix exptimes are
converted using ``process_started``.  The store takes its clock by injection because each
``trio.run`` has its own time base: worker threads would disagree on ``trio.current_time()``,
and tests need to move time by hand (or with Trio's ``MockClock`` in a single loop).
"""

from __future__ import annotations

import time
from collections.abc import Callable

#: memcached starts ``process_started`` this many seconds in the past
#: (ITEM_UPDATE_INTERVAL + 2), so ``current_time`` is never 0 and exptime 1 means "expired".
START_OFFSET = 62


class Clock:
    """Relative server time from any monotonic source.

    Args:
      source: a monotonic clock in seconds (``time.monotonic`` in production,
        ``trio.current_time`` in a single-loop test under ``MockClock``).
      wall: the Unix time now, used once to anchor absolute exptimes.
    """

    __slots__ = ("_source", "_base", "process_started")

    def __init__(
        self,
        source: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self._source = source
        self._base = source() - START_OFFSET  # now() starts at START_OFFSET
        self.process_started = int(wall()) - START_OFFSET

    def now(self) -> int:
        """memcached's ``current_time``: whole seconds since ``process_started``."""
        return int(self._source() - self._base)

    def shift(self, seconds: int) -> None:
        """Move server time forward (memcached's debug ``debugtime`` command)."""
        self._base -= seconds


class ManualClock(Clock):
    """A clock that only moves when told to; shared safely by threads in tests."""

    __slots__ = ("_offset",)

    def __init__(self, wall: float = 1_700_000_000.0) -> None:
        self._offset = 0.0
        super().__init__(source=lambda: self._offset, wall=lambda: wall)

    def advance(self, seconds: float) -> None:
        self._offset += seconds
