"""Which model, and which replica of it, serves a call.

route table   stage / task kind -> model alias (`small`, `large`); the seed routed simple work (docstrings, commit
              messages) to 7B and complex debugging to 32B (`seed/000_bc7af0ed774b52c4.txt`, "Model Routing").
resolve_model `"auto"` is routed, an alias resolved, a served model name honoured, anything else passed through;
              spill-over to an idle alias when the routed one is saturated (never for opted-out agents).
pick_replica  session affinity by rendezvous hashing (the same agent on the same replica keeps its prefix cache
              warm; adding a replica moves only the agents that now prefer it), unless that replica is much more
              loaded than the least loaded one; unhealthy replicas are skipped.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType

from sidecar.core.stages import Stage, TaskKind

SMALL = "small"
LARGE = "large"
AUTO = "auto"


def _default_by_task() -> Mapping[TaskKind, str]:
    return MappingProxyType({TaskKind.SIMPLE: SMALL, TaskKind.COMPLEX: LARGE})


def _no_stage_routes() -> Mapping[Stage, str]:
    return MappingProxyType({})


@dataclass(frozen=True)
class RouteTable:
    """Stage overrides first, then task kind: `alias_for(stage, task)`. Default: simple -> small, complex -> large."""

    by_task: Mapping[TaskKind, str] = field(default_factory=_default_by_task)
    by_stage: Mapping[Stage, str] = field(default_factory=_no_stage_routes)

    def alias_for(self, stage: Stage | None, task: TaskKind) -> str:
        """The alias for a call: its stage's route if the table has one, else its task kind's (large if missing)."""
        if stage is not None and stage in self.by_stage:
            return self.by_stage[stage]
        return self.by_task.get(task, LARGE)


def route_table_from(raw: Mapping[str, str], aliases: Collection[str]) -> RouteTable:
    """A route table from config: keys are task kinds (`simple`, `complex`) or stage names, values model aliases.

    Task kinds not given keep the default (simple -> small, complex -> large). Raises ValueError naming every unknown
    key and every alias not in `aliases` at once.
    """
    by_task = dict(_default_by_task())
    by_stage: dict[Stage, str] = {}
    errors = []
    for key, alias in raw.items():
        if alias not in aliases:
            errors.append(f"route {key!r} -> unknown model alias {alias!r}")
        if key in {kind.value for kind in TaskKind}:
            by_task[TaskKind(key)] = alias
        elif key in {stage.value for stage in Stage}:
            by_stage[Stage(key)] = alias
        else:
            errors.append(f"unknown route key {key!r} (task kinds: {', '.join(TaskKind)}; stages: {', '.join(Stage)})")
    if errors:
        raise ValueError("; ".join(errors))
    return RouteTable(MappingProxyType(by_task), MappingProxyType(by_stage))


class RouteReason(StrEnum):
    """How the model was chosen (a metric label)."""

    ROUTED = "routed"  # "auto": the route table chose
    SPILLED = "spilled"  # "auto": the routed alias was saturated, another idle one took it
    OPTED_OUT = "opted_out"  # "auto" from an agent that opted out of routing: the default alias
    ALIAS = "alias"  # the request named an alias
    EXPLICIT = "explicit"  # the request named a served model: honoured
    PASSTHROUGH = "passthrough"  # unknown name: sent as is (to the default alias' upstream, which answers 404)


@dataclass(frozen=True)
class SpillPolicy:
    """Spill-over for routed calls: when the routed alias' saturation >= saturated_at, use the least saturated other
    alias whose saturation < idle_below (aliases without a reading are never spilled to)."""

    enabled: bool = True
    saturated_at: float = 1.0
    idle_below: float = 0.5


@dataclass(frozen=True)
class RouteDecision:
    """`alias`: whose upstream gets the call (None only when no alias is configured). `served_name`: the `model` to
    send upstream. `reason`/`detail`: why."""

    alias: str | None
    served_name: str
    reason: RouteReason
    detail: str = ""


def consults_route(requested: str | None, aliases: Mapping[str, str]) -> bool:
    """Whether `resolve_model` may use its `route` and `load` for this `model`: False when the name is an alias,
    a served name, or (one alias) `large`/`small`, or any other name passed through; only `"auto"` (any case), a
    missing or an empty name is routed. Callers skip classifying the call and reading the load otherwise."""
    name = (requested or "").strip()
    if name in aliases or name in aliases.values():
        return False
    if len(aliases) == 1 and name.lower() in (LARGE, SMALL):
        return False
    return not name or name.lower() == AUTO


def resolve_model(
    requested: str | None,
    aliases: Mapping[str, str],
    route: str,
    opted_out: bool,
    *,
    default_alias: str = LARGE,
    load: Mapping[str, float] | None = None,
    spill: SpillPolicy = SpillPolicy(),  # frozen, so sharing the default is safe
) -> RouteDecision:
    """The alias and served model name for a call's `model` field.

    `aliases` maps alias -> served model name; `route` is the route table's alias for this call; `load` maps alias ->
    saturation (`admission.saturation`). `"auto"` (any case; also a missing or empty model) goes to `route`, or to
    `default_alias` for an opted-out agent, and may spill over (not when opted out). An alias name resolves to its
    served name; a served name is honoured as is; other names pass through unchanged to `default_alias`' upstream.
    With one configured alias, `large` and `small` (any case) name it too: one upstream serves every model, and
    passing those names through would only get the upstream's 404. A route or default that is not configured falls
    back to the default alias, then to the first configured alias.
    """
    name = (requested or "").strip()
    if name in aliases:
        return RouteDecision(name, aliases[name], RouteReason.ALIAS)
    for alias, served in aliases.items():
        if served == name:
            return RouteDecision(alias, served, RouteReason.EXPLICIT)
    if len(aliases) == 1 and name.lower() in (LARGE, SMALL):
        only = next(iter(aliases))
        return RouteDecision(only, aliases[only], RouteReason.ALIAS, f"one upstream: {name!r} is {only!r}")
    fallback = _configured(default_alias, aliases)
    if name and name.lower() != AUTO:
        return RouteDecision(fallback, name, RouteReason.PASSTHROUGH, "not a configured alias or served model")
    if fallback is None:
        return RouteDecision(None, name or AUTO, RouteReason.PASSTHROUGH, "no model configured")
    if opted_out:
        return RouteDecision(fallback, aliases[fallback], RouteReason.OPTED_OUT)
    chosen = route if route in aliases else fallback
    detail = "" if chosen == route else f"route {route!r} is not configured"
    if spill.enabled and load is not None and load.get(chosen, 0.0) >= spill.saturated_at:
        idle = sorted(
            (value, alias)
            for alias, value in load.items()
            if alias in aliases and alias != chosen and value < spill.idle_below
        )
        if idle:
            other = idle[0][1]
            note = f"{chosen} saturated ({load[chosen]:.2f}), {other} idle ({idle[0][0]:.2f})"
            return RouteDecision(other, aliases[other], RouteReason.SPILLED, note)
    return RouteDecision(chosen, aliases[chosen], RouteReason.ROUTED, detail)


def _configured(preferred: str, aliases: Mapping[str, str]) -> str | None:
    if preferred in aliases:
        return preferred
    return next(iter(aliases), None)


# ---------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReplicaState:
    """One replica of a model: its URL, health, and load (calls the coordinator has in flight there plus the
    replica's own waiting queue when known)."""

    url: str
    healthy: bool = True
    in_flight: int = 0
    waiting: int = 0

    @property
    def load(self) -> int:
        """in_flight + waiting."""
        return self.in_flight + self.waiting


class ReplicaReason(StrEnum):
    """Why a replica was chosen (a metric label)."""

    AFFINITY = "affinity"
    LEAST_LOADED = "least_loaded"


@dataclass(frozen=True)
class ReplicaChoice:
    """The chosen replica: its index in the input, its URL, why."""

    index: int
    url: str
    reason: ReplicaReason


def rendezvous_score(agent_key: str, url: str) -> int:
    """Highest-random-weight hash of (agent, replica): stable across processes and runs (blake2b, not `hash`)."""
    digest = hashlib.blake2b(f"{agent_key}\x00{url}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def pick_replica(
    replicas: Sequence[ReplicaState],
    agent_key: str,
    *,
    slack_calls: int = 2,
    slack_ratio: float = 0.5,
) -> ReplicaChoice | None:
    """The replica for one call of `agent_key`; None when no replica is healthy.

    The agent's preferred replica is the healthy one with the highest `rendezvous_score`; it is kept while its load
    is at most least_load + max(slack_calls, slack_ratio x least_load). Otherwise the least loaded healthy replica,
    ties broken by rendezvous score (so the choice is deterministic and still leans toward the agent's own).
    """
    healthy = [(index, replica) for index, replica in enumerate(replicas) if replica.healthy]
    if not healthy:
        return None
    scores = {index: rendezvous_score(agent_key, replica.url) for index, replica in healthy}
    preferred_index, preferred = max(healthy, key=lambda pair: scores[pair[0]])
    least_load = min(replica.load for _, replica in healthy)
    if preferred.load <= least_load + max(slack_calls, slack_ratio * least_load):
        return ReplicaChoice(preferred_index, preferred.url, ReplicaReason.AFFINITY)
    index, replica = min(healthy, key=lambda pair: (pair[1].load, -scores[pair[0]]))
    return ReplicaChoice(index, replica.url, ReplicaReason.LEAST_LOADED)
