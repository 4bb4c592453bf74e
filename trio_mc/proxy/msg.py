"""The proxy's messages: a request and, once it is done, what its client is answered.

twemproxy's vocabulary: a *msg* is one request; its *peer* is the backend's response; a
multi-key get is a parent msg with one *fragment* per backend server, done when every
fragment is, and answered by merging the fragments' values (``post_coalesce``).  A client
keeps its msgs in request order in its ``omsg_q`` and writes each reply when it reaches
the head of the queue and is done.

A msg owns no buffer of its own: its request is the list of pieces to send (the value of
a set is the slice the parser made, never copied again), dropped as soon as the kernel has
taken it, and its reply is the backend's response bytes as read.
"""

from __future__ import annotations

from typing import Protocol

from trio_mc.protocol import replies
from trio_mc.protocol.responses import ERRORS, QUIET, RETRIEVAL, Response

Piece = bytes | memoryview

#: The reply to a multi-get of which a fragment got a reply other than VALUE..END
#: (twemproxy marks the request EINVAL).
_INVALID = b"Invalid argument"


class Owner(Protocol):
    """The client a msg answers (see :class:`~trio_mc.proxy.client.ClientSession`)."""

    def wake(self) -> None:
        """A msg of this client is done: write what is now at the head of its queue."""


class Msg:
    """One client request on its way to a backend and back.

    ``kind`` is the response kind the backend's reply is read as
    (:mod:`trio_mc.protocol.responses`); ``reply`` holds the bytes for the client once the
    msg is done (a local reply is done at once); ``error`` is the errno text of a failed
    forward (``b"Connection refused"``), answered as twemproxy's ``SERVER_ERROR <text>``.
    A multi-get split over servers is a :class:`MultiGet` of :class:`Fragment` msgs.
    """

    __slots__ = ("owner", "request", "size", "kind", "done", "reply", "error", "parent", "deadline")

    def __init__(self, owner: Owner | None, request: list[Piece], kind: int) -> None:
        self.owner = owner  # None: noreply, nobody waits for the response
        self.request = request  # emptied once sent: the kernel has the bytes
        self.size = 0  # the request's bytes, counted when it is queued on a server connection
        self.kind = kind
        self.done = False
        self.reply: Piece = b""
        self.error: bytes | None = None
        self.parent: MultiGet | None = None  # set on a Fragment: the multi-get it belongs to
        self.deadline = 0.0  # with a pool timeout: when the reply must have arrived

    def complete(self, response: Response) -> Owner | None:
        """The backend answered; returns the owner to wake (``None``: nothing to do yet)."""
        # A quiet meta command was fenced with mn: its reply is what came before the MN.
        self.reply = response.raw if self.kind != QUIET else memoryview(response.raw)[:-4]
        self.done = True
        return self.owner

    def fail(self, error: bytes) -> Owner | None:
        """The forward failed (connection refused, reset, timed out, bad response)."""
        self.error = error
        self.done = True
        return self.owner

    @property
    def failed(self) -> bool:
        """Whether the reply is one the proxy makes up (``SERVER_ERROR``)."""
        return self.error is not None

    def render(self) -> Piece:
        """The bytes a done msg answers its client."""
        if self.error is not None:
            return replies.server_error(self.error)
        return self.reply


class Fragment(Msg):
    """The part of a multi-get sent to one server: its response is kept for the merge."""

    __slots__ = ("response",)

    def __init__(self, request: list[Piece]) -> None:
        super().__init__(None, request, RETRIEVAL)
        self.response: Response | None = None

    def complete(self, response: Response) -> Owner | None:
        self.response = response
        assert self.parent is not None
        return self.parent.fragment_done()

    def fail(self, error: bytes) -> Owner | None:
        if self.error is None:
            self.error = error
        assert self.parent is not None
        return self.parent.fragment_done()


class MultiGet(Msg):
    """A multi-key get split over several servers (twemproxy's ``frag_owner``): done when
    every fragment is, answered by merging them."""

    __slots__ = ("frags", "key_frags", "nfrag_done")

    def __init__(self, owner: Owner, frags: list[Fragment], key_frags: list[int]) -> None:
        super().__init__(owner, [], 0)
        self.frags = frags
        self.key_frags = key_frags  # the fragment of each key, in request order
        self.nfrag_done = 0
        for frag in frags:
            frag.parent = self

    def fragment_done(self) -> Owner | None:
        self.nfrag_done += 1
        if self.nfrag_done < len(self.frags):
            return None
        for frag in self.frags:  # no cycle left: freed by its refcount, not the collector
            frag.parent = None
        self.done = True
        return self.owner

    @property
    def failed(self) -> bool:
        return any(frag.error is not None for frag in self.frags)

    def render(self) -> Piece:
        """twemproxy's multi-get merge: for each key in request order, the next value not
        yet taken from its server's reply, then one END.  A failed fragment fails all."""
        for frag in self.frags:
            if frag.error is not None:
                return replies.server_error(frag.error)
        responses = []
        for frag in self.frags:
            response = frag.response
            if response is None or response.status in ERRORS or not response.end:
                return replies.server_error(_INVALID)
            responses.append(response)
        if len(responses) == 1:  # one server's reply is already in key order
            return responses[0].raw
        values = [response.values for response in responses]
        taken = [0] * len(values)
        out: list[Piece] = []
        for index in self.key_frags:
            i = taken[index]
            if i < len(values[index]):
                out.append(values[index][i])
                taken[index] = i + 1
        out.append(replies.END)
        return b"".join(out)


def local(owner: Owner, reply: bytes) -> Msg:
    """A msg answered by the proxy itself (an error line, ``mn``), in its place in order."""
    msg = Msg(owner, [], 0)
    msg.reply = reply
    msg.done = True
    return msg
