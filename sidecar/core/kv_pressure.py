"""When the `kv` policy's gates engage: only under KV pressure; otherwise it orders exactly as `priority` does.

Working-set admission and program-level order (`working_set.KVAwareOrder`) pay where the agents that take turns on
the GPU need far more KV than it has: vLLM alone then evicts each agent's prefix between its turns and re-prefills
it on the next, and holding a few agents' contexts resident saves that prefill. Where their contexts fit, or
nearly, there is little to save and the working set's waits only cost latency (the real-process bench's `small`
scenario, KV ~2.3x oversubscribed at the tasks' end: hot latency +23% against fcfs; docs/fleet-sim.md). So the
dispatcher asks this module, before every pick, whether the gates are engaged, and while they are not it picks
with the priority policy (tiers, aging, least attained service, the adaptive in-flight window), call for call.

    demand         the KV the fleet is asking for now: the footprints (`working_set.footprint_of`: context plus one
                   turn's growth, a shared prefix once) of the agents that are active: a call in flight or waiting,
                   or one that ended at most `window_s` ago (an agent in its tool call between two turns)
                   (the dispatcher keeps this sum incrementally: `working_set.KVLedger.demand`)
    ratio          demand / the capacity the policy plans with (configured, or vLLM's `cache_config_info`
                   corrected by `kv_estimate`)
    engaged        with hysteresis: it engages when the ratio reaches `engage_ratio` and releases only when it
                   falls to `release_ratio`, so a demand that hovers near one threshold does not flap between
                   the two orders; `engage_ratio = 0` is always engaged (the `kv` policy as it was measured before)

Pure: no I/O, no clock reads (callers pass `now`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from sidecar.core.working_set import DEFAULT_NEW_AGENT_TOKENS, AgentKV

DEFAULT_ENGAGE_RATIO = 4.0
"""Demand / capacity at which the gates engage. Set by the real-process bench (`goose-sidecar bench --experiments
priority`, scenario `small`, 3 seeds, December 2026; docs/fleet-sim.md, "When the KV gates engage"): engaged from
1.5x, the gates engaged in two of three seeds and cost hot latency +26% [+4%..+38%] against `priority`; from 4x
they never engaged there (-1% [-5%..+12%], run-to-run spread). In the fleet simulation (SIMULATED) 4x still
engages where the gains are large (`default`, contexts ~6x the KV at the median: 1.26x tasks per GPU-hour, 1.73x
mean completion, the always-engaged policy's figures, with the release below) and gives up the smaller gains of
fleets that need 1-3x the KV (8 agents of the default workload, `arrivals`: the always-engaged policy 1.1-1.3x,
this one equals `priority`)."""

DEFAULT_RELEASE_RATIO = 0.5
"""Demand / capacity at which engaged gates release: only once the active agents' contexts need less than half the
KV, so every one of them fits with room to grow and `priority`'s interleaving evicts no one. Released at 2x (the
first setting), the gates let go while a fleet's last tasks, two or three large contexts, still needed up to twice
the KV, and under `priority` they evicted each other on every turn. In the fleet simulation (SIMULATED, against
vLLM alone, medians) `default` seeds 1-3 then recomputed 1,907 GPU-s of prompt tokens instead of 1,477, for 1.23x
tasks per GPU-hour and 1.70x mean completion instead of 1.26x and 1.73x (seeds 4-6: 1.22x and 1.71x instead of
1.24x and 1.72x; `h200` seeds 1-2: 1.27x and 1.93x instead of 1.35x and 2.00x); fleets that never engage (`tiny`,
`arrivals`, the real bench's `small`) are unchanged (docs/fleet-sim.md, "When the KV gates engage"). The band from
4x to 0.5x is wider than one agent moves the ratio (an agent's context is at most the capacity: by at most 1)."""

DEFAULT_ACTIVE_WINDOW_S = 30.0
"""An agent whose last call ended at most this long ago counts as active (it is in a tool call and will ask
again). TraceLab's tool calls take 0.3 s at the median and 13.6 s at p90 (`reference/calibration.md`): 30 s covers
nearly every tool call between two turns, and not an agent that has gone quiet."""


@dataclass(frozen=True)
class PressureRule:
    """The engagement thresholds (module docstring). `engage_ratio = 0`: always engaged."""

    engage_ratio: float = DEFAULT_ENGAGE_RATIO
    release_ratio: float = DEFAULT_RELEASE_RATIO
    window_s: float = DEFAULT_ACTIVE_WINDOW_S

    def __post_init__(self) -> None:
        errors = []
        if not (self.engage_ratio >= 0 and math.isfinite(self.engage_ratio)):
            errors.append(f"engage_ratio must be finite and >= 0, got {self.engage_ratio}")
        if not 0 <= self.release_ratio <= self.engage_ratio:
            errors.append(f"release_ratio must be in [0, engage_ratio], got {self.release_ratio}")
        if not self.window_s >= 0:
            errors.append(f"window_s must be >= 0, got {self.window_s}")
        if errors:
            raise ValueError("; ".join(errors))

    @property
    def always(self) -> bool:
        """True when the gates are always engaged (`engage_ratio = 0`)."""
        return self.engage_ratio == 0


ALWAYS = PressureRule(engage_ratio=0.0, release_ratio=0.0)
"""The rule under which the gates are always engaged."""


@dataclass(frozen=True)
class Pressure:
    """The engagement after one evaluation: `engaged`, the `demand_tokens` and `capacity_tokens` it was judged on,
    how many `changes` it has made so far and when the last one was (`since`; -inf: never changed)."""

    engaged: bool = False
    demand_tokens: int = 0
    capacity_tokens: int = 1
    active_agents: int = 0
    changes: int = 0
    since: float = -math.inf

    @property
    def ratio(self) -> float:
        """Demand against capacity."""
        return self.demand_tokens / max(self.capacity_tokens, 1)


def active_agents(agents: Mapping[str, AgentKV], waiting: Iterable[str], now: float, window_s: float) -> frozenset[str]:
    """The agents asking for KV now: a call in flight, a call waiting (`waiting`), or a call that ended at most
    `window_s` before `now`. Agents not in `agents` but waiting are included (their footprint is unknown)."""
    active = {a for a, s in agents.items() if s.in_flight > 0 or now - s.last_active <= window_s}
    active.update(waiting)
    return frozenset(active)


def demand_tokens(
    agents: Mapping[str, AgentKV],
    active: Iterable[str],
    new_agent_tokens: int = DEFAULT_NEW_AGENT_TOKENS,
    small_context_tokens: int = 0,
) -> int:
    """KV tokens the `active` agents need together: each one's footprint (`AgentKV.footprint`), the largest shared
    prefix once (as `working_set.footprint_of` counts it), and `new_agent_tokens` for one whose size is unknown.
    An agent whose known footprint is below `small_context_tokens` adds nothing: the gates never hold its calls
    (`KVAwareOrder.small_context_tokens`), so it is not the pressure they relieve, and a fleet of small contexts
    keeps `priority`'s tiers and in-flight window however many agents it has."""
    own = shared = 0
    for name in active:
        state = agents.get(name)
        if state is None or state.footprint <= 0:
            own += new_agent_tokens
            continue
        if state.footprint < small_context_tokens:
            continue
        share = min(state.shared_tokens, state.context_tokens)
        own += state.footprint - share
        shared = max(shared, share)
    return own + shared


def next_pressure(
    previous: Pressure,
    rule: PressureRule,
    agents: Mapping[str, AgentKV],
    waiting: Iterable[str],
    capacity_tokens: int,
    now: float,
    new_agent_tokens: int = DEFAULT_NEW_AGENT_TOKENS,
    small_context_tokens: int = 0,
) -> Pressure:
    """The engagement at `now` after `previous` (module docstring): engaged once demand >= `engage_ratio` x
    capacity, released once it is <= `release_ratio` x capacity, unchanged in between; always engaged under
    `rule.always`."""
    active = active_agents(agents, waiting, now, rule.window_s)
    demand = demand_tokens(agents, active, new_agent_tokens, small_context_tokens)
    return engagement(previous, rule, demand, len(active), capacity_tokens, now)


def engagement(
    previous: Pressure, rule: PressureRule, demand: int, active: int, capacity_tokens: int, now: float
) -> Pressure:
    """`next_pressure` from the demand already summed: `demand` tokens of `active` agents (what `demand_tokens`
    and `active_agents` give; the dispatcher keeps them incrementally, `working_set.KVLedger.demand`)."""
    capacity = max(capacity_tokens, 1)
    if rule.always:
        engaged = True
    elif previous.engaged:
        engaged = demand > rule.release_ratio * capacity
    else:
        engaged = demand >= rule.engage_ratio * capacity
    changed = engaged != previous.engaged
    return Pressure(
        engaged=engaged,
        demand_tokens=demand,
        capacity_tokens=capacity,
        active_agents=active,
        changes=previous.changes + changed,
        since=now if changed else previous.since,
    )
