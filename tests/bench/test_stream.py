"""The streaming-execution mechanism bench: its scripted answer is the simulator's streaming shape, its lead is
what streams after the test run's call, and one real pair runs through the stack with the early run used."""

from __future__ import annotations

from sidecar.bench.stream import answer_frames, lead_frames, run
from sidecar.core.nextcall import assistant_from_sse


def test_the_scripted_answer_is_a_test_run_then_the_reads_and_the_lead_grows_with_them() -> None:
    frames = answer_frames(["a.py", "b.py"])
    reply = assistant_from_sse(b"".join(frames))
    assert reply is not None and reply.finish_reason == "tool_calls"
    names = [c["function"]["name"] for c in reply.message["tool_calls"]]
    assert names == ["sidecar__run_tests", "sidecar__read_file", "sidecar__read_file"]
    leads = [lead_frames(answer_frames(["m.py"] * n)) for n in range(4)]
    assert leads[0] <= 2 and leads[1] > 10 and leads[2] > leads[1] + 25  # ~15 tokens, then ~34 per read call


async def test_one_pair_through_the_real_stack_uses_the_early_test_run() -> None:
    result = await run(pairs=1, rate=400.0, reads=1, test_s=0.5)
    assert result["early"]["used"] >= 1 and result["early"]["wasted"] == 0
    assert set(result["saved_per_answer_s"]) == {"median", "min", "max"}
