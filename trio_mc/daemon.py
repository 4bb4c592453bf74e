"""``-d``: detach from the terminal, as memcached and nutcracker do.

Both fork (the parent exits 0, so a shell or init script sees the start succeed), start a
new session, move to ``/`` (no directory stays busy) and put stdio on /dev/null.
nutcracker forks a second time after ``setsid``, so the daemon is not a session leader and
can never reacquire a controlling terminal; memcached keeps stdio under ``-v``.
"""

from __future__ import annotations

import os


def daemonize(*, keep_stdio: bool = False, twice: bool = False) -> None:
    """Become a daemon (see the module docstring); returns in the daemon process."""
    if os.fork():
        os._exit(0)
    os.setsid()
    if twice and os.fork():
        os._exit(0)
    os.chdir("/")
    if not keep_stdio:
        null = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(null, fd)
        if null > 2:
            os.close(null)
