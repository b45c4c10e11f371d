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
Each replica also accounts where its GPU time goes (`GpuTime`: prefill of new or recomputed tokens, decode by
batch), from every step's shape as the engine scheduled it.
No sockets, no threads, no wall clock: the same scenario and seed give the same numbers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from sidecar.bench.fleetsim.conditions import Condition
from sidecar.bench.fleetsim.loop import Loop
from sidecar.bench.fleetsim.prefetch import Prefetcher, results_known
from sidecar.bench.fleetsim.profiles import fleet_profile
from sidecar.bench.fleetsim.program import Program, tool_name
from sidecar.bench.fleetsim.scenario import FleetSimScenario
from sidecar.bench.fleetsim.speculation import early_safe, prerun_end, streamed_tools_end
from sidecar.config import Config
from sidecar.coordinator.app import make_dispatcher
from sidecar.coordinator.dispatcher import Dispatcher, Slot
from sidecar.coordinator.settings import SchedulingSettings, SpeculationSettings
from sidecar.core.admission import UpstreamMetrics
from sidecar.core.prediction import Action
from sidecar.core.routing import AUTO, LARGE, SMALL, RouteReason, RouteTable, SpillPolicy, route_call
from sidecar.core.stages import Stage, Tier
from sidecar.core.task_kind import classify_task
from sidecar.core.working_set import KVAwareOrder, WarmDecision, warm_decision
from sidecar.sim.engine import Engine, Request, StepResult
from sidecar.sim.kv import block_hashes
from sidecar.sim.latency import StepShape, step_seconds
from sidecar.sim.profiles import Profile

_ALIASES = {LARGE: "large", SMALL: "small"}  # routing's aliases in the simulation (served names do not matter)


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
    replica: int = 0


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
    prerun_start: float | None = None  # tests pre-running on the state after its last edit, since then


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
    speculation: dict[str, float] = field(default_factory=dict)  # warm-ups, pre-runs, early tool runs (counts)
    gpu: dict[str, float] = field(default_factory=dict)  # where the GPU time went (`GpuTime.as_dict`), all replicas


@dataclass
class GpuTime:
    """Where one replica's GPU time goes, step by step. A step's decode part is what its decoding sequences alone
    would cost (`step_seconds` of a decode-only step of them); the rest of the step is prefill, split between new
    tokens and recomputed ones by their token counts. A prompt token is new the first time the engine computes its
    position of the agent's context (of the recipe's shared prefix: the first time on this replica); computing it
    again, after an eviction or a preemption, is recomputation."""

    prefill_new_s: float = 0.0
    prefill_recomputed_s: float = 0.0
    prefill_new_tokens: int = 0
    prefill_recomputed_tokens: int = 0
    decode_s: float = 0.0
    decode_steps: int = 0
    decode_tokens: int = 0
    decode_context: int = 0  # context tokens attended by decoding sequences, summed over steps
    decode_s_by_batch: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0])  # batch 1, 2, 3+

    def as_dict(self) -> dict[str, float]:
        return {
            "prefill_new_s": self.prefill_new_s,
            "prefill_recomputed_s": self.prefill_recomputed_s,
            "prefill_new_tokens": float(self.prefill_new_tokens),
            "prefill_recomputed_tokens": float(self.prefill_recomputed_tokens),
            "decode_s": self.decode_s,
            "decode_steps": float(self.decode_steps),
            "decode_tokens": float(self.decode_tokens),
            "decode_context": float(self.decode_context),
            "decode_b1_s": self.decode_s_by_batch[0],
            "decode_b2_s": self.decode_s_by_batch[1],
            "decode_b3_s": self.decode_s_by_batch[2],
        }


def _sum_gpu(parts: list[GpuTime]) -> dict[str, float]:
    total: dict[str, float] = {}
    for part in parts:
        for key, value in part.as_dict().items():
            total[key] = total.get(key, 0.0) + value
    return total


