"""What the scheduler sees of KV and why calls wait: the `kv` block of `/status`, its Prometheus metrics, and so
the dashboard's "KV working set" card.

    add_kv_view(status, dispatchers, now)   `/status` gets `kv` (below) and each agent entry its two fields
    kv_status(dispatchers, now)     per model: the gate that holds waiting calls (and, for the working set, what the
                                    first of them needs against what is planned), the KV capacity and where it
                                    came from, whether the gates are engaged (the active agents' demand against
                                    the capacity, `core.kv_pressure`), the working set and the resident estimate
                                    against it, the correction from vLLM's counters, and per agent its estimated
                                    resident KV
    agent_fields(dispatchers, now)  per agent: its estimated resident KV and the gate its waiting call waits on
    KVCollector(dispatchers)        the same as gauges, read at scrape time

Tokens are engine tokens: the `kv` policy's ledger tokens x the correction's scale (`core.kv_estimate`), 1 without
a correction. Only the dispatchers of the `kv` policy have a working set; every dispatcher says what its waiting
calls wait on. Per-agent gauges are exported for resident agents only: what fits in one engine's KV bounds them.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from prometheus_client.core import GaugeMetricFamily

from sidecar.core.kv_estimate import KVCorrection
from sidecar.core.ordering import Gate
from sidecar.core.working_set import KVAwareOrder, footprint_of, resident_agents

if TYPE_CHECKING:
    from sidecar.coordinator.dispatcher import Dispatcher

_NO_CORRECTION = KVCorrection()


def add_kv_view(status: dict[str, Any], dispatchers: Mapping[str, Dispatcher], now: float) -> None:
    """Add `kv` (`kv_status`) to a `/status` body, and `agent_fields` to each of its `agents` entries."""
    status["kv"] = kv_status(dispatchers, now)
    fields = agent_fields(dispatchers, now)
    for agent in status.get("agents", []):
        agent.update(fields.get(agent["agent_id"], {"kv_resident_tokens": 0, "waiting_on": None}))


def kv_status(dispatchers: Mapping[str, Dispatcher], now: float) -> dict[str, Any]:
    """alias -> that model's view (module docstring). Read-only: decides nothing."""
    return {alias: _model_view(d, now) for alias, d in dispatchers.items()}


def agent_fields(dispatchers: Mapping[str, Dispatcher], now: float) -> dict[str, dict[str, Any]]:
    """agent -> `kv_resident_tokens` (its estimated resident KV, summed over models; 0 when evicted) and
    `waiting_on` (the gate a waiting call of its waits on, else None)."""
    fields: dict[str, dict[str, Any]] = {}
    for d in dispatchers.values():
        for agent, entry in _agents(d, now).items():
            row = fields.setdefault(agent, {"kv_resident_tokens": 0, "waiting_on": None})
            row["kv_resident_tokens"] += entry["resident_tokens"]
        for item in d.queue:
            fields.setdefault(item.agent, {"kv_resident_tokens": 0, "waiting_on": None})["waiting_on"] = str(d.gate)
    return fields


def waiting_on(d: Dispatcher, now: float) -> dict[str, Any] | None:
    """Why `d`'s calls wait (None when none does): `gate` and `calls`; the window's `in_flight` and `window`;
    the pools' use; for the working set the first call in order (`agent`), the tokens it `needs`, what the places
    plan and the `limit` (fill x usable capacity), all engine tokens."""
    if not d.queue:
        return None
    gate = d.gate
    view: dict[str, Any] = {"gate": str(gate), "calls": len(d.queue)}
    if gate is Gate.WINDOW:
        view |= {"in_flight": d.in_flight + d.speculative, "window": d.window}
    elif gate is Gate.POOLS:
        view |= {"hot_pool_in_use": d.pools.hot, "cold_pool_in_use": d.pools.cold}
    elif gate is Gate.WORKING_SET and isinstance(d.policy, KVAwareOrder) and d.kv_ledger is not None:
        view |= _room(d, d.policy, now)
    return view


def _room(d: Dispatcher, policy: KVAwareOrder, now: float) -> dict[str, Any]:
    agents = d.kv_ledger.snapshot() if d.kv_ledger is not None else {}
    resident = resident_agents(agents, policy.capacity_tokens)
    service = d.service.snapshot(now)
    head = min(d.queue.heads(), key=lambda item: policy.key(item, now, agents, resident, service))
    places = policy.places(agents, now)
    known = agents.get(head.agent)
    scale = _correction(d).scale
    if known is not None and known.context_tokens > 0:
        needs = footprint_of(agents, [*places, head.agent]) - footprint_of(agents, places)
    else:
        needs = policy.new_agent_tokens
    return {
        "agent": head.agent,
        "needs_tokens": round(needs * scale),
        "planned_tokens": round(footprint_of(agents, places) * scale),
        "limit_tokens": round(policy.fill * policy.capacity_tokens * scale),
        "places": sorted(places),
    }


