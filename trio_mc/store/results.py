"""What store operations return: memcached's result types as plain ints, and an mg hit.

Results are small ints in namespaces (``StoreResult.STORED``), not ``enum.Enum`` members:
the server maps them to reply bytes with a dict or a list lookup on every set, and hashing
an Enum member costs a Python-level call that showed in profiles of the set path.  Compare
them with ``==``.  The store never sees protocol bytes: the server turns these into
``STORED``/``HD``/binary statuses, and passes meta TTL flags as the ``TTL_*`` operations.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final


class StoreResult:
    """memcached's ``store_item_type``."""

    STORED: Final = 0
    NOT_STORED: Final = 1
    EXISTS: Final = 2
    NOT_FOUND: Final = 3
    NO_MEMORY: Final = 4


class DeltaResult:
    """memcached's ``delta_result_type``."""

    OK: Final = 0
    NON_NUMERIC: Final = 1
    NOT_FOUND: Final = 2
    NO_MEMORY: Final = 3
    CAS_MISMATCH: Final = 4


class DeleteResult:
    """What a delete with a CAS check (md, binary delete) did."""

    DELETED: Final = 0
    NOT_FOUND: Final = 1
    EXISTS: Final = 2  # the CAS did not match


class ReassignResult:
    """The outcomes of ``slabs reassign``, memcached's ``reassign_result_type``."""

    OK: Final = 0
    BADCLASS: Final = 1
    NOSPARE: Final = 2
    SAME: Final = 3


# Meta TTL operations, applied in request order (the mg/ma flags T, N, R and t).
TTL_SET: Final = 0  # T: set the TTL
TTL_VIVIFY: Final = 1  # N: the TTL of an item created on a miss
TTL_RECACHE: Final = 2  # R: win the recache token if the remaining TTL is below this
TTL_REPORT: Final = 3  # t: report the remaining TTL at this point


@dataclass(slots=True, frozen=True)
class MetaItem:
    """What an mg hit reports: the item as it was before this command touched it, except
    ``ttl``, which is the remaining TTL at the position of the ``t`` flag."""

    flags: int
    cas: int
    data: memoryview
    ttl: int | None
    fetched: bool
    idle: int
    won: bool
    token_sent: bool
    stale: bool
    binary: bool
