"""Several coordinators side by side: which one owns an agent, and what share of an upstream each may use.

A fleet too large for one coordinator runs N of them (peers 0 .. N-1). Two pure rules make that work:

    owner(agent_id, peers)      the peer that serves an agent: rendezvous (highest random weight) hashing of the
                                agent id, so the answer is stable across processes and restarts, and going from N
                                to N+1 peers moves only the ~1/(N+1) of agents the new peer wins
    Share(peers, index).of(n)   this peer's part of a whole-upstream figure n (a window, max_num_seqs, a count of
                                running calls): n // peers, plus one for the first n % peers peers, at least
                                `floor`; the parts of all peers sum to n whenever n >= peers

Each coordinator scales every figure that describes the whole upstream to its share, so the windows of all peers
together stay within the upstream's. What this cannot give: one queue across coordinators (each orders only its
own agents; hot work at one does not wait ahead of cold work at another inside the coordinators, only inside
vLLM, by its native priority) and rebalancing (a peer's share is fixed by its configuration).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass


def _weight(agent_id: str, peer: int) -> int:
    """A peer's score for an agent: 64 bits of BLAKE2b over both (stable everywhere, unlike `hash()`)."""
    digest = hashlib.blake2b(f"{peer}\x00{agent_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def owner(agent_id: str, peers: int) -> int:
    """The peer (0 .. peers-1) that owns `agent_id`: the one with the highest weight. Raises ValueError when
    `peers` < 1."""
    if peers < 1:
        raise ValueError(f"peers must be at least 1, got {peers}")
    return max(range(peers), key=lambda peer: _weight(agent_id, peer))


@dataclass(frozen=True)
class Share:
    """Peer `index` of `peers` coordinators; `Share()` is a coordinator alone (every figure whole)."""

    peers: int = 1
    index: int = 0

    def __post_init__(self) -> None:
        if self.peers < 1 or not 0 <= self.index < self.peers:
            raise ValueError(f"need peers >= 1 and 0 <= index < peers, got peers={self.peers} index={self.index}")

    @property
    def alone(self) -> bool:
        return self.peers == 1

    def of(self, whole: int, floor: int = 1) -> int:
        """This peer's part of `whole`, at least `floor` (a peer with no part could serve nothing)."""
        base, extra = divmod(max(whole, 0), self.peers)
        return max(base + (1 if self.index < extra else 0), floor)


ALONE = Share()  # one coordinator: every figure whole
