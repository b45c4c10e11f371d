"""The `kv` policy end to end: the coordinator in front of the real simulator on loopback, its ledger fed by the
answers' usage and shown in /status."""

from __future__ import annotations

from sidecar.testing import wait_until
from tests.coordinator.test_scheduling import chat, coordinator


async def test_the_kv_policy_admits_accounts_and_shows_each_agents_context() -> None:
    always = {"kv_engage_ratio": 0.0, "kv_release_ratio": 0.0}  # the gates engaged whatever the load
    async with coordinator({"policy": "kv", "kv_capacity_tokens": 20_000, "kv_correction": False, **always}) as (
        client,
        state,
    ):
        for agent in ("a", "b"):
            response = await client.post(
                "/v1/chat/completions", json=chat("fix the failing test " * 20), headers={"x-agent-id": agent}
            )
            assert response.status_code == 200
        dispatcher = state.dispatchers["large"]
        await wait_until(lambda: dispatcher.in_flight == 0)
        view = (await client.get("/status")).json()["scheduling"]["large"]
        assert view["policy"] == "kv" and view["gate"] == "working_set"
        agents = view["working_set"]["agents"]
        assert set(agents) == {"a", "b"} and view["working_set"]["capacity_tokens"] == 20_000
        usage = response.json()["usage"]
        assert agents["b"]["context_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
        assert agents["b"]["in_flight"] == 0 and agents["b"]["resident"] is True
