"""memcached's base64 (meta ``b`` keys): the stdlib's encoding, memcached's lenient decoding."""

from __future__ import annotations

import base64 as stdlib
import socket
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from procs import HOST, ServerProcess, ask, start_memcached, start_trio_mc

from trio_mc.protocol import base64


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_encode_is_the_stdlib_and_decode_inverts_it(data: bytes) -> None:
    encoded = base64.encode(data)
    assert encoded == stdlib.b64encode(data)
    assert base64.decode(encoded) == (data or None)  # memcached reports an empty result as a failure


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=1, max_size=100))
def test_canonical_input_decodes_as_the_stdlib(data: bytes) -> None:
    encoded = stdlib.b64encode(data)
    assert base64.decode(encoded) == stdlib.b64decode(encoded, validate=True)


@pytest.mark.parametrize("src, decoded", [
    (b"QUJD", b"ABC"),
    (b"QUI=", b"AB"),
    (b"QQ==", b"A"),
    (b"AAA=", b"\x00\x00"),
    (b"QU*J-D\r\n", b"ABC"),  # bytes outside the alphabet are skipped
    (b"QR==", b"A"),  # the unused low bits are ignored
    (b"QQ==QUJD", b"A"),  # decoding stops after the first padded block...
    (b"QQ==QUJ", None),  # ...but every byte counts toward the multiple of four
    (b"=QUJ", b"\x01\x05"),  # "=" anywhere in a block is a zero and a padding byte
    (b"QUJ", None),  # not a multiple of four
    (b"", None),
    (b"*-.", None),  # nothing left once the skipped bytes are gone
    (b"Q===", None),  # three padding bytes
    (b"====", None),
])
def test_decode_is_memcacheds(src: bytes, decoded: bytes | None) -> None:
    assert base64.decode(src) == decoded


# -- differential: the same base64 keys to memcached and to trio-mc ---------------------------

@pytest.fixture(scope="module")
def servers() -> Iterator[tuple[socket.socket, socket.socket]]:
    with start_memcached() as memcached, start_trio_mc() as trio_mc, \
            _connect(memcached) as to_memcached, _connect(trio_mc) as to_trio_mc:
        yield to_memcached, to_trio_mc


def _connect(server: ServerProcess) -> socket.socket:
    return socket.create_connection((HOST, server.port), timeout=10)


@settings(max_examples=150, deadline=None)
@given(st.text(alphabet="QUJDAaz09+/=*-.", min_size=1, max_size=24).map(str.encode))
def test_base64_keys_answer_as_memcached(servers: tuple[socket.socket, socket.socket], token: bytes) -> None:
    """Stored under the decoded key, fetched back with ``k`` (the key re-encoded), deleted."""
    request = b"ms %b 1 b\r\nx\r\nmg %b b k v\r\nmd %b b\r\nmn\r\n" % (token, token, token)
    memcached, trio_mc = servers
    expected = ask(memcached, request, b"MN\r\n")
    assert expected.endswith(b"MN\r\n")
    assert ask(trio_mc, request, b"MN\r\n") == expected
