"""The engine: vLLM V1's scheduler, step by step, on a virtual clock (no I/O, no asyncio, no clock reads).

One `step()` is one forward pass (mirrors `vllm/v1/core/sched/scheduler.py`):
1. Running requests first, in order: each gets its remaining tokens (1 when decoding, up to the token budget
   when its prefill is chunked). When its blocks cannot be allocated, a running request is preempted: with the
   `priority` policy the one with the worst (priority, arrival), with `fcfs` the last one in the running list;
   a preempted request frees its KV, goes back to the waiting queue and is recomputed later (its generated
   tokens are kept). If the victim is the request being scheduled, the pass over running requests stops.
2. Then, only if nothing was preempted, waiting requests while the token budget lasts and fewer than
   `max_num_seqs` run: `fcfs` takes them in arrival order (preempted ones go back to the front), `priority` by
   (priority, arrival) with lower first. A request's cached prefix (whole blocks) is skipped. A request whose
   blocks cannot be allocated blocks the queue (no skipping ahead).
3. The step takes `latency.step_seconds` of the batch. A request whose computed tokens reach its length
   samples one token; reaching its planned output ends it (`stop` on the end-of-sequence token, `length` at
   `max_tokens`), and its blocks are freed into the prefix cache.

Priority is admission order only: a high-priority arrival never displaces a running request when
`max_num_seqs` is the limit (vLLM issue #40004). Everything is deterministic: ties break by arrival sequence.
"""

from __future__ import annotations

import heapq
from collections import deque
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Literal

from sidecar.sim.kv import KVCache, block_hashes
from sidecar.sim.latency import StepShape, step_seconds
from sidecar.sim.profiles import Profile

Policy = Literal["fcfs", "priority"]


class Status(StrEnum):
    WAITING = "waiting"
    RUNNING = "running"
    PREEMPTED = "preempted"
    FINISHED = "finished"
    ABORTED = "aborted"


@dataclass(eq=False)
class Request:
    """A request as the scheduler sees it. `output` is what it will generate, decided up front (temperature 0).

    `finish_reason` applies when the whole `output` has been generated: "stop" when it ends with the
    end-of-sequence token, "length" when `max_tokens` cut it.
    """

    request_id: str
    prompt: tuple[int, ...]
    output: tuple[int, ...]
    finish_reason: str = "stop"
    priority: int = 0
    arrival: float = 0.0
    max_tokens: int = 0  # the request's output budget, for vLLM's per-request histograms (0: len(output))
    # Progress, owned by the engine.
    status: Status = Status.WAITING
    num_computed: int = 0
    num_output: int = 0
    num_cached_tokens: int = -1  # prompt tokens served from the prefix cache at first scheduling
    num_preemptions: int = 0
    first_scheduled: float | None = None
    first_token: float | None = None
    finished: float | None = None
    seq: int = 0
    hashes: list[int] = field(default_factory=list)

    @property
    def num_tokens(self) -> int:
        return len(self.prompt) + self.num_output

    def tokens(self) -> tuple[int, ...]:
        return self.prompt + self.output[: self.num_output]

    def order_key(self) -> tuple[int, float, int]:
        return (self.priority, self.arrival, self.seq)

    def __lt__(self, other: Request) -> bool:
        return self.order_key() < other.order_key()


@dataclass
class StepResult:
    start: float
    end: float
    scheduled: dict[str, int]  # request id -> tokens computed in this step
    sampled: list[Request]  # requests that got one new output token in this step
    finished: list[Request]
    preempted: list[Request]
    shape: StepShape


@dataclass
class Counters:
    """Monotonic totals, as vLLM's `_total` metrics."""

    preemptions: int = 0
    prefix_cache_queries: int = 0  # tokens looked up
    prefix_cache_hits: int = 0  # tokens found
    prompt_tokens: int = 0
    generation_tokens: int = 0
    steps: int = 0
    busy_seconds: float = 0.0
    finished: dict[str, int] = field(default_factory=dict)  # finish reason -> count


