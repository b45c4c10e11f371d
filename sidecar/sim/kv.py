"""The KV cache: fixed-size blocks, automatic prefix caching and LRU eviction, as in vLLM V1's block pool.

Contract (mirrors `vllm/v1/core/kv_cache_manager.py` and `block_pool.py`):
- `num_blocks` blocks of `block_size` tokens. A block is free when no request references it; free blocks sit
  in one LRU queue and are handed out from its head.
- A full block is cached under the hash of its tokens chained with its parent block's hash, so equal hashes
  mean equal token prefixes. A freed block keeps its hash (and stays reusable) until it is handed out again:
  that is the eviction.
- A request's blocks are freed in reverse order, so the tail of a sequence is evicted before its head.
- `allocate` either reserves every block the step needs or nothing (the caller then preempts or waits).
- Usage counts only blocks referenced by requests; cached free blocks count as free.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence


def block_hashes(tokens: Sequence[int], block_size: int, known: list[int]) -> list[int]:
    """Extend `known` (hashes of the first full blocks of `tokens`) to every full block; returns `known`."""
    parent = known[-1] if known else 0
    for start in range(len(known) * block_size, len(tokens) - block_size + 1, block_size):
        parent = hash((parent, tuple(tokens[start : start + block_size])))
        known.append(parent)
    return known


class KVCache:
    """Block tables per request over one pool of blocks. Not thread-safe; owned by one engine."""

    def __init__(self, num_blocks: int, block_size: int, enable_prefix_caching: bool = True) -> None:
        self.num_blocks = num_blocks
        self.block_size = block_size
        self.enable_prefix_caching = enable_prefix_caching
        self._ref = [0] * num_blocks
        self._hash: list[int | None] = [None] * num_blocks
        self._free: OrderedDict[int, None] = OrderedDict.fromkeys(range(num_blocks))
        self._cached: dict[int, int] = {}  # block hash -> block id
        self._tables: dict[str, list[int]] = {}
        self._num_hashed: dict[str, int] = {}  # per request: how many of its leading blocks carry a hash
        # `cached_prefix` is asked the same question every step while the head of a waiting queue cannot be admitted.
        # Its last answer stays right until one of its blocks is evicted (hashes never move to another block while
        # cached), and a block cached since can only extend it, so the scan resumes where it stopped.
        self._memo_key: tuple[int, int] | None = None
        self._memo_found: list[int] = []
        self._memo_blocks: set[int] = set()

    @property
    def num_free(self) -> int:
        return len(self._free)

    @property
    def usage(self) -> float:
        """Fraction of blocks referenced by requests, in [0, 1]."""
        return 1.0 - len(self._free) / self.num_blocks

    def blocks_of(self, request_id: str) -> list[int]:
        return list(self._tables.get(request_id, ()))

    def cached_prefix(self, hashes: Sequence[int], num_tokens: int) -> list[int]:
        """Blocks of the longest cached prefix, leaving at least the last token to compute (as vLLM does)."""
        if not self.enable_prefix_caching:
            return []
        limit = min((num_tokens - 1) // self.block_size, len(hashes))
        if limit <= 0:
            return []
        key = (hashes[limit - 1], limit)  # a chained hash names its whole prefix
        if self._memo_key != key:
            self._memo_key, self._memo_found, self._memo_blocks = key, [], set()
        found, cached = self._memo_found, self._cached
        for h in hashes[len(found) : limit]:
            block = cached.get(h)
            if block is None:
                break
            found.append(block)
            self._memo_blocks.add(block)
        return list(found)

    def allocate(
        self,
        request_id: str,
        hashes: Sequence[int],
        num_computed: int,
        num_new: int,
        computed_blocks: Sequence[int] = (),
    ) -> bool:
        """Reserve blocks for `num_new` more tokens after `num_computed` (+ the cached `computed_blocks`).

        Returns False, changing nothing, when the free blocks (minus cached ones this call would take out of
        the free queue) cannot cover the step. `hashes` are the request's full-block hashes so far.
        """
        table = self._tables.setdefault(request_id, [])
        total = num_computed + len(computed_blocks) * self.block_size + num_new
        needed = -(-total // self.block_size) - len(table) - len(computed_blocks)
        if needed > len(self._free):  # cannot fit even if no cached block it reuses is free: skip the count
            if not table:
                del self._tables[request_id]
            return False
        evictable = list(map(self._ref.__getitem__, computed_blocks)).count(0) if computed_blocks else 0
        if needed > len(self._free) - evictable:
            if not table:
                del self._tables[request_id]
            return False
        for block in computed_blocks:
            if self._ref[block] == 0:
                del self._free[block]
            self._ref[block] += 1
            table.append(block)
        for _ in range(max(0, needed)):
            block, _unused = self._free.popitem(last=False)
            old = self._hash[block]
            if old is not None:
                if self._cached.get(old) == block:
                    del self._cached[old]
                    if block in self._memo_blocks:
                        self._memo_key = None
                self._hash[block] = None
            self._ref[block] = 1
            table.append(block)
        self._num_hashed.setdefault(request_id, 0)
        self._num_hashed[request_id] = max(self._num_hashed[request_id], len(computed_blocks))
        if self.enable_prefix_caching:
            self._cache_full_blocks(request_id, hashes, total // self.block_size)
        return True

    def _cache_full_blocks(self, request_id: str, hashes: Sequence[int], num_full: int) -> None:
        table = self._tables[request_id]
        done = self._num_hashed[request_id]
        upto = min(num_full, len(hashes), len(table))
        for i in range(done, upto):
            block = table[i]
            if self._hash[block] is None and hashes[i] not in self._cached:
                self._hash[block] = hashes[i]
                self._cached[hashes[i]] = block
        self._num_hashed[request_id] = max(done, upto)

    def free(self, request_id: str) -> None:
        """Release the request's blocks, tail first; blocks nobody else holds go to the LRU queue's tail."""
        table = self._tables.pop(request_id, [])
        self._num_hashed.pop(request_id, None)
        for block in reversed(table):
            self._ref[block] -= 1
            if self._ref[block] == 0:
                self._free[block] = None

    def reset_prefix_cache(self) -> None:
        """Forget every cached hash of free blocks (vLLM's /reset_prefix_cache)."""
        for block in self._free:
            old = self._hash[block]
            if old is not None:
                self._cached.pop(old, None)
                self._hash[block] = None
        self._memo_key = None
