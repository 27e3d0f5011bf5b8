"""Automatic prefix caching as vLLM does it: prompts are cut into 16-token blocks, each block is
keyed by the hash of everything before it, and a request reuses the longest run of cached blocks."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

__all__ = ["BLOCK_SIZE", "PrefixCache"]

BLOCK_SIZE = 16


class PrefixCache:
    """A bounded LRU of block hashes; it holds no tokens, only what it takes to count hits."""

    __slots__ = ("_blocks", "_capacity")

    def __init__(self, capacity_blocks: int) -> None:
        self._capacity = capacity_blocks
        self._blocks: OrderedDict[int, None] = OrderedDict()

    def __len__(self) -> int:
        return len(self._blocks)

    def admit(self, model: str, tokens: Sequence[str]) -> int:
        """Cache the prompt's full blocks and return how many of its tokens were already cached."""
        if self._capacity == 0:
            return 0
        blocks = self._blocks
        # Like vLLM, at least the last prompt token is always computed, so a fully cached prompt
        # still reports one block fewer.
        lookup_limit = (len(tokens) - 1) // BLOCK_SIZE
        # hash() differs between processes, which is all an in-memory cache needs.
        chained = hash(model)
        hits = 0
        missed = False
        for i in range(len(tokens) // BLOCK_SIZE):
            chained = hash((chained, *tokens[i * BLOCK_SIZE : (i + 1) * BLOCK_SIZE]))
            if chained in blocks:
                blocks.move_to_end(chained)
                if not missed and i < lookup_limit:
                    hits += 1
            else:
                missed = True
                blocks[chained] = None
        while len(blocks) > self._capacity:
            blocks.popitem(last=False)
        return hits * BLOCK_SIZE
