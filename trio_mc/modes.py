"""memcached's storage modes (``NREAD_*``): how a storage command treats an existing item.

The protocol layer produces them and the store acts on them; neither imports the other, so
the numbers live here, as plain ints (they are compared on every set).
"""

ADD = 1
SET = 2
REPLACE = 3
APPEND = 4
PREPEND = 5
CAS = 6

#: The text protocol's command name of each mode.
NAMES = {ADD: b"add", SET: b"set", REPLACE: b"replace", APPEND: b"append", PREPEND: b"prepend", CAS: b"cas"}
