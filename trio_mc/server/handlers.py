"""The server's dispatch table, built in one place: command type -> handler.

One module per protocol family holds its handlers (:mod:`.text`, :mod:`.meta`,
:mod:`.binary`, :mod:`.admin`); a connection of ``trio-mc serve`` runs every command through
this table with a :class:`~trio_mc.server.session.Session` of its own.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

from trio_mc.net.conn import Conn, ConnGroup, Effect, Out
from trio_mc.net.transport import Transport
from trio_mc.server import admin, binary, meta, text
from trio_mc.server.session import Session
from trio_mc.server.state import ServerState
from trio_mc.server.thread_stats import ThreadStats

HANDLERS: dict[type, Callable[[Any, Session, Out], Effect]] = {
    **text.HANDLERS, **meta.HANDLERS, **binary.HANDLERS, **admin.HANDLERS,
}


def open_conn(server: ServerState, transport: Transport, group: ConnGroup, *, fd: int, addr: str,
              listen_addr: str) -> Conn:
    """A cache-server connection: the memcached protocols with this server's handlers."""
    tstats = cast(ThreadStats, group.tstats)  # the server's groups count into its ThreadStats
    return Conn(transport, group, HANDLERS, Session(server, tstats, fd),
                fd=fd, addr=addr, listen_addr=listen_addr)
