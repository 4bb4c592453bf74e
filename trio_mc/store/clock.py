"""The store's clock: memcached's ``current_time``, in whole seconds, read from a variable.

memcached keeps a relative clock (``rel_time_t``) that starts a little after zero and ticks in
whole seconds; item times and expiries are stored in it, and absolute Unix exptimes are
converted using ``process_started``.  The store takes its clock by injection because each
``trio.run`` has its own time base: worker threads would disagree on ``trio.current_time()``,
and tests need to move time by hand (or with Trio's ``MockClock`` in a single loop).

Like memcached's ``current_time`` (set by a timer once a second, read by every command), the
time is a coarse variable, :attr:`Clock.current`, so a command pays an attribute read, not a
clock call.  The rule of who moves it:

- :meth:`Clock.tick` recomputes ``current`` from the source.  The server's connection loop
  ticks once per read, before it executes the commands of that read; the idle sweeper and
  the background maintainer tick once per pass (``Store.maintain`` and
  ``Store.reclaim_step`` tick themselves: they run on a timer, with no read before them).
- :meth:`Clock.shift` (``debugtime``) and :meth:`ManualClock.advance` tick.
- Every other store operation reads ``current`` and never ticks.  A test that drives a store
  directly with a moving source (``Clock(source=trio.current_time)`` under ``MockClock``) calls
  ``tick()`` after moving time; ``ManualClock`` needs nothing.
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

    __slots__ = ("_source", "_base", "process_started", "current")

    def __init__(
        self,
        source: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self._source = source
        self._base = source() - START_OFFSET  # current starts at START_OFFSET
        self.process_started = int(wall()) - START_OFFSET
        #: memcached's ``current_time``: whole seconds since ``process_started``, as of the
        #: last :meth:`tick`.
        self.current = START_OFFSET

    def tick(self) -> int:
        """Bring :attr:`current` up to the source's time, and return it."""
        self.current = now = int(self._source() - self._base)
        return now

    def shift(self, seconds: int) -> None:
        """Move server time forward (memcached's debug ``debugtime`` command)."""
        self._base -= seconds
        self.tick()


class ManualClock(Clock):
    """A clock that only moves when told to; shared safely by threads in tests."""

    __slots__ = ("_offset",)

    def __init__(self, wall: float = 1_700_000_000.0) -> None:
        self._offset = 0.0
        super().__init__(source=lambda: self._offset, wall=lambda: wall)

    def advance(self, seconds: float) -> None:
        self._offset += seconds
        self.tick()
