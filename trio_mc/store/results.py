"""What store operations return: memcached's result types, and what an mg hit reports."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class StoreResult(enum.Enum):
    """memcached's ``store_item_type``."""

    STORED = "STORED"
    NOT_STORED = "NOT_STORED"
    EXISTS = "EXISTS"
    NOT_FOUND = "NOT_FOUND"
    NO_MEMORY = "NO_MEMORY"


class DeltaResult(enum.Enum):
    """memcached's ``delta_result_type``."""

    OK = "OK"
    NON_NUMERIC = "NON_NUMERIC"
    NOT_FOUND = "NOT_FOUND"
    NO_MEMORY = "NO_MEMORY"
    CAS_MISMATCH = "CAS_MISMATCH"


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
