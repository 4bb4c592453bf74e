#!/usr/bin/env python3
"""The floor: the least a server built on trio-mc's Trio model can do (issue 7).

One Trio task per connection; the socket is read and written with plain non-blocking
stdlib calls and Trio only waits for readiness, as trio-mc's ``SocketTransport`` does.
Every complete line of a read is split into words; each key of a ``get`` is answered with
one VALUE block of a fixed ``-s``-byte value, then END; a storage command's data block is
swallowed and answered STORED; a read's replies go out in one send.  It stores nothing,
so whatever trio-mc spends above it is trio-mc's own per-command work: bench/run.py
reports trio-mc / floor for every workload.  Standard library + trio only.
"""

from __future__ import annotations

import argparse
import functools
import signal
import socket
from collections.abc import Awaitable, Callable

import trio

READ_SIZE = 65536  # as trio_mc.net.conn: one read takes a whole pipelined batch
MAX_LINE = 2048  # an unfinished line longer than this closes the connection (a bound)
STORAGE = frozenset((b"set", b"add", b"replace", b"append", b"prepend", b"cas"))


async def send_all(sock: socket.socket, data: bytes) -> None:
    """Send now; park in Trio only while the kernel's send buffer is full."""
    view = memoryview(data)
    while view:
        try:
            view = view[sock.send(view):]
        except BlockingIOError:
            await trio.lowlevel.wait_writable(sock)


async def serve_conn(sock: socket.socket, *, value_block: bytes) -> None:
    """One connection: read, answer every complete line of the read, one send."""
    pending = b""  # the unfinished line at the end of the previous read
    swallow = 0  # bytes of a data block (with its \r\n) still to discard
    try:
        while True:
            await trio.lowlevel.wait_readable(sock)
            try:
                data = sock.recv(READ_SIZE)
            except BlockingIOError:
                continue
            if not data:
                return
            buf = pending + data if pending else data
            pos, end = 0, len(buf)
            out: list[bytes] = []
            while pos < end:
                if swallow:
                    step = min(swallow, end - pos)
                    pos += step
                    swallow -= step
                    continue
                nl = buf.find(b"\n", pos)
                if nl < 0:
                    break
                words = buf[pos:nl].split()
                pos = nl + 1
                cmd = words[0] if words else b""
                if cmd == b"get":
                    for key in words[1:]:
                        out += (b"VALUE ", key, value_block)
                    out.append(b"END\r\n")
                elif cmd in STORAGE and len(words) >= 5 and words[4].isdigit():
                    swallow = int(words[4]) + 2
                    if words[-1] != b"noreply":
                        out.append(b"STORED\r\n")
                elif cmd == b"version":
                    out.append(b"VERSION floor\r\n")
                else:
                    out.append(b"ERROR\r\n")
            pending = buf[pos:]
            if len(pending) > MAX_LINE:
                return
            if out:
                await send_all(sock, b"".join(out))
    except OSError:
        pass  # the client reset the connection
    finally:
        trio.lowlevel.notify_closing(sock)
        sock.close()


async def accept_forever(host: str, port: int,
                         handler: Callable[[socket.socket], Awaitable[None]]) -> None:
    """Accept until SIGTERM/SIGINT (one handler task per connection), then cancel all.

    The connection reaches handler as a non-blocking stdlib socket with TCP_NODELAY, as
    trio-mc's transports use it; bench/forward.py shares this loop.
    """
    listener = trio.socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    await listener.bind((host, port))
    listener.listen(1024)
    with listener, trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with trio.open_nursery() as nursery:
            async def stop_on_signal() -> None:
                async for _ in signals:
                    nursery.cancel_scope.cancel()

            nursery.start_soon(stop_on_signal)
            while True:
                tsock, _ = await listener.accept()
                sock = socket.socket(fileno=tsock.detach())
                sock.setblocking(False)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                nursery.start_soon(handler, sock)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("-l", "--listen", default="127.0.0.1", help="address (127.0.0.1)")
    p.add_argument("-p", "--port", type=int, default=11211, help="TCP port (11211)")
    p.add_argument("-s", "--value-size", type=int, default=100,
                   help="bytes of the value every get key is answered with (100)")
    args = p.parse_args()
    value_block = b" 0 %d\r\n%b\r\n" % (args.value_size, b"v" * args.value_size)
    trio.run(accept_forever, args.listen, args.port,
             functools.partial(serve_conn, value_block=value_block))


if __name__ == "__main__":
    main()