class Replica:
    def __init__(
        self,
        loop: Loop,
        engine: Engine,
        dispatcher: Dispatcher,
        on_done: Callable[[Request], None],
        prefix_tokens: int,
    ) -> None:
        self.loop = loop
        self.engine = engine
        self.dispatcher = dispatcher
        self.on_done = on_done
        self.busy = False
        self.prefix_tokens = prefix_tokens  # the recipes' shared prefix: positions below it are the recipe's
        self.gpu = GpuTime()
        self._owner: dict[str, tuple[Request, str, int]] = {}  # live request id -> (it, agent, recipe)
        self._computed: dict[str, int] = {}  # agent -> positions of its context computed so far (high-water mark)
        self._prefix_computed: dict[int, int] = {}  # recipe -> positions of its shared prefix computed here

    def add(self, request: Request, agent: str, recipe: int) -> None:
        self._owner[request.request_id] = (request, agent, recipe)
        self.engine.add(request)
        self.kick()

    def kick(self) -> None:
        """Start the next step now unless one is running (a step's effects land at its end)."""
        if self.busy:
            return
        self.engine.now = max(self.engine.now, self.loop.now)
        result = self.engine.step()
        if result is not None:
            self._account(result)
            self.busy = True
            self.loop.at(result.end, self._step_done, result)

    def _account(self, result: StepResult) -> None:
        """Add one step to `gpu` (`GpuTime`): its decode part, and its prefill part as new or recomputed tokens."""
        g = self.gpu
        decoding = decode_context = new = recomputed = 0
        prefix = self.prefix_tokens
        for request_id, n in result.scheduled.items():
            request, agent, recipe = self._owner[request_id]
            end = request.num_computed  # after the step
            start = end - n
            done = self._computed.get(agent, prefix)
            if n == 1 and request.num_output >= 2 and end == len(request.prompt) + request.num_output - 1:
                decoding += 1  # the engine's decode test, read after the step (`Engine._run`)
                decode_context += end
            else:
                own_start = max(start, prefix)
                if end > own_start:
                    fresh = max(0, end - max(done, own_start))
                    new += fresh
                    recomputed += end - own_start - fresh
                if start < prefix:
                    top = min(end, prefix)
                    fresh = max(0, top - max(self._prefix_computed.get(recipe, 0), start))
                    new += fresh
                    recomputed += top - start - fresh
                    self._prefix_computed[recipe] = max(self._prefix_computed.get(recipe, 0), top)
            self._computed[agent] = max(done, end)
        step_s = result.end - result.start
        decode_s = 0.0
        if decoding:
            shape = StepShape(decoding, 0, decoding, decode_context)
            decode_s = min(step_seconds(self.engine.profile, shape), step_s)
            g.decode_s += decode_s
            g.decode_steps += 1
            g.decode_tokens += decoding
            g.decode_context += decode_context
            g.decode_s_by_batch[min(decoding, 3) - 1] += decode_s
        if new + recomputed:
            prefill_s = step_s - decode_s
            g.prefill_new_s += prefill_s * new / (new + recomputed)
            g.prefill_recomputed_s += prefill_s * recomputed / (new + recomputed)
            g.prefill_new_tokens += new
            g.prefill_recomputed_tokens += recomputed

    def _step_done(self, result: StepResult) -> None:
        self.busy = False
        for request in result.finished:
            self._owner.pop(request.request_id, None)
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
        large = replicas if replicas is not None else condition.large_replicas or scenario.gpu.replicas
        self.num_large = large  # agents are pinned to these; a small-model replica (if any) comes after them
        profiles = [profile] * large
        if condition.small_model and replicas is None:
            profiles.append(fleet_profile(scenario.gpu.small_profile))
        self.num_replicas = len(profiles)
        self.small_replica = large if len(profiles) > large else None
        self.replicas: list[Replica] = []
        prefix = scenario.fleet.system_prompt_tokens + scenario.fleet.tool_list_tokens
        for i, replica_profile in enumerate(profiles):
            dispatcher = make_dispatcher(f"replica-{i}", Config(scheduling=self._settings(replica_profile)))
            dispatcher.clock = self.loop.clock  # the production dispatcher on the virtual clock
            engine = Engine(replica_profile, condition.engine_policy)
            self.replicas.append(Replica(self.loop, engine, dispatcher, self._finished, prefix))
        self.shared: dict[int, list[int]] = {}
        for r in range(scenario.fleet.recipes):
            self.shared[r] = [1_000_000 * (r + 1) + i for i in range(prefix)]
        self.agents: dict[str, AgentState] = {}
        for i, program in enumerate(programs):
            base = 1_000_000_000 + 10_000_000 * i
            tokens = [*self.shared[program.recipe], *range(base, base + program.task_tokens)]
            state = AgentState(program, i % self.num_large, tokens, next_id=base + 5_000_000)
            block_hashes(state.tokens, profile.block_size, state.hashes)
            self.agents[program.agent] = state
        self.calls: list[CallRecord] = []
        self._live: dict[str, tuple[AgentState, Slot, CallRecord]] = {}
        self._warm: dict[str, tuple[AgentState, Slot]] = {}
        self.remaining = len(programs)
        self.computed = [0] * self.num_replicas  # prompt tokens the real calls computed, per replica
        self.warmed = [0] * self.num_replicas  # context tokens warm-ups were started for, per replica
        self.speculation: dict[str, float] = {}
        self.routes = RouteTable()
        self.spill = SpillPolicy(enabled=condition.spill)
        self.prefetcher: Prefetcher | None = None
        self.known: dict[str, tuple[bool, ...]] = {}
        if condition.prefetch:
            self.prefetcher = Prefetcher(
                SpeculationSettings(enabled=True, mode="prefetch"),
                [r.dispatcher for r in self.replicas],
                send=lambda i, request: self.replicas[i].add(request, *self._whose(request)),
                abort=lambda i, request_id: self.replicas[i].engine.abort(request_id),
                later=lambda delay, callback: self.loop.at(self.loop.now + delay, callback),
                clock=self.loop.clock,
                frontend_s=profile.frontend_s,
            )
            self.known = {p.agent: results_known(p) for p in programs}
            # the programs' own share of answers whose tool results the sidecar has cached (the gate aside)
            self.prefetcher.counts["answers_with_tools"] = float(sum(len(p.turns) - 1 for p in programs))
            self.prefetcher.counts["answers_known"] = float(sum(sum(k) for k in self.known.values()))

    def _whose(self, request: Request) -> tuple[str, int]:
        """The agent and recipe of a request this fleet made (every request id starts with `agent:`)."""
        agent = request.request_id.partition(":")[0]
        return agent, self.agents[agent].program.recipe

    def _settings(self, profile: Profile) -> SchedulingSettings:
        c = self.scenario.coordinator
        return SchedulingSettings.model_validate(
            {
                "aging_s": c.aging_s,
                "kv_keep_s": c.kv_keep_s,
                "kv_capacity_tokens": profile.kv_capacity_tokens,
                "max_window": c.max_window,
                "hot_pool": c.hot_pool,
                "cold_pool": c.cold_pool,
                "metrics_interval_s": c.metrics_interval_s,
                **self.condition.scheduling,
            }
        )

    def _route(self, state: AgentState, stage: Stage) -> int:
        """The replica for this call: the agent's own, or the small model's where the coordinator's routing
        decision (`core.routing.route_call`, as `Planner` asks it) sends a `model: auto` call: the route table's
        alias for its stage (simple work: commit messages, docs), spilled over to the other model when the
        condition spills and the routed one is saturated by the readings its dispatcher has
        (`Dispatcher.saturation`: its queue and the engine's last scrape)."""
        if self.small_replica is None:
            return state.replica
        small = self.small_replica

        def load() -> dict[str, float]:
            return {
                LARGE: self.replicas[state.replica].dispatcher.saturation(),
                SMALL: self.replicas[small].dispatcher.saturation(),
            }

        decision = route_call(
            self.routes,
            stage,
            lambda: classify_task(stage, ()).kind,
            AUTO,
            _ALIASES,
            load=load if self.spill.enabled else None,
            spill=self.spill,
        )
        if decision.reason is RouteReason.SPILLED:
            self._count(f"spilled to {decision.alias}")
        return small if decision.alias == SMALL else state.replica

    # --- the run --------------------------------------------------------------------------------------------

    def run(self) -> FleetRun:
        for state in self.agents.values():
            self.loop.at(state.program.start_s, self._start_agent, state)
        for replica in self.replicas:
            self.loop.at(0.0, self._scrape, replica)
        self.loop.run(until=lambda: self.remaining == 0)
        ends = [s.end for s in self.agents.values() if s.end is not None]
        if self.prefetcher is not None:
            for key, value in self.prefetcher.counts.items():
                self._count(f"prefetch: {key}", value)
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
            speculation=dict(sorted(self.speculation.items())),
            gpu=_sum_gpu([r.gpu for r in self.replicas]),
        )

    def _count(self, key: str, amount: float = 1.0) -> None:
        self.speculation[key] = self.speculation.get(key, 0.0) + amount

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
        if self.prefetcher is not None and self._served(state, record):
            return
        record.replica = self._route(state, turn.stage)
        dispatcher = self.replicas[record.replica].dispatcher
        dispatcher.submit(
            state.program.agent,
            turn.tier,
            lambda slot: self._granted(state, slot, record),
            prompt_tokens=len(state.tokens),
        )

    def _granted(self, state: AgentState, slot: Slot, record: CallRecord) -> None:
        record.granted = self.loop.now
        frontend_s = self.replicas[record.replica].engine.profile.frontend_s
        self.loop.at(self.loop.now + frontend_s, self._enter_engine, state, slot, record)

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
        self.replicas[record.replica].add(request, state.program.agent, state.program.recipe)

    def _finished(self, request: Request) -> None:
        if request.request_id in self._warm:
            self._warm_done(request)
            return
        if self.prefetcher is not None and self.prefetcher.owns(request.request_id):
            self.prefetcher.finished(request)
            return
        state, slot, record = self._live.pop(request.request_id)
        self._answered(state, record, request, slot)

    def _answered(
        self,
        state: AgentState,
        record: CallRecord,
        request: Request,
        slot: Slot | None,
        served_by: Dispatcher | None = None,
    ) -> None:
        """The agent has its answer to `record` (`request` ran it; `slot` is None for one served from a
        speculative call, which took no dispatcher slot, and `served_by` that call's dispatcher, told as the
        coordinator's `Speculator.serve` tells it): account for it and run the turn's tool calls."""
        record.finished = self.loop.now
        first = request.first_scheduled if request.first_scheduled is not None else self.loop.now
        record.first_scheduled = max(first, record.issued)  # a speculative call may have started before it
        record.cached_tokens = max(request.num_cached_tokens, 0)
        record.output_tokens = len(request.output)
        record.preemptions = request.num_preemptions
        self.calls.append(record)
        prompt = len(request.prompt)
        turn = state.program.turns[state.turn]
        if slot is not None:
            slot.release(
                float(prompt - record.cached_tokens + record.output_tokens),
                prompt + record.output_tokens,
                record.cached_tokens,
                long_tool=turn.action is Action.RUN_TESTS,  # the tool the answer calls, as the proxy relays it
            )
        elif served_by is not None:
            served_by.speculative_answer_ended(
                state.program.agent,
                prompt + record.output_tokens,
                record.cached_tokens,
                long_tool=turn.action is Action.RUN_TESTS,
            )
        self.computed[record.replica] += prompt - record.cached_tokens
        state.tokens.extend(request.output)
        if self.prefetcher is not None:
            self._prefetch_next(state, record.replica)
        if turn.action is None:
            state.end = self.loop.now
            self.remaining -= 1
            return
        first_token = request.first_token if request.first_token is not None else self.loop.now
        tools_end = self._tools_end(state, turn.action, turn.tool_s, turn.tool_calls, first_token)
        if self.condition.warming and turn.tool_s >= self.scenario.coordinator.warm_min_tool_s:
            lead = self.scenario.coordinator.warm_lead_s
            self.loop.at(max(tools_end - lead, self.loop.now), self._maybe_warm, state, state.turn)
        self.loop.at(tools_end, self._tool_done, state, turn.result_tokens)

    # --- exact LLM prefetch (`prefetch.py`) -----------------------------------------------------------------

    def _prefetch_next(self, state: AgentState, replica: int) -> None:
        """The answer to turn `state.turn` has reached the agent: the coordinator's follow-up."""
        assert self.prefetcher is not None
        k = state.turn
        turn = state.program.turns[k]

        def predicted() -> Request:
            # Exactly the next request: the context, this turn's (cached) tool result, then the next answer. The
            # ids are those `_tool_done` and `_enter_engine` will take next, in that order.
            results = range(state.next_id, state.next_id + turn.result_tokens)
            start = state.next_id + turn.result_tokens
            output = tuple(range(start, start + state.program.turns[k + 1].output_tokens))
            request = Request(
                request_id=f"{state.program.agent}:{k + 1}:spec",
                prompt=(*state.tokens, *results),
                output=output,
                arrival=self.loop.now,
            )
            request.hashes = list(state.hashes)
            return request

        known = self.known[state.program.agent][k]
        self.prefetcher.after_response(state.program.agent, replica, turn.action is not None, known, predicted)

    def _served(self, state: AgentState, record: CallRecord) -> bool:
        """The real call `record` is served from the agent's speculative call when it is the same request."""
        assert self.prefetcher is not None

        agent = state.program.agent
        call = self.prefetcher.pending.get(agent)
        if call is None:
            return False
        dispatcher = self.replicas[call.replica].dispatcher
        announced = False  # `Dispatcher.speculative_answer_started`, once, when the serving begins

        def announce() -> None:
            nonlocal announced
            if not announced:
                announced = True
                dispatcher.speculative_answer_started(agent)

        def serve(request: Request) -> None:
            announce()  # served at once (its call had finished) or when the attached call finishes
            state.next_id += len(request.output)  # the ids `_enter_engine` would have taken
            self._answered(state, record, request, None, dispatcher)

        record.replica, record.granted = call.replica, self.loop.now  # before `serve` may run
        if not self.prefetcher.take(agent, tuple(state.tokens), serve):
            return False
        announce()  # attached to a call still running: the agent's turn is in flight from now
        return True

    def _tools_end(self, state: AgentState, action: Action, tool_s: float, calls: int, first_token: float) -> float:
        """When the answer's tool calls are done, with the condition's speculation (`speculation.py`)."""
        now = self.loop.now
        end = now + tool_s
        if state.prerun_start is not None:  # the tests pre-ran on the state after the last edit
            if action is Action.RUN_TESTS:
                end = prerun_end(state.prerun_start, now, tool_s)
                self._count("prerun_used")
                self._count("prerun_saved_s", now + tool_s - end)
            else:  # cancelled when this call arrives: its CPU so far is wasted
                self._count("prerun_wasted")
                self._count("prerun_wasted_cpu_s", min(now - state.prerun_start, self.scenario.fleet.test_median_s))
            state.prerun_start = None
        if self.condition.streaming_tools and calls > 1 and early_safe(tool_name(action)):
            early = streamed_tools_end(first_token, now, calls, tool_s)
            self._count("early_answers")
            self._count("early_calls", calls)
            self._count("early_saved_s", end - min(end, early))
            end = min(end, early)
        return end

    def _maybe_warm(self, state: AgentState, turn: int) -> None:
        """Shortly before a long tool run ends: re-warm the agent's prefix if the core policy says it pays."""
        dispatcher = self.replicas[state.replica].dispatcher
        if state.turn != turn or dispatcher.kv_ledger is None or not isinstance(dispatcher.policy, KVAwareOrder):
            return
        r = state.replica
        decision = warm_decision(
            dispatcher.policy,
            state.program.agent,
            dispatcher.kv_ledger.snapshot(),
            self.loop.now,
            self.warmed[r],
            self.computed[r],
            self.scenario.coordinator.warm_share,
        )
        self._count(f"warm: {decision}")
        if decision is not WarmDecision.WARM:
            return
        self.warmed[r] += len(state.tokens)
        tier = state.program.turns[turn + 1].tier
        prompt = tuple(state.tokens)
        hashes = list(state.hashes)
        dispatcher.submit(
            state.program.agent, tier, lambda slot: self._warm_granted(state, slot, prompt, hashes), len(prompt)
        )

    def _warm_granted(self, state: AgentState, slot: Slot, prompt: tuple[int, ...], hashes: list[int]) -> None:
        def enter() -> None:
            request_id = f"{state.program.agent}:{state.turn}:warm:{self.loop.events}"
            request = Request(request_id=request_id, prompt=prompt, output=(-1,), arrival=self.loop.now)
            request.hashes = hashes
            self._warm[request_id] = (state, slot)
            self.replicas[state.replica].add(request, state.program.agent, state.program.recipe)

        self.loop.at(self.loop.now + self.profile.frontend_s, enter)

    def _warm_done(self, request: Request) -> None:
        _, slot = self._warm.pop(request.request_id)
        cached = max(request.num_cached_tokens, 0)
        self._count("warm_calls")
        self._count("warm_tokens_computed", len(request.prompt) - cached)
        slot.release(float(len(request.prompt) - cached + 1), len(request.prompt) + 1, cached)

    def _tool_done(self, state: AgentState, result_tokens: int) -> None:
        done = state.program.turns[state.turn].action
        if self.condition.test_preruns and done is Action.EDIT:
            state.prerun_start = self.loop.now
        state.tokens.extend(range(state.next_id, state.next_id + result_tokens))
        state.next_id += result_tokens
        block_hashes(state.tokens, self.profile.block_size, state.hashes)
        state.turn += 1
        self._issue(state)
