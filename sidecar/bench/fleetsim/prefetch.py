"""Exact LLM prefetch in the fleet simulation: the coordinator's rules (`coordinator/speculation.py`) on the
virtual clock.

Which answers predict their next request exactly (`results_known`): an answer whose tool calls all have results
the agent's sidecar already holds in its validated cache (`core.toolcache`: an entry is served only while nothing
it read has changed). From the program's own tool sequence (`program.tool_event`: a read names its file, an edit
writes it, `run_command` may write anywhere):

- `read_file` of a file read earlier in the task and not written since (the programs read and edit one source
  file and read one test file, so a second read of either with no edit between is a re-read of an unchanged file);
- `list_dir` and `run_tests` (tree-scoped entries) repeated with no write anywhere since;
- never an edit, a command or a search (each search is taken to be a new query);
- only answers with one tool call (the other calls of a multi-call answer are taken to be other files).

`calibration.md` has no tool-cache hit rate to take this from; its one figure on re-reads, the seed's "edit ->
read same file 20%", is a miss here (the edit changed the file), and the programs' transition model already
draws it. The rule yields the share the report prints (`prefetch: answers whose tool results were all cached`).

What the coordinator then does, as `Speculator` does it (each step names its production counterpart):

- `after_response`: when the answer has fully reached the agent, `allowed` (`core.speculation.
  should_speculate_llm`: enabled, the replica's `Dispatcher.spare_capacity()` on its last scrapes, no real call
  queued there, the wasted-token budget of `SpeculationSettings` has room) or the follow-up is skipped; then the
  results are asked for (the peek takes no simulated time) and, when all are known, `speculate` checks `allowed`
  again and takes a place (`Dispatcher.hold_speculative`, as the engine here has no native priority) or skips.
- The speculative call reaches the engine `frontend_s` later as the agent's exact next request; the place is
  given back when it ends (`release_speculative`).
- `cancel_model`: the moment a real call queues at that dispatcher (`Dispatcher.on_queue`) every speculative call
  there that has not finished is aborted in the engine; what it computed is wasted, and the budget is charged as
  the production code charges it (`SpecCall.tokens`: the usage total when complete, else one per output token).
- `take`: the agent's real next call (when its tool calls are done) is served from its speculative call when the
  request is identical (always, by construction, unless `max_age_s` passed): at once when it finished, else when
  it does (attached while running); the real call takes no dispatcher slot, and the dispatcher hears of it as
  the coordinator's `Speculator.serve` tells it (`FleetSim._served`: `Dispatcher.speculative_answer_started` when
  the serving begins, `speculative_answer_ended` with the call's tokens when the answer is there), so the `kv`
  policy's ledger learns the turn.

Every token of a speculative call is an engine token: the report's prompt tokens computed and prefix-cache figures
(the engines' counters) include them; the tokens of calls never served are also shown apart.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from sidecar.bench.fleetsim.program import Program, tool_event
from sidecar.coordinator.dispatcher import Dispatcher
from sidecar.coordinator.settings import SpeculationSettings
from sidecar.core.speculation import TokenBudget, should_speculate_llm
from sidecar.sim.engine import Request, Status

_TREE_TOOLS = frozenset({"list_dir", "run_tests"})
_WRITES = frozenset({"edit_file", "run_command"})


def results_known(program: Program) -> tuple[bool, ...]:
    """Per turn: True when every result of the answer's tool calls is already in the sidecar's cache as the
    answer ends (module docstring); False for the last turn (no tool call)."""
    known: list[bool] = []
    read_since_write: set[str] = set()  # files read with no write to them since
    tree_since_write: set[str] = set()  # tree-scoped tools run with no write anywhere since
    for turn in program.turns:
        if turn.action is None:
            known.append(False)
            continue
        tool, paths, _ = tool_event(turn.action)
        if tool == "read_file":
            hit = bool(paths) and all(p in read_since_write for p in paths)
            read_since_write.update(paths)
        elif tool in _TREE_TOOLS:
            hit = tool in tree_since_write
            tree_since_write.add(tool)
        else:
            hit = False
            if tool in _WRITES:
                tree_since_write.clear()
                if tool == "edit_file":
                    read_since_write.difference_update(paths)
                else:  # a command may write any file
                    read_since_write.clear()
        known.append(hit and turn.tool_calls == 1)
    return tuple(known)


@dataclass
class SpecCall:
    """One speculative call: the agent's predicted next request on `replica`."""

    agent: str
    replica: int
    request: Request
    created: float
    entered: bool = False  # reached the engine (after the frontend's latency)
    done: bool = False
    attached: Callable[[Request], None] | None = None  # the real call served from it, waiting for its end

    def tokens(self) -> int:
        """What the coordinator charges the wasted-token budget (`coordinator.speculation.SpecCall.tokens`)."""
        r = self.request
        return len(r.prompt) + r.num_output if self.done else r.num_output

    def computed(self) -> int:
        """Tokens the engine computed for it (the uncached prompt once scheduled, and its output so far)."""
        r = self.request
        prompt = len(r.prompt) - max(r.num_cached_tokens, 0) if r.first_scheduled is not None else 0
        return prompt + r.num_output


