"""Helpers that test modules import (fixtures live in conftest.py, which is never imported).

``Client`` is the client end of a connection driven in-process (the ``connect`` fixture
returns one); ``ClientFactory`` is that fixture's type.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

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
