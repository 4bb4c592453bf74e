"""memcached's slab classes, used to report items per class exactly as memcached does.

trio-mc does not carve memory into slab pages (Python owns the allocation), but operators and
tools read ``stats slabs``/``stats items`` per class, so every item is assigned to the class
memcached would have put it in: chunk sizes start at ``sizeof(item) + -n`` and grow by ``-f``
up to ``slab_chunk_max``, each aligned to 8 bytes.
"""

from __future__ import annotations

from trio_mc.sizes import ITEM_HEADER_SIZE

CHUNK_ALIGN = 8
SLAB_PAGE_SIZE = 1024 * 1024
MAX_CLASSES = 64  # MAX_NUMBER_OF_SLAB_CLASSES: class ids 1..62 plus the largest


class SlabClasses:
    """Chunk sizes per class id (``sizes[0]`` is class 1).

    Args:
      growth_factor: ``-f``.
      chunk_size: ``-n``, the minimum space for key, value and flags.
      slab_chunk_max: the largest chunk; bigger items are chunked into it.
    """

    __slots__ = ("sizes", "per_page", "_table")

    def __init__(self, growth_factor: float = 1.25, chunk_size: int = 48,
                 slab_chunk_max: int = SLAB_PAGE_SIZE // 2) -> None:
        sizes: list[int] = []
        size = ITEM_HEADER_SIZE + chunk_size
        while len(sizes) < MAX_CLASSES - 2 and size < slab_chunk_max / growth_factor:
            if size % CHUNK_ALIGN:
                size += CHUNK_ALIGN - size % CHUNK_ALIGN
            sizes.append(size)
            size = int(size * growth_factor)
        sizes.append(slab_chunk_max)
        self.sizes = sizes
        self.per_page = [max(1, SLAB_PAGE_SIZE // s) for s in sizes]
        # Class id by item size, one byte per size up to the largest chunk: a lookup is the
        # cheapest way to classify an item on every hit.
        table = bytearray(sizes[-1] + 1)
        start = 0
        for clsid, size in enumerate(sizes, 1):
            table[start:size + 1] = bytes([clsid]) * (size + 1 - start)
            start = size + 1
        self._table = bytes(table)

    def clsid(self, ntotal: int) -> int:
        """The class an item of ``ntotal`` bytes lives in (the largest for chunked items)."""
        table = self._table
        return table[ntotal] if ntotal < len(table) else len(self.sizes)
