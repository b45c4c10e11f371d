"""The engine on the virtual clock: vLLM V1 scheduling, step by step (no sleeping anywhere)."""

from __future__ import annotations

from typing import Any

import pytest

from sidecar.sim.engine import Engine, Request, Status
from sidecar.sim.latency import StepShape, step_seconds
from sidecar.sim.offline import run_offline
from sidecar.sim.profiles import QWEN_32B_A100, resolve_profile


def profile(**overrides: Any) -> Any:
    base = {"num_gpu_blocks": 64, "max_num_batched_tokens": 64, "max_num_seqs": 4, "frontend_s": 0.0}
    return resolve_profile("qwen2.5-coder-32b-a100", {**base, **overrides})


def req(rid: str, prompt: int | tuple[int, ...], output: int = 4, priority: int = 0, arrival: float = 0.0) -> Request:
    tokens = prompt if isinstance(prompt, tuple) else tuple(hash((rid, i)) % 100_000 + 1000 for i in range(prompt))
    return Request(rid, tokens, tuple(range(7, 7 + output)), priority=priority, arrival=arrival)


def test_continuous_batching_caps_running_at_max_num_seqs() -> None:
    engine = Engine(profile(max_num_seqs=2))
    for i in range(3):
        engine.add(req(f"r{i}", 8, output=3))
    first = engine.step()
    assert first is not None and set(first.scheduled) == {"r0", "r1"}
    assert engine.num_waiting == 1
    while "r0" in {r.request_id for r in engine.running}:
        engine.step()
    step = engine.step()  # r2 joins as soon as a slot frees, while r1 keeps decoding
    assert step is not None and "r2" in step.scheduled


def test_chunked_prefill_splits_a_long_prompt_by_the_token_budget() -> None:
    engine = Engine(profile(max_num_batched_tokens=64))
    r = req("long", 150, output=2)
    engine.add(r)
    chunks = []
    while r.first_token is None:
        step = engine.step()
        assert step is not None
        chunks.append(step.scheduled["long"])
    assert chunks == [64, 64, 22]
    assert r.num_output == 1  # the token is sampled by the step that completes the prompt


def test_decode_steps_share_the_budget_with_a_prefill_chunk() -> None:
    engine = Engine(profile(max_num_batched_tokens=64))
    engine.add(req("a", 10, output=10))
    engine.step()  # a prefilled, one token out
    engine.add(req("b", 200, output=2))
    step = engine.step()
    assert step is not None and step.scheduled == {"a": 1, "b": 63}
    assert step.shape.decode_tokens == 1 and step.shape.prefill_tokens == 63


def test_prefix_cache_hits_whole_blocks_of_a_repeated_prefix() -> None:
    engine = Engine(profile())
    shared = tuple(range(1000, 1040))  # 40 tokens: two full blocks
    run_offline(engine, [req("first", (*shared, 1, 2), output=2)])
    second = req("second", (*shared, 3, 4, 5), output=2)
    run_offline(engine, [second])
    assert second.num_cached_tokens == 32
    assert engine.counters.prefix_cache_hits == 32
    assert engine.counters.prefix_cache_queries == 42 + 43


def test_a_fully_cached_prompt_still_computes_its_last_token() -> None:
    engine = Engine(profile())
    prompt = tuple(range(1000, 1032))  # exactly two blocks
    run_offline(engine, [req("a", prompt, output=1)])
    again = req("b", prompt, output=1)
    run_offline(engine, [again])
    assert again.num_cached_tokens == 16  # vLLM never serves the last token from cache


def test_freed_blocks_are_evicted_least_recently_used_first() -> None:
    engine = Engine(profile(num_gpu_blocks=6))
    old = tuple(range(1000, 1032))
    new = tuple(range(2000, 2032))
    run_offline(engine, [req("old", old, output=1)])
    run_offline(engine, [req("new", new, output=1)])
    run_offline(engine, [req("filler", tuple(range(3000, 3040)), output=1)])  # needs 3 blocks: evicts "old"
    probe_old, probe_new = req("probe-old", (*old, 1), output=1), req("probe-new", (*new, 1), output=1)
    run_offline(engine, [probe_new])
    run_offline(engine, [probe_old])
    assert probe_new.num_cached_tokens == 32
    assert probe_old.num_cached_tokens < 32


