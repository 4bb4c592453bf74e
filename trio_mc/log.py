"""The server's diagnostics: the ``trio_mc`` logger, with memcached's message text.

The ``-v``/``-vv`` settings still decide what is said (memcached's verbosity levels, changed
at run time by the ``verbosity`` command); what is said goes through :mod:`logging`, so an
application that embeds the server, or pytest's ``caplog``, receives it.  Levels: what
memcached prints at ``-v`` is WARNING, at ``-vv`` INFO; an internal error is ERROR, with
its traceback.  ``trio-mc serve`` prints the records on stderr as the bare message, as
memcached prints them.
"""

from __future__ import annotations

import logging
import sys

log = logging.getLogger("trio_mc")


def to_stderr() -> None:
    """The command line's handler: each record's text alone on stderr (memcached's output)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.DEBUG)
    log.propagate = False
