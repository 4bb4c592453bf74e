"""What a command handler may see of its connection.

A handler is ``handler(command, session, out) -> effect`` (see :mod:`.conn`): it executes one
parsed command, appends its reply bytes to ``out`` and returns ``None`` or an effect for the
connection to apply.  Handlers never see the :class:`~trio_mc.net.conn.Conn` itself, so
the connection's state machine stays in one place and no command can put it in a state it
does not expect.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from trio_mc.settings import response_budget

if TYPE_CHECKING:
    from trio_mc.server.state import ServerState
    from trio_mc.server.thread_stats import ThreadStats


class Session:
    """One connection as its commands see it: the server it belongs to, its descriptor
    (for log lines) and its worker's counters; nothing of its socket or state machine."""

    __slots__ = ("server", "store", "settings", "tstats", "fd", "budget")

    def __init__(self, server: ServerState, tstats: ThreadStats, fd: int) -> None:
        self.server = server
        self.store = server.store
        self.settings = server.settings
        self.tstats = tstats
        self.fd = fd
        #: ``-o read_buf_mem_limit`` as a count of replies one batch may hold (0: none).
        self.budget = response_budget(server.settings)