@pytest.mark.parametrize(
    ("policy", "priorities", "victim"),
    [
        ("fcfs", (0, 0, 0), "c"),  # fcfs: the last one in the running list
        ("priority", (5, 0, 1), "a"),  # priority: the worst (priority, arrival), wherever it is
        ("priority", (0, 0, 0), "c"),  # equal priorities: the latest arrival
    ],
)
def test_preemption_picks_the_victim_vllm_picks(policy: str, priorities: tuple[int, ...], victim: str) -> None:
    # 6 blocks of 16; each request takes 2 blocks for its 17-token prompt, then grows into a third.
    engine = Engine(profile(num_gpu_blocks=6), policy)  # type: ignore[arg-type]
    for i, (rid, p) in enumerate(zip("abc", priorities, strict=True)):
        engine.add(req(rid, 17, output=40, priority=p, arrival=i * 0.001))
    preempted = []
    for _ in range(40):
        step = engine.step()
        if step is None:
            break
        preempted += [r.request_id for r in step.preempted]
        if preempted:
            break
    assert preempted[:1] == [victim]
    victim_request = next(r for r in engine.waiting() if r.request_id == victim)
    assert victim_request.status is Status.PREEMPTED and victim_request.num_computed == 0
    assert engine.kv.blocks_of(victim) == [] and engine.counters.preemptions == 1


def test_a_preempted_request_is_recomputed_and_keeps_its_output() -> None:
    engine = Engine(profile(num_gpu_blocks=6))
    requests = [req(rid, 17, output=40, arrival=i * 0.001) for i, rid in enumerate("abc")]
    done = run_offline(engine, requests)
    assert all(r.status is Status.FINISHED and r.num_output == 40 for r in done)
    assert engine.counters.preemptions >= 1
    assert engine.kv.usage == 0.0


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        ("fcfs", ["p5", "p0-late", "p1", "p0-early"]),  # priorities accepted and ignored, as in vLLM V1
        ("priority", ["p0-early", "p0-late", "p1", "p5"]),  # lower first, ties by arrival
    ],
)
def test_waiting_order_by_policy(policy: str, expected: list[str]) -> None:
    engine = Engine(profile(max_num_seqs=1), policy)  # type: ignore[arg-type]
    engine.add(req("running", 4, output=50))
    engine.step()
    arrivals = [("p5", 5, 1.0), ("p0-late", 0, 3.0), ("p1", 1, 2.0), ("p0-early", 0, 4.0)]
    if policy == "priority":
        arrivals[1], arrivals[3] = ("p0-late", 0, 4.0), ("p0-early", 0, 3.0)
    for rid, priority, at in arrivals:
        engine.add(req(rid, 4, output=1, priority=priority, arrival=at))
    assert [r.request_id for r in engine.waiting()] == expected
    order = []
    while engine.has_work():
        step = engine.step()
        assert step is not None
        order += [r.request_id for r in step.finished]
    assert order == ["running", *expected]


def test_a_high_priority_arrival_does_not_displace_a_running_request() -> None:
    engine = Engine(profile(max_num_seqs=1), "priority")
    engine.add(req("low", 4, output=5, priority=10))
    engine.step()
    engine.add(req("urgent", 4, output=1, priority=-10))
    step = engine.step()
    assert step is not None and set(step.scheduled) == {"low"}  # vLLM issue #40004


def test_abort_frees_kv_wherever_the_request_is() -> None:
    engine = Engine(profile(max_num_seqs=1))
    engine.add(req("running", 40, output=50))
    engine.add(req("waiting", 4))
    engine.step()
    assert engine.kv.usage > 0
    engine.abort("running")
    engine.abort("waiting")
    engine.abort("unknown")
    assert engine.kv.usage == 0.0 and not engine.has_work()
    assert engine.counters.finished["abort"] == 2


def test_identical_runs_give_identical_timelines() -> None:
    def timeline() -> list[tuple[str, float | None, float | None, int]]:
        engine = Engine(profile(num_gpu_blocks=12), "priority")
        reqs = [req(f"r{i}", 20 + 7 * i, output=10 + i, priority=i % 3, arrival=i * 0.01) for i in range(8)]
        run_offline(engine, reqs)
        return [(r.request_id, r.first_token, r.finished, r.num_preemptions) for r in reqs]

    assert timeline() == timeline()


@pytest.mark.parametrize(
    ("shape", "bound"),
    [
        (StepShape(1, 0, 1, 100), "memory"),
        (StepShape(32, 0, 32, 3200), "memory"),
        (StepShape(256, 0, 256, 25600), "compute"),
        (StepShape(1, 2048, 0, 2048), "compute"),
    ],
)
def test_step_time_is_memory_bound_then_compute_bound(shape: StepShape, bound: str) -> None:
    p = QWEN_32B_A100
    memory = p.weights_read_s + p.per_seq_s * shape.num_seqs + p.kv_read_s_per_token * shape.context_tokens
    compute = p.prefill_s_per_token * shape.prefill_tokens + p.decode_compute_s_per_token * shape.decode_tokens
    assert (memory >= compute) == (bound == "memory")
    assert step_seconds(p, shape) == pytest.approx(p.step_overhead_s + max(memory, compute))


def test_decode_step_time_grows_slowly_with_batch_while_memory_bound() -> None:
    one = step_seconds(QWEN_32B_A100, StepShape(1, 0, 1, 256))
    thirty_two = step_seconds(QWEN_32B_A100, StepShape(32, 0, 32, 32 * 256))
    assert one < thirty_two < 1.5 * one
