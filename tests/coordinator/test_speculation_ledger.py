"""A real call answered from its prefetched (speculative) call is accounted in the `kv` policy's ledger as a call
that went through a slot would be: the real coordinator in front of the real simulator, over loopback."""

from __future__ import annotations

import time
from typing import Any

import httpx

from sidecar.core.usage import parse_usage
from sidecar.testing import wait_until
from tests.coordinator.test_speculation_e2e import SPECULATIVE, coordinator_over_sim

AGENT = "agent-ledger"


def chat(model: str, messages: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "model": model,
        "messages": messages,
        "temperature": 0,
        "max_tokens": 24,
        "stream": True,
        "stream_options": {"include_usage": True},
    }


async def test_a_served_prefetch_updates_the_agents_kv_ledger_entry_as_a_real_call_would() -> None:
    async with coordinator_over_sim(speculation=True) as (url, state), httpx.AsyncClient(base_url=url) as http:
        speculator, dispatcher = state.speculator, state.dispatchers["large"]
        ledger = dispatcher.kv_ledger
        assert speculator is not None and ledger is not None  # `kv` is the default policy
        served_name = state.pool.upstreams[0].served_names[0]
        headers = {"x-agent-id": AGENT}

        # One real call through the dispatcher's slot: the ledger's entry for the agent.
        messages: list[dict[str, Any]] = [{"role": "user", "content": "fix the failing test in src/calc.py"}]
        first = await http.post("/v1/chat/completions", json=chat("large", messages), headers=headers, timeout=60)
        assert first.status_code == 200 and SPECULATIVE not in first.headers
        usage = parse_usage(first.content)
        assert usage is not None
        before = ledger.snapshot()[AGENT]
        assert before.calls == 1 and before.context_tokens == usage.prompt_tokens + usage.completion_tokens

        # Its next request, prefetched on spare capacity (the body as routed upstream), then asked for for real.
        messages += [{"role": "assistant", "content": "Reading it."}, {"role": "user", "content": "go on"}]
        await wait_until(dispatcher.spare_capacity)
        assert speculator.speculate(AGENT, "large", chat(served_name, messages))
        await wait_until(lambda: speculator.pending[AGENT].done)
        asked = time.monotonic()
        second = await http.post("/v1/chat/completions", json=chat("large", messages), headers=headers, timeout=60)
        assert second.status_code == 200 and second.headers[SPECULATIVE] == "1"
        assert speculator.stats.served == 1
        assert sum(t.admitted for t in dispatcher.tiers.values()) == 1  # the served answer took no slot
        served = parse_usage(second.content)
        assert served is not None
        context = served.prompt_tokens + served.completion_tokens
        assert context > before.context_tokens

        # The ledger learnt the turn: the context grew to the prefetched call's prompt + output, one more call,
        # active when it was served, and no call left in flight.
        after = ledger.snapshot()[AGENT]
        assert after.context_tokens == context
        assert after.growth_tokens == context - before.context_tokens
        assert after.calls == 2 and after.in_flight == 0
        assert after.last_active >= asked
        assert AGENT not in ledger.in_flight_agents()
        shown = (await http.get("/status")).json()["scheduling"]["large"]["working_set"]["agents"][AGENT]
        assert shown["context_tokens"] == context and shown["in_flight"] == 0