@dataclass
class Prefetcher:
    """The coordinator's LLM prefetch for the fleet's replicas. `send(replica, request)` hands a request to a
    replica's engine, `abort(replica, request_id)` drops it there; `clock` is the virtual clock."""

    settings: SpeculationSettings
    dispatchers: Sequence[Dispatcher]
    send: Callable[[int, Request], None]
    abort: Callable[[int, str], object]
    later: Callable[[float, Callable[[], None]], None]  # run a callback that many seconds from now
    clock: Callable[[], float]
    frontend_s: float
    pending: dict[str, SpecCall] = field(default_factory=dict)  # agent -> its speculative call (not yet taken)
    by_id: dict[str, SpecCall] = field(default_factory=dict)  # request id -> call, until it ends in the engine
    dropped: set[str] = field(default_factory=set)  # cancelled in the engine (a step already running may end it)
    counts: dict[str, float] = field(default_factory=dict)
    budget: TokenBudget = field(init=False)

    def __post_init__(self) -> None:
        self.budget = TokenBudget(self.settings.wasted_tokens_per_minute)
        for replica, dispatcher in enumerate(self.dispatchers):
            dispatcher.on_queue.append(functools.partial(self.cancel_replica, replica))

    def _count(self, key: str, amount: float = 1.0) -> None:
        self.counts[key] = self.counts.get(key, 0.0) + amount

    def allowed(self, replica: int) -> bool:
        d = self.dispatchers[replica]
        return should_speculate_llm(
            enabled=self.settings.enabled,
            spare_capacity=d.spare_capacity(),
            waiting_real=len(d.queue),
            budget_ok=self.budget.allows(self.clock()),
        )

    def after_response(
        self, agent: str, replica: int, tool_calls: bool, known: bool, predicted: Callable[[], Request]
    ) -> None:
        """An answer has fully reached `agent` (`Speculator.after_response` and its follow-up): `tool_calls`
        whether it ended in tool calls, `known` whether all their results are cached; `predicted()` builds the
        next request."""
        if not self.allowed(replica):
            self._count("skipped")
            return
        if not tool_calls:
            return
        self._count("followups")
        if not known:
            self._count("results_unknown")
            return
        self._count("results_known")
        self.speculate(agent, replica, predicted())

    def speculate(self, agent: str, replica: int, request: Request) -> bool:
        """Send `request` as `agent`'s predicted next call now, when allowed and a place is free."""
        if not self.allowed(replica) or not self.dispatchers[replica].hold_speculative():
            self._count("skipped")
            return False
        old = self.pending.pop(agent, None)
        if old is not None:
            self._count("expired")
            self._cancel(old)
        call = SpecCall(agent, replica, request, self.clock())
        self.pending[agent] = call
        self.by_id[request.request_id] = call
        self._count("started")

        def enter() -> None:
            if call.request.request_id in self.by_id and not call.entered:  # not cancelled meanwhile
                call.entered = True
                call.request.arrival = self.clock()
                self.send(replica, call.request)

        self.later(self.frontend_s, enter)
        return True

    def owns(self, request_id: str) -> bool:
        """Whether the engine's request `request_id` is a speculative call (live or cancelled)."""
        return request_id in self.by_id or request_id in self.dropped

    def finished(self, request: Request) -> None:
        """The engine finished a speculative call: give its place back; serve the real call attached to it."""
        if request.request_id in self.dropped:  # cancelled while its last step ran: already accounted for
            self.dropped.discard(request.request_id)
            return
        call = self.by_id.pop(request.request_id)
        call.done = True
        self.dispatchers[call.replica].release_speculative()
        if call.attached is not None:
            call.attached(request)

    def take(self, agent: str, prompt: tuple[int, ...], serve: Callable[[Request], None]) -> bool:
        """The agent's real call with this prompt: True when its speculative call serves it (`serve(request)` runs
        now if finished, else when it finishes); otherwise that call is cancelled and the real one goes its way."""
        call = self.pending.pop(agent, None)
        if call is None:
            return False
        if self.clock() - call.created > self.settings.max_age_s:
            self._count("expired")
            self._cancel(call)
            return False
        if call.request.prompt != prompt:  # `canonical_request` differs: never, by construction
            self._count("mismatched")
            self._cancel(call)
            return False
        self._count("served")
        self._count("served_done" if call.done else "served_attached")
        self._count("time_saved_s", self.clock() - call.created)
        if call.done:
            serve(call.request)
        else:
            call.attached = serve
        return True

    def cancel_replica(self, replica: int) -> None:
        """A real call queues on `replica` (`Speculator.cancel_model`): cancel every unfinished call there."""
        for agent, call in list(self.pending.items()):
            if call.replica == replica and not call.done:
                del self.pending[agent]
                self._count("cancelled_for_real_calls")
                self._cancel(call)

    def _cancel(self, call: SpecCall) -> None:
        wasted = call.tokens()
        self.budget.spend(self.clock(), wasted)
        self._count("wasted_tokens", call.computed())
        if call.done:
            return
        self.by_id.pop(call.request.request_id, None)
        if call.entered:
            self.abort(call.replica, call.request.request_id)
            if call.request.status is not Status.ABORTED:  # it had finished in a step that has not ended yet
                self.dropped.add(call.request.request_id)
        self.dispatchers[call.replica].release_speculative()
