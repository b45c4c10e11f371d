"""`kv_long_tool_keep_s` end to end: the coordinator in front of the real simulator on loopback reads each answer's
tool calls (`core/longtool.py`) and tells the `kv` policy's ledger when one runs the tests, so that agent gives up
its KV place at once while one that reads a file keeps it for `kv_keep_s` (`/status` -> working_set)."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from sidecar.testing import wait_until
from tests.coordinator.test_scheduling import coordinator

TOOLS = [
    {"type": "function", "function": {"name": name, "parameters": {"type": "object", "properties": {}}}}
    for name in ("sidecar__run_tests", "sidecar__read_file")
]
# kv_keep_s long enough that no place held by it expires during the test; the gates engaged whatever the load.
KV = {"policy": "kv", "kv_keep_s": 600.0, "kv_correction": False, "kv_engage_ratio": 0.0, "kv_release_ratio": 0.0}


def calling(tool: str, stream: bool) -> dict[str, Any]:
    """A chat call the simulator answers with a call to `tool` (a named tool_choice), room enough for it."""
    return {
        "model": "large",
        "messages": [{"role": "user", "content": "fix the failing test in the parser"}],
        "tools": TOOLS,
        "tool_choice": {"type": "function", "function": {"name": tool}},
        "max_tokens": 256,
        "stream": stream,
    }


def called(response_text: str, tool: str) -> bool:
    """The answer as the client got it calls `tool` (the relayed bytes carry the call, unchanged)."""
    return f'"name": "{tool}"' in response_text or f'"name":"{tool}"' in response_text


@pytest.mark.parametrize("stream", [False, True])
async def test_an_agent_whose_answer_runs_the_tests_gives_up_its_place_at_once(stream: bool) -> None:
    async with coordinator({**KV, "kv_long_tool_keep_s": 0.0}) as (client, state):
        for agent, tool in (("tester", "sidecar__run_tests"), ("reader", "sidecar__read_file")):
            response = await client.post(
                "/v1/chat/completions", json=calling(tool, stream), headers={"x-agent-id": agent}
            )
            assert response.status_code == 200 and called(response.text, tool), response.text
        dispatcher = state.dispatchers["large"]
        await wait_until(lambda: dispatcher.in_flight == 0)
        view = (await client.get("/status")).json()["scheduling"]["large"]["working_set"]
        assert view["long_tool_keep_s"] == 0.0
        tester, reader = view["agents"]["tester"], view["agents"]["reader"]
        assert tester["long_tool"] is True and tester["has_place"] is False  # off running the tests: room freed
        assert reader["long_tool"] is False and reader["has_place"] is True  # a short tool call: kv_keep_s
        assert tester["resident"] and tester["context_tokens"] > 0  # its KV is still counted, just not held


@pytest.mark.parametrize("stream", [False, True])
async def test_without_the_setting_the_answers_are_not_read_and_every_agent_keeps_its_place(stream: bool) -> None:
    async with coordinator(KV) as (client, state):
        dispatcher = state.dispatchers["large"]
        assert not dispatcher.reads_long_tools
        response = await client.post(
            "/v1/chat/completions", json=calling("sidecar__run_tests", stream), headers={"x-agent-id": "tester"}
        )
        assert response.status_code == 200 and called(response.text, "sidecar__run_tests")
        await wait_until(lambda: dispatcher.in_flight == 0)
        tester = (await client.get("/status")).json()["scheduling"]["large"]["working_set"]["agents"]["tester"]
        assert tester["long_tool"] is False and tester["has_place"] is True


@pytest.mark.parametrize(
    ("stream", "fault"), [(True, "drop"), (True, "error_frame"), (False, "drop"), (True, "500"), (False, "503")]
)
async def test_a_cut_or_failed_answer_releases_its_call_once_and_is_not_a_test_run(stream: bool, fault: str) -> None:
    async with coordinator({**KV, "kv_long_tool_keep_s": 0.0}) as (client, state):
        dispatcher, ledger = state.dispatchers["large"], state.dispatchers["large"].kv_ledger
        assert ledger is not None
        headers = {"x-agent-id": "tester", "x-sim-fault": fault}
        try:
            response = await client.post(
                "/v1/chat/completions", json=calling("sidecar__run_tests", stream), headers=headers
            )
            assert response.status_code != 200 or b"error" in response.content  # what the client got shows the fault
        except httpx.TransportError:
            assert not stream and fault == "drop"  # a JSON body cut short: the coordinator drops the connection
        await wait_until(lambda: dispatcher.in_flight == 0)
        assert ledger.snapshot()["tester"].in_flight == 0 and not ledger.snapshot()["tester"].long_tool
        # released once, nothing left behind: the agent's next, whole answer counts
        response = await client.post(
            "/v1/chat/completions", json=calling("sidecar__run_tests", stream), headers={"x-agent-id": "tester"}
        )
        assert response.status_code == 200
        await wait_until(lambda: dispatcher.in_flight == 0)
        assert ledger.snapshot()["tester"].long_tool and ledger.snapshot()["tester"].in_flight == 0


async def test_a_client_that_leaves_mid_answer_releases_its_call_once_and_is_not_a_test_run() -> None:
    async with coordinator({**KV, "kv_long_tool_keep_s": 0.0}) as (client, state):
        dispatcher, ledger = state.dispatchers["large"], state.dispatchers["large"].kv_ledger
        assert ledger is not None
        started = asyncio.Event()

        async def call() -> None:  # the answer stalls halfway; the client reads its first bytes, then waits
            headers = {"x-agent-id": "tester", "x-sim-fault": "stall"}
            body = calling("sidecar__run_tests", True)
            async with client.stream("POST", "/v1/chat/completions", json=body, headers=headers) as response:
                async for _ in response.aiter_raw():
                    started.set()

        task = asyncio.create_task(call())
        await asyncio.wait_for(started.wait(), 30)
        task.cancel()  # the client leaves
        await asyncio.gather(task, return_exceptions=True)
        await wait_until(lambda: dispatcher.in_flight == 0)
        assert ledger.snapshot()["tester"].in_flight == 0 and not ledger.snapshot()["tester"].long_tool
