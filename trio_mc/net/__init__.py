"""The network layer shared by ``trio-mc serve`` and ``trio-mc proxy``: memcached's model.

The main loop runs the :class:`~.acceptor.Acceptor`: listening sockets (:mod:`.listen`),
the accept loops, and the round-robin hand-off of each accepted socket to a worker thread
(:mod:`.worker`), each of which runs its own ``trio.run``.  One task per connection drives
a :class:`~.conn.Conn` (memcached's conn state machine) over a transport
(:mod:`.transport`).  What a connection *does* is plugged in by the owner: a factory per
listening socket builds each connection with its own dispatch table and session.
"""