def _model_view(d: Dispatcher, now: float) -> dict[str, Any]:
    view: dict[str, Any] = {"gate": str(d.gate), "waiting_on": waiting_on(d, now), "working_set": None}
    policy = d.policy
    if not isinstance(policy, KVAwareOrder) or d.kv_ledger is None:
        return view
    agents = d.kv_ledger.snapshot()
    c = _correction(d)
    places = policy.places(agents, now)
    resident = resident_agents(agents, policy.capacity_tokens)
    engine_capacity = c.capacity_tokens is not None
    view["working_set"] = {
        "capacity_tokens": c.capacity_tokens if engine_capacity else policy.capacity_tokens,
        "capacity_source": "engine" if engine_capacity else "configured",
        "usable_tokens": round(policy.capacity_tokens * c.scale),
        "working_set_tokens": round(footprint_of(agents, places) * c.scale),
        "resident_tokens": round(footprint_of(agents, resident) * c.scale),
        "engaged": d.kv_pressure.engaged,
        "demand_tokens": round(d.kv_pressure.demand_tokens * c.scale),
        "active_agents": d.kv_pressure.active_agents,
        "pressure_ratio": round(d.kv_pressure.ratio, 3),
        "engage_ratio": d.kv_pressure_rule.engage_ratio,
        "release_ratio": d.kv_pressure_rule.release_ratio,
        "agents_with_place": len(places),
        "agents_resident": len(resident),
        "correction": None if d.kv_corrector is None else _correction_view(c),
        "agents": _agents(d, now),
    }
    return view


def _correction_view(c: KVCorrection) -> dict[str, Any]:
    return {
        "scale": round(c.scale, 4),
        "residency": round(c.residency, 4),
        "engine_prefix_hit_ratio": None if c.hit_ratio is None else round(c.hit_ratio, 4),
        "expected_prefix_hit_ratio": None if c.expected_hit_ratio is None else round(c.expected_hit_ratio, 4),
        "scale_samples": c.scale_samples,
        "residency_samples": c.residency_samples,
        "engine_kv_usage": None if c.last is None else c.last.usage,
    }


def _agents(d: Dispatcher, now: float) -> dict[str, dict[str, Any]]:
    """agent -> its estimate under `d`'s `kv` policy (empty under other policies)."""
    policy = d.policy
    if not isinstance(policy, KVAwareOrder) or d.kv_ledger is None:
        return {}
    agents = d.kv_ledger.snapshot()
    scale = _correction(d).scale
    places = policy.places(agents, now)
    resident = resident_agents(agents, policy.capacity_tokens)
    return {
        agent: {
            "resident_tokens": round(s.context_tokens * scale) if agent in resident else 0,
            "context_tokens": round(s.context_tokens * scale),
            "resident": agent in resident,
            "has_place": agent in places,
            "in_flight": s.in_flight,
        }
        for agent, s in sorted(agents.items())
    }


def _correction(d: Dispatcher) -> KVCorrection:
    return _NO_CORRECTION if d.kv_corrector is None else d.kv_corrector.correction


class KVCollector:
    """`kv_status` as Prometheus gauges (read at scrape time). Every family is declared even when empty, so
    dashboards and alerts can name them under any policy."""

    def __init__(self, dispatchers: Mapping[str, Dispatcher]) -> None:
        self.dispatchers = dispatchers

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> Iterator[GaugeMetricFamily]:
        families = {
            name: GaugeMetricFamily(f"goose_sidecar_{name}", text, labels=labels)
            for name, text, labels in (
                ("queued_by_gate", "Calls waiting now, by the gate that holds them", ["model", "gate"]),
                ("kv_capacity_tokens", "KV capacity the kv policy plans with (the engine's when known)", ["model"]),
                ("kv_usable_tokens", "KV capacity after the correction from vLLM's counters", ["model"]),
                ("kv_working_set_tokens", "Estimated KV of the agents holding a working-set place", ["model"]),
                ("kv_resident_tokens", "Estimated KV of the agents probably resident in the prefix cache", ["model"]),
                ("kv_demand_tokens", "Estimated KV the active agents need (the engagement's demand)", ["model"]),
                ("kv_engaged", "1 while the kv policy's gates are engaged (KV pressure), else 0", ["model"]),
                ("kv_agent_resident_tokens", "Estimated resident KV of one resident agent", ["model", "agent"]),
                ("kv_correction_scale", "Engine KV tokens per token of the coordinator's accounting", ["model"]),
                ("kv_correction_residency", "Share of the KV capacity holding what the accounting expects", ["model"]),
                ("kv_prefix_hit_ratio", "Prefix-cache hit ratio, engine and expected, last interval", ["model", "of"]),
            )
        }
        for alias, d in self.dispatchers.items():
            _collect_one(families, alias, d, d.clock())
        yield from families.values()


def _collect_one(families: dict[str, GaugeMetricFamily], alias: str, d: Dispatcher, now: float) -> None:
    if d.queue:
        families["queued_by_gate"].add_metric([alias, str(d.gate)], len(d.queue))
    view = _model_view(d, now)["working_set"]
    if view is None:
        return
    for key in ("capacity_tokens", "usable_tokens", "working_set_tokens", "resident_tokens", "demand_tokens"):
        families[f"kv_{key}"].add_metric([alias], view[key])
    families["kv_engaged"].add_metric([alias], 1.0 if view["engaged"] else 0.0)
    for agent, entry in view["agents"].items():
        if entry["resident"]:
            families["kv_agent_resident_tokens"].add_metric([alias, agent], entry["resident_tokens"])
    correction = view["correction"]
    if correction is None:
        return
    families["kv_correction_scale"].add_metric([alias], correction["scale"])
    families["kv_correction_residency"].add_metric([alias], correction["residency"])
    for of in ("engine", "expected"):
        ratio = correction[f"{of}_prefix_hit_ratio"]
        if ratio is not None:
            families["kv_prefix_hit_ratio"].add_metric([alias, of], ratio)
