"""One fleet on one virtual clock: agents (programs), the coordinator's real dispatchers, the simulator's engines.

Per replica: one `sim.engine.Engine` (vLLM V1's scheduler, 16-token blocks, prefix cache with LRU, recompute
preemption), stepped by the loop (a step's results are delivered at its end time, then the next step is scheduled),
and one `coordinator.dispatcher.Dispatcher` built by the coordinator's own `make_dispatcher` from the condition's
settings, reading the loop's clock. Agents are pinned to replicas round-robin (sticky sessions, so each replica's
prefix cache sees an agent's every turn). Every `metrics_interval_s` each dispatcher gets a scrape of its engine as
the coordinator's metrics watcher would (vLLM's waiting, running, KV usage, preemptions), which also wakes its pump.

A call: the agent submits to its replica's dispatcher with its prompt size; when granted it reaches the engine
`frontend_s` later (vLLM's API server); when it finishes, the slot is released with the call's GPU tokens (uncached
prompt + output, as the proxy computes from `usage`) and its context size, and the agent runs its tool call.
No sockets, no threads, no wall clock: the same scenario and seed give the same numbers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from sidecar.bench.fleetsim.conditions import Condition
from sidecar.bench.fleetsim.loop import Loop
from sidecar.bench.fleetsim.program import Program
from sidecar.bench.fleetsim.scenario import FleetSimScenario
from sidecar.config import Config
from sidecar.coordinator.app import make_dispatcher
from sidecar.coordinator.dispatcher import Dispatcher, Slot
from sidecar.coordinator.settings import SchedulingSettings
from sidecar.core.admission import UpstreamMetrics
from sidecar.core.stages import Tier
from sidecar.sim.engine import Engine, Request, StepResult
from sidecar.sim.kv import block_hashes
from sidecar.sim.profiles import Profile


@dataclass
class CallRecord:
    agent: str
    turn: int
    tier: Tier
    issued: float
    granted: float = 0.0
    first_scheduled: float = 0.0
    finished: float = 0.0
    prompt_tokens: int = 0
    cached_tokens: int = 0
    output_tokens: int = 0
    preemptions: int = 0


@dataclass
class AgentState:
    program: Program
    replica: int
    tokens: list[int]
    hashes: list[int] = field(default_factory=list)
    turn: int = 0
    next_id: int = 0
    start: float = 0.0
    end: float | None = None


@dataclass
class FleetRun:
    """What one condition did under one seed (raw; `report.py` summarises)."""

    condition: str
    seed: int
    replicas: int
    makespan_s: float
    agents: dict[str, tuple[float, float]]  # agent -> (start, end)
    calls: list[CallRecord]
    prefix_queries: int
    prefix_hits: int
    preemptions: int
    busy_s: float
    events: int


class Replica:
    def __init__(self, loop: Loop, engine: Engine, dispatcher: Dispatcher, on_done: Callable[[Request], None]) -> None:
        self.loop = loop
        self.engine = engine
        self.dispatcher = dispatcher
        self.on_done = on_done
        self.busy = False

    def add(self, request: Request) -> None:
        self.engine.add(request)
        self.kick()

    def kick(self) -> None:
        """Start the next step now unless one is running (a step's effects land at its end)."""
        if self.busy:
            return
        self.engine.now = max(self.engine.now, self.loop.now)
        result = self.engine.step()
        if result is not None:
            self.busy = True
            self.loop.at(result.end, self._step_done, result)

    def _step_done(self, result: StepResult) -> None:
        self.busy = False
        for request in result.finished:
            self.on_done(request)
        self.kick()

    def scrape(self) -> UpstreamMetrics:
        e = self.engine
        return UpstreamMetrics(
            waiting=e.num_waiting,
            running=e.num_running,
            kv_usage=e.kv.usage,
            preemptions_total=float(e.counters.preemptions),
            scraped_at=self.loop.now,
        )


class FleetSim:
    def __init__(
        self,
        scenario: FleetSimScenario,
        condition: Condition,
        profile: Profile,
        programs: list[Program],
        seed: int,
        replicas: int | None = None,
    ) -> None:
        self.scenario = scenario
        self.condition = condition
        self.profile = profile
        self.seed = seed
        self.loop = Loop()
        self.num_replicas = replicas if replicas is not None else scenario.gpu.replicas
        c = scenario.coordinator
        settings = SchedulingSettings.model_validate(
            {
                "aging_s": c.aging_s,
                "kv_keep_s": c.kv_keep_s,
                "kv_capacity_tokens": profile.kv_capacity_tokens,
                "max_window": c.max_window,
                "hot_pool": c.hot_pool,
                "cold_pool": c.cold_pool,
                "metrics_interval_s": c.metrics_interval_s,
                **condition.scheduling,
            }
        )
        config = Config(scheduling=settings)
        self.replicas: list[Replica] = []
        for i in range(self.num_replicas):
            dispatcher = make_dispatcher(f"replica-{i}", config)
            dispatcher.clock = self.loop.clock  # the production dispatcher on the virtual clock
            engine = Engine(profile, condition.engine_policy)
            self.replicas.append(Replica(self.loop, engine, dispatcher, self._finished))
        self.shared: dict[int, list[int]] = {}
        prefix = scenario.fleet.system_prompt_tokens + scenario.fleet.tool_list_tokens
        for r in range(scenario.fleet.recipes):
            self.shared[r] = [1_000_000 * (r + 1) + i for i in range(prefix)]
        self.agents: dict[str, AgentState] = {}
        for i, program in enumerate(programs):
            base = 1_000_000_000 + 10_000_000 * i
            tokens = [*self.shared[program.recipe], *range(base, base + program.task_tokens)]
            state = AgentState(program, i % self.num_replicas, tokens, next_id=base + 5_000_000)
            block_hashes(state.tokens, profile.block_size, state.hashes)
            self.agents[program.agent] = state
        self.calls: list[CallRecord] = []
        self._live: dict[str, tuple[AgentState, Slot, CallRecord]] = {}
        self.remaining = len(programs)

    # --- the run --------------------------------------------------------------------------------------------

    def run(self) -> FleetRun:
        for state in self.agents.values():
            self.loop.at(state.program.start_s, self._start_agent, state)
        for replica in self.replicas:
            self.loop.at(0.0, self._scrape, replica)
        self.loop.run(until=lambda: self.remaining == 0)
        ends = [s.end for s in self.agents.values() if s.end is not None]
        counters = [r.engine.counters for r in self.replicas]
        return FleetRun(
            condition=self.condition.name,
            seed=self.seed,
            replicas=self.num_replicas,
            makespan_s=max(ends, default=0.0),
            agents={a: (s.start, s.end if s.end is not None else float("nan")) for a, s in self.agents.items()},
            calls=self.calls,
            prefix_queries=sum(c.prefix_cache_queries for c in counters),
            prefix_hits=sum(c.prefix_cache_hits for c in counters),
            preemptions=sum(c.preemptions for c in counters),
            busy_s=sum(c.busy_seconds for c in counters),
            events=self.loop.events,
        )

    def _scrape(self, replica: Replica) -> None:
        if self.remaining == 0:
            return
        replica.dispatcher.observe_metrics(replica.scrape())
        self.loop.at(self.loop.now + self.scenario.coordinator.metrics_interval_s, self._scrape, replica)

    def _start_agent(self, state: AgentState) -> None:
        state.start = self.loop.now
        self._issue(state)

    def _issue(self, state: AgentState) -> None:
        turn = state.program.turns[state.turn]
        record = CallRecord(state.program.agent, state.turn, turn.tier, self.loop.now)
        record.prompt_tokens = len(state.tokens)
        dispatcher = self.replicas[state.replica].dispatcher
        dispatcher.submit(
            state.program.agent,
            turn.tier,
            lambda slot: self._granted(state, slot, record),
            prompt_tokens=len(state.tokens),
        )

    def _granted(self, state: AgentState, slot: Slot, record: CallRecord) -> None:
        record.granted = self.loop.now
        self.loop.at(self.loop.now + self.profile.frontend_s, self._enter_engine, state, slot, record)

    def _enter_engine(self, state: AgentState, slot: Slot, record: CallRecord) -> None:
        turn = state.program.turns[state.turn]
        output = tuple(range(state.next_id, state.next_id + turn.output_tokens))
        state.next_id += turn.output_tokens
        request_id = f"{state.program.agent}:{state.turn}"
        request = Request(
            request_id=request_id,
            prompt=tuple(state.tokens),
            output=output,
            priority=turn.tier.rank if self.condition.native_priority else 0,
            arrival=self.loop.now,
        )
        request.hashes = list(state.hashes)  # the agent's prefix hashes so far (the engine extends its own copy)
        self._live[request_id] = (state, slot, record)
        self.replicas[state.replica].add(request)

    def _finished(self, request: Request) -> None:
        state, slot, record = self._live.pop(request.request_id)
        record.finished = self.loop.now
        record.first_scheduled = request.first_scheduled if request.first_scheduled is not None else self.loop.now
        record.cached_tokens = max(request.num_cached_tokens, 0)
        record.output_tokens = len(request.output)
        record.preemptions = request.num_preemptions
        self.calls.append(record)
        prompt = len(request.prompt)
        slot.release(
            float(prompt - record.cached_tokens + record.output_tokens),
            prompt + record.output_tokens,
            record.cached_tokens,
        )
        state.tokens.extend(request.output)
        turn = state.program.turns[state.turn]
        if turn.action is None:
            state.end = self.loop.now
            self.remaining -= 1
            return
        self.loop.at(self.loop.now + turn.tool_s, self._tool_done, state, turn.result_tokens)

    def _tool_done(self, state: AgentState, result_tokens: int) -> None:
        state.tokens.extend(range(state.next_id, state.next_id + result_tokens))
        state.next_id += result_tokens
        block_hashes(state.tokens, self.profile.block_size, state.hashes)
        state.turn += 1
        self._issue(state)
