"""Several coordinators: which peer owns an agent, and each peer's share of an upstream's figures."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter

import pytest

from sidecar.core.admission import AdmissionLimits, UpstreamMetrics
from sidecar.core.engine_admission import initial_state, observe, peer_limits
from sidecar.core.partition import Share, owner

AGENTS = [f"agent-{n}" for n in range(1, 3001)]


def test_the_owner_is_the_same_in_another_process_whatever_its_hash_seed() -> None:
    code = "from sidecar.core.partition import owner; print([owner(f'agent-{n}', 3) for n in range(1, 41)])"
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    other = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert other.stdout.strip() == str([owner(f"agent-{n}", 3) for n in range(1, 41)])


@pytest.mark.parametrize("peers", [2, 3, 5])
def test_agents_spread_over_every_peer(peers: int) -> None:
    counts = Counter(owner(a, peers) for a in AGENTS)
    assert sorted(counts) == list(range(peers))
    fair = len(AGENTS) / peers
    assert all(0.85 * fair < n < 1.15 * fair for n in counts.values()), counts  # deterministic: fixed ids


@pytest.mark.parametrize("peers", [1, 2, 3, 4])
def test_a_new_peer_takes_only_agents_and_moves_no_others(peers: int) -> None:
    moved = [a for a in AGENTS if owner(a, peers) != owner(a, peers + 1)]
    assert all(owner(a, peers + 1) == peers for a in moved)  # every agent that moves goes to the new peer
    assert len(moved) < 1.3 * len(AGENTS) / (peers + 1)  # about its fair part, no more (modulo would move most)


def test_one_peer_owns_everyone_and_zero_peers_is_refused() -> None:
    assert {owner(a, 1) for a in AGENTS[:50]} == {0}
    with pytest.raises(ValueError, match="peers"):
        owner("agent-1", 0)
    with pytest.raises(ValueError, match="index"):
        Share(2, 2)


@pytest.mark.parametrize(("whole", "peers"), [(64, 3), (7, 2), (4, 4), (5, 3), (256, 7)])
def test_the_shares_of_all_peers_sum_to_the_whole(whole: int, peers: int) -> None:
    parts = [Share(peers, i).of(whole) for i in range(peers)]
    assert sum(parts) == whole and max(parts) - min(parts) <= 1


def test_a_peer_always_gets_at_least_its_floor() -> None:
    assert [Share(3, i).of(2) for i in range(3)] == [1, 1, 1]  # below one per peer: the sum is no longer kept
    assert [Share(3, i).of(2, floor=0) for i in range(3)] == [1, 1, 0]


def test_peer_limits_share_the_windows_and_alone_changes_nothing() -> None:
    limits = AdmissionLimits(max_window=64, initial_window=4)
    assert peer_limits(limits, Share()) == limits
    peers = [peer_limits(limits, Share(3, i)) for i in range(3)]
    assert [p.max_window for p in peers] == [22, 21, 21]
    assert [p.initial_window for p in peers] == [2, 1, 1]


def engine(waiting: int, running: int, at: float, kv: float = 0.1) -> UpstreamMetrics:
    return UpstreamMetrics(waiting, running, kv, 0.0, scraped_at=at)


@pytest.mark.parametrize("native", [True, False])
def test_each_peer_learns_the_engines_capacity_and_takes_its_share(native: bool) -> None:
    """Every peer scrapes the same engine (8 running, vLLM queuing): all learn slots = 8, and their windows sum to
    8, plus one call each may leave waiting inside vLLM when native priority orders that queue."""
    windows = []
    for i in range(3):
        limits = peer_limits(AdmissionLimits(), Share(3, i))
        state = initial_state(limits)
        for t in (1.0, 2.0, 3.0):
            state = observe(state, engine(2, 8, t), t, limits, native_priority=native, demand=True)
        assert state.slots == 8  # the engine's figure, shown as it is
        windows.append(state.window)
    assert sum(windows) == 8 + (3 if native else 0), windows


def test_a_configured_capacity_and_a_kv_bound_engine_are_shared_too() -> None:
    limits = [peer_limits(AdmissionLimits(), Share(2, i)) for i in range(2)]
    assert [initial_state(lim, configured_slots=2).window for lim in limits] == [1, 1]  # not 2 + 2
    states = [initial_state(lim) for lim in limits]
    kv_bound = [
        observe(s, engine(3, 6, 1.0, kv=0.9), 1.0, lim, native_priority=False, demand=True)
        for s, lim in zip(states, limits, strict=True)
    ]
    assert [s.window for s in kv_bound] == [3, 3]  # what runs in the engine, split, not 6 each
