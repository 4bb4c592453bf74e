"""Helpers that test modules import (fixtures live in conftest.py, which is never imported).

``Client`` is the client end of a connection driven in-process (the ``connect`` fixture
returns one); ``ClientFactory`` is that fixture's type.  ``frame`` builds a binary-protocol
request and ``response_frames`` splits binary responses into ``Response`` fields.
"""

from __future__ import annotations

import struct
from collections.abc import Awaitable, Callable
from typing import NamedTuple

import trio

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
