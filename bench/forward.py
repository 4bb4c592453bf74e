#!/usr/bin/env python3
"""The proxy floor: a Trio forwarder giving each client its own backend connection (issue 8).

No parsing: whatever a client sends goes to its own backend connection, whatever comes
back goes to the client, one task per direction, each read (up to 64 KiB) passed on with
one send.  So nothing is batched across clients and nothing is hashed or split: it is the
least a proxy built on trio-mc's Trio model (non-blocking stdlib sockets, Trio waiting for
readiness, as in bench/floor.py) pays per request, and the naive design issue 8's targets
must beat.  bench/proxy.py reports forwarder / nutcracker next to trio-mc / nutcracker.
Standard library + trio only.
"""

from __future__ import annotations

import argparse
import socket

import trio
from floor import READ_SIZE, accept_forever, send_all


async def pump(src: socket.socket, dst: socket.socket, both: trio.CancelScope) -> None:
    """src -> dst until src ends; then end dst's sending side (the other pump goes on).

    A socket error (a reset) ends both directions: the connection pair is gone.
    """
    try:
        while True:
            await trio.lowlevel.wait_readable(src)
            try:
                data = src.recv(READ_SIZE)
            except BlockingIOError:
                continue
            if not data:
                dst.shutdown(socket.SHUT_WR)
                return
            await send_all(dst, data)
    except OSError:
        both.cancel()


async def forward_conn(client: socket.socket, backend: tuple[str, int]) -> None:
    """One client: open its backend connection, pump both ways until both sides end."""
    server = socket.socket()
    server.setblocking(False)
    try:
        try:
            server.connect(backend)
        except BlockingIOError:
            await trio.lowlevel.wait_writable(server)
        server.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(pump, client, server, nursery.cancel_scope)
            nursery.start_soon(pump, server, client, nursery.cancel_scope)
    except OSError:
        pass  # the backend refused: the client's connection is closed below
    finally:
        for sock in (client, server):
            trio.lowlevel.notify_closing(sock)
            sock.close()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("-l", "--listen", default="127.0.0.1", help="address (127.0.0.1)")
    p.add_argument("-p", "--port", type=int, default=22121, help="TCP port (22121)")
    p.add_argument("-b", "--backend", default="127.0.0.1:11211",
                   help="the server every client is forwarded to, HOST:PORT (127.0.0.1:11211)")
    args = p.parse_args()
    host, _, port = args.backend.rpartition(":")
    trio.run(accept_forever, args.listen, args.port,
             lambda sock: forward_conn(sock, (host, int(port))))


if __name__ == "__main__":
    main()
