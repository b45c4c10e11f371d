"""Planning a call: classify (stage, tier) and route (model alias) from what the request and the agent's
sidecar said. A thin shell over `sidecar.core.stages` and `sidecar.core.routing`: it gathers the snapshot
(reported stages from the `AgentBook`, upstream saturation), the core decides."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from sidecar.config import Config
from sidecar.coordinator.agents import AgentBook
from sidecar.coordinator.dispatcher import Dispatcher
from sidecar.coordinator.upstream import Upstream, UpstreamPool
from sidecar.core.identity import Identity
from sidecar.core.openai_request import ParsedRequest
from sidecar.core.priority import Priority, resolve_priority
from sidecar.core.routing import (
    RouteDecision,
    RouteTable,
    SpillPolicy,
    consults_route,
    resolve_model,
    route_table_from,
)
from sidecar.core.stages import DEFAULT_STAGE_TIERS, Tier, stage_tiers_from
from sidecar.core.task_kind import classify_task


@dataclass(frozen=True)
class CallPlan:
    priority: Priority
    route: RouteDecision
    upstream: Upstream
    dispatcher: Dispatcher

    @property
    def tier(self) -> Tier:
        return self.priority.tier


class Planner:
    def __init__(
        self, config: Config, pool: UpstreamPool, dispatchers: Mapping[str, Dispatcher], book: AgentBook
    ) -> None:
        """`book`: where the stages the sidecars reported are kept (per agent and per session)."""
        self.config = config
        self.pool = pool
        self.dispatchers = dispatchers
        self.book = book
        self.stage_tiers = (
            stage_tiers_from(config.scheduling.stage_tiers) if config.scheduling.stage_tiers else (DEFAULT_STAGE_TIERS)
        )
        aliases = [u.alias for u in pool.upstreams]
        self.routes: RouteTable = (
            route_table_from(config.routing.routes, aliases) if config.routing.routes else (RouteTable())
        )
        self.spill = SpillPolicy(enabled=config.routing.spill_over)
        self.opted_out = frozenset(config.routing.opt_out_agents)

    def plan(self, parsed: ParsedRequest, identity: Identity, header_priority: str | None, now: float) -> CallPlan:
        messages = parsed.body.get("messages")
        messages = messages if isinstance(messages, list) else []
        explicit: object = parsed.tier_word if parsed.tier_word is not None else parsed.native_priority
        priority = resolve_priority(
            explicit,
            header_priority,
            self.book.latest_stage(identity.agent_id, identity.session_id),
            now,
            self.config.scheduling.stage_ttl_s,
            messages,
            self.stage_tiers,
        )
        aliases = {u.alias: u.served_name for u in self.pool.upstreams}
        routing = self.config.routing
        requested = parsed.model if routing.enabled or parsed.model.lower() != "auto" else routing.default_alias
        route_alias = routing.default_alias
        load: dict[str, float] | None = None
        if consults_route(requested, aliases):  # else a named model: no classification, no load reading
            if routing.enabled:
                route_alias = self.routes.alias_for(priority.stage, classify_task(priority.stage, messages).kind)
            if routing.spill_over:
                load = {alias: d.saturation() for alias, d in self.dispatchers.items()}
        decision = resolve_model(
            requested,
            aliases,
            route_alias,
            identity.agent_id in self.opted_out,
            default_alias=routing.default_alias,
            load=load,
            spill=self.spill,
        )
        alias = decision.alias if decision.alias is not None else self.pool.upstreams[0].alias
        upstream = next(u for u in self.pool.upstreams if u.alias == alias)
        return CallPlan(priority, decision, upstream, self.dispatchers[alias])
