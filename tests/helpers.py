"""Helpers that test modules import (fixtures live in conftest.py, which is never imported).

``Client`` is the client end of a connection driven in-process (the ``connect`` fixture
returns one); ``ClientFactory`` is that fixture's type.  ``proxy_in_loop`` runs
``trio-mc proxy`` in the test's own loop (``threads=0``), so one clock drives it and its
fake backends.  ``frame`` builds a binary-protocol
request and ``response_frames`` splits binary responses into ``Response`` fields.
"""

from __future__ import annotations

import struct
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import NamedTuple

import trio

from trio_mc.proxy.config import PoolConfig
from trio_mc.proxy.serve import ProxyState, proxy

ClientFactory = Callable[..., Awaitable["Client"]]


class Client:
    """The client end of an in-memory connection, with request/response helpers."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream

    async def send(self, data: bytes) -> None:
        await self.stream.send_all(data)

    async def read_until(self, terminator: bytes) -> bytes:
        data = b""
        with trio.fail_after(5):
            while not data.endswith(terminator):
                chunk = await self.stream.receive_some()
                if not chunk:
                    break
                data += chunk
        return data

    async def ask(self, request: bytes, terminator: bytes = b"\r\n") -> bytes:
        await self.send(request)
        return await self.read_until(terminator)


def frame(opcode: int, key: bytes = b"", extras: bytes = b"", value: bytes = b"", cas: int = 0,
          opaque: int = 7) -> bytes:
    """One binary-protocol request frame (24-byte header, extras, key, value)."""
    return struct.pack(">BBHBBHIIQ", 0x80, opcode, len(key), len(extras), 0, 0,
                       len(extras) + len(key) + len(value), opaque, cas) + extras + key + value


class Response(NamedTuple):
    """One binary-protocol response frame's fields."""

    opcode: int
    status: int
    opaque: int
    cas: int
    extras: bytes
    key: bytes
    value: bytes


def response_frames(data: bytes) -> list[Response]:
    """Split binary responses into frames (a truncated last frame keeps what arrived)."""
    out = []
    while data:
        _, op, klen, elen, _, status, blen, opaque, cas = struct.unpack(">BBHBBHIIQ", data[:24])
        body, data = data[24:24 + blen], data[24 + blen:]
        out.append(Response(op, status, opaque, cas, body[:elen], body[elen:elen + klen], body[elen + klen:]))
    return out


@dataclass
class InLoopProxy:
    """A proxy running in the test's loop, and the client connections a test opened."""

    state: ProxyState
    clients: list[trio.SocketStream] = field(default_factory=list)

    async def connect(self, index: int = 0) -> trio.SocketStream:
        """A client connection to the ``index``-th listening address (closed at the end)."""
        address = self.state.addresses[index]
        assert isinstance(address, tuple)
        stream = await trio.open_tcp_stream(address[0], address[1])
        self.clients.append(stream)
        return stream


@asynccontextmanager
async def proxy_in_loop(pools: Sequence[PoolConfig], conf: str | None = None) -> AsyncIterator[InLoopProxy]:
    """``proxy(pools, threads=0, conf=conf)`` until the block ends, then every client
    connection the test opened is closed and the proxy stopped."""
    async with trio.open_nursery() as nursery:
        state = await nursery.start(lambda task_status: proxy(pools, threads=0, conf=conf,
                                                               task_status=task_status))
        running = InLoopProxy(state)
        try:
            yield running
        finally:
            for stream in running.clients:
                await stream.aclose()
            nursery.cancel_scope.cancel()
