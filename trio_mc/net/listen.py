"""Listening sockets: TCP on every address a host resolves to, or a unix socket.

Both the cache server (memcached's ``-l``/``-p``/``-s``/``-a``) and the proxy (each pool's
``listen``) bind through these, so address resolution, ``SO_REUSEADDR``/``SO_REUSEPORT``
and unix-socket permissions follow one rule.
"""

from __future__ import annotations

import os
import socket


def bind_tcp(host: str | None, port: int, kind: int = socket.SOCK_STREAM, *, backlog: int = 1024,
             reuseport: bool = False) -> list[socket.socket]:
    """One socket per address ``host`` resolves to (``None``: every interface).

    IPv6 sockets are v6-only, so a v4 and a v6 address of the same name can both bind.
    With ``reuseport``, several processes may bind the same port and the kernel spreads the
    connections between them.
    """
    socks = []
    try:
        for family, type_, proto, _, addr in socket.getaddrinfo(
                host, port, socket.AF_UNSPEC, kind, 0, socket.AI_PASSIVE):
            sock = socket.socket(family, type_, proto)
            socks.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if reuseport:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(addr)
            if kind == socket.SOCK_STREAM:
                sock.listen(backlog)
    except BaseException:
        for sock in socks:
            sock.close()
        raise
    return socks


def bind_unix(path: str, mode: int | None, *, backlog: int = 1024) -> socket.socket:
    """A unix stream socket at ``path`` (a stale one is replaced), with permissions ``mode``
    when given (set through the umask, so the socket never exists with wider ones)."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old_umask = os.umask(~mode & 0o777) if mode is not None else None
    try:
        sock.bind(path)
    except BaseException:
        sock.close()
        raise
    finally:
        if old_umask is not None:
            os.umask(old_umask)
    sock.listen(backlog)
    return sock