class Engine:
    """One model's scheduler, KV cache and clock. Callers add requests, call `step()`, and read results."""

    def __init__(self, profile: Profile, policy: Policy = "fcfs", now: float = 0.0) -> None:
        self.profile = profile
        self.policy: Policy = policy
        self.now = now
        self.kv = KVCache(profile.num_gpu_blocks, profile.block_size)
        self.running: list[Request] = []
        self._fcfs: deque[Request] = deque()
        self._heap: list[Request] = []
        self._seq = 0
        self._by_id: dict[str, Request] = {}
        self.counters = Counters()

    # --- admission ------------------------------------------------------------------------------------------

    @property
    def max_model_len(self) -> int:
        """The longest sequence the engine can hold: the model's limit, or the whole KV cache if smaller."""
        return min(self.profile.max_model_len, self.profile.kv_capacity_tokens)

    def add(self, request: Request) -> None:
        """Queue a request (its `arrival` may be earlier than `now`); ids must be unique among live requests.

        Under `fcfs` any `priority` is accepted and has no effect, as in vLLM's V1 engine (the V0 engine's
        "Priority scheduling is not enabled" refusal is gone: ../shared/reference/vllm_cpu.md).
        """
        if request.request_id in self._by_id:
            raise ValueError(f"duplicate request id {request.request_id}")
        if not request.output:
            raise ValueError("a request must generate at least one token")
        if len(request.prompt) + len(request.output) - 1 > self.max_model_len:
            raise ValueError(f"request needs more than max_model_len={self.max_model_len} tokens")
        request.seq = self._seq
        self._seq += 1
        request.status = Status.WAITING
        self._by_id[request.request_id] = request
        self._push_waiting(request)

    def abort(self, request_id: str) -> Request | None:
        """Drop a live request wherever it is and free its KV; unknown or finished ids are ignored."""
        request = self._by_id.pop(request_id, None)
        if request is None:
            return None
        if request in self.running:
            self.running.remove(request)
        elif request in self._fcfs:
            self._fcfs.remove(request)
        elif request in self._heap:
            self._heap.remove(request)
            heapq.heapify(self._heap)
        self.kv.free(request_id)
        request.status = Status.ABORTED
        request.finished = self.now
        self.counters.finished["abort"] = self.counters.finished.get("abort", 0) + 1
        return request

    def get(self, request_id: str) -> Request | None:
        return self._by_id.get(request_id)

    @property
    def num_waiting(self) -> int:
        return len(self._fcfs) + len(self._heap)

    @property
    def num_running(self) -> int:
        return len(self.running)

    def has_work(self) -> bool:
        return bool(self.running or self._fcfs or self._heap)

    def waiting(self) -> list[Request]:
        """The waiting queue in the order it would be served."""
        return list(self._fcfs) if self.policy == "fcfs" else sorted(self._heap)

    def _push_waiting(self, request: Request, front: bool = False) -> None:
        if self.policy == "priority":
            heapq.heappush(self._heap, request)
        elif front:
            self._fcfs.appendleft(request)
        else:
            self._fcfs.append(request)

    def _peek_waiting(self) -> Request | None:
        if self.policy == "priority":
            return self._heap[0] if self._heap else None
        return self._fcfs[0] if self._fcfs else None

    def _pop_waiting(self) -> Request:
        return heapq.heappop(self._heap) if self.policy == "priority" else self._fcfs.popleft()

    # --- one step -------------------------------------------------------------------------------------------

    def step(self) -> StepResult | None:
        """Schedule and run one step starting at `now`; None (and no time passes) when nothing can run."""
        budget = self.profile.max_num_batched_tokens
        scheduled: dict[str, int] = {}
        order: list[Request] = []
        preempted: list[Request] = []

        i = 0
        while i < len(self.running) and budget > 0:
            request = self.running[i]
            num_new = min(request.num_tokens - request.num_computed, budget)
            if num_new <= 0:
                i += 1
                continue
            self._extend_hashes(request)
            scheduled_it = True
            while not self.kv.allocate(request.request_id, request.hashes, request.num_computed, num_new):
                victim = self._pick_victim()
                self.running.remove(victim)
                if victim.request_id in scheduled:
                    budget += scheduled.pop(victim.request_id)
                    order.remove(victim)
                    i -= 1
                self._preempt(victim)
                preempted.append(victim)
                if victim is request:
                    scheduled_it = False
                    break
            if not scheduled_it:
                break
            scheduled[request.request_id] = num_new
            order.append(request)
            budget -= num_new
            i += 1

        if not preempted:
            while budget > 0 and len(self.running) < self.profile.max_num_seqs:
                head = self._peek_waiting()
                if head is None:
                    break
                request = head
                self._extend_hashes(request)
                cached = self.kv.cached_prefix(request.hashes, request.num_tokens)
                num_cached = len(cached) * self.profile.block_size
                num_new = min(request.num_tokens - num_cached, budget)
                if not self.kv.allocate(request.request_id, request.hashes, 0, num_new, cached):
                    break
                self._pop_waiting()
                self.counters.prefix_cache_queries += request.num_tokens
                self.counters.prefix_cache_hits += num_cached
                request.num_computed = num_cached
                if request.num_cached_tokens < 0:
                    request.num_cached_tokens = num_cached
                if request.first_scheduled is None:
                    request.first_scheduled = self.now
                request.status = Status.RUNNING
                self.running.append(request)
                scheduled[request.request_id] = num_new
                order.append(request)
                budget -= num_new

        if not scheduled:
            return None
        return self._run(order, scheduled, preempted)

    def _pick_victim(self) -> Request:
        if self.policy == "priority":
            return max(self.running, key=Request.order_key)
        return self.running[-1]

    def _preempt(self, request: Request) -> None:
        self.kv.free(request.request_id)
        request.status = Status.PREEMPTED
        request.num_computed = 0
        request.num_preemptions += 1
        self.counters.preemptions += 1
        self._push_waiting(request, front=True)

    def _extend_hashes(self, request: Request) -> None:
        if len(request.hashes) < request.num_tokens // self.profile.block_size:
            block_hashes(request.tokens(), self.profile.block_size, request.hashes)

    def _run(self, order: list[Request], scheduled: dict[str, int], preempted: list[Request]) -> StepResult:
        prefill = decode = context = 0
        for request in order:
            n = scheduled[request.request_id]
            is_decode = n == 1 and request.num_computed == request.num_tokens - 1 and request.num_output > 0
            decode += n if is_decode else 0
            prefill += 0 if is_decode else n
            context += request.num_computed + n
        shape = StepShape(len(order), prefill, decode, context)
        start = self.now
        self.now = start + step_seconds(self.profile, shape)
        self.counters.steps += 1
        self.counters.busy_seconds += self.now - start

        sampled: list[Request] = []
        finished: list[Request] = []
        for request in order:
            request.num_computed += scheduled[request.request_id]
            if request.num_computed < request.num_tokens:
                continue  # a prefill chunk: nothing sampled yet
            if request.num_output == 0:
                request.first_token = self.now
                self.counters.prompt_tokens += len(request.prompt)
            request.num_output += 1
            self.counters.generation_tokens += 1
            sampled.append(request)
            if request.num_output >= len(request.output):
                finished.append(request)
        for request in finished:
            self.running.remove(request)
            self.kv.free(request.request_id)
            self._by_id.pop(request.request_id, None)
            request.status = Status.FINISHED
            request.finished = self.now
            reason = request.finish_reason
            self.counters.finished[reason] = self.counters.finished.get(reason, 0) + 1
        return StepResult(start, self.now, scheduled, sampled, finished, preempted, shape)
