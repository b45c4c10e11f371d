"""`goose-sidecar status`: the real command as a subprocess against a running coordinator (and against none)."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from typing import Any

import pytest

from sidecar.config import load_config
from sidecar.coordinator.status_command import DASH, default_url, fmt_duration, fmt_ms, fmt_pct, fmt_tokens
from sidecar.serving import free_port
from sidecar.testing import wait_until
from tests.coordinator.test_dashboard import Fleet, chat, coordinator

ENV = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1", "TERM": "dumb"}


async def status_command(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "sidecar.cli",
        "status",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**ENV, **(env or {})},
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


def table_row(output: str, *first_cells: str) -> list[str]:
    """The cells of the first table row whose leading cells are `first_cells` (rich box-drawing tables)."""
    for line in output.splitlines():
        cells = [c.strip() for c in line.strip().strip("│").split("│")]
        if cells[: len(first_cells)] == list(first_cells):
            return cells
    raise AssertionError(f"no row starting {first_cells} in:\n{output}")


@pytest.mark.parametrize(
    ("host", "port", "url"),
    [
        ("127.0.0.1", 8080, "http://127.0.0.1:8080"),
        ("0.0.0.0", 9000, "http://127.0.0.1:9000"),
        ("::", 8080, "http://127.0.0.1:8080"),
        ("::1", 8080, "http://[::1]:8080"),
        ("coordinator.internal", 80, "http://coordinator.internal:80"),
    ],
)
def test_default_url_from_config(host: str, port: int, url: str) -> None:
    config = load_config(env={}, overrides={"coordinator.host": host, "coordinator.port": port})
    assert default_url(config) == url


@pytest.mark.parametrize(
    ("formatter", "value", "text"),
    [
        (fmt_ms, None, "-"),
        (fmt_ms, 0.0, "0 ms"),
        (fmt_ms, 0.25, "0.25 ms"),
        (fmt_ms, 7.25, "7.2 ms"),
        (fmt_ms, 640.0, "640 ms"),
        (fmt_ms, 2500.0, "2.50 s"),
        (fmt_ms, 25_000.0, "25.0 s"),
        (fmt_duration, 42.0, "42.0 s"),
        (fmt_duration, 150.0, "2.5 min"),
        (fmt_duration, 7200.0, "2.00 h"),
        (fmt_pct, 0.5, "50 %"),
        (fmt_pct, 0.05, "5.0 %"),
        (fmt_pct, None, "-"),
    ],
)
def test_formats_carry_their_units(formatter: Any, value: float | None, text: str) -> None:
    assert formatter(value) == text


async def test_status_shows_agents_queues_and_upstreams_as_status_reports_them() -> None:
    async with coordinator({"window": 1, "policy": "kv"}) as (url, client, state):
        fleet = Fleet(client, state)
        await fleet.start()
        try:
            rc, out, err = await status_command("--url", url, "--agents", "6")
            status = (await client.get("/status")).json()
        finally:
            await fleet.stop()
    assert rc == 0, err
    # Queues per model and tier: the numbers /status has.
    section = out[out.index("Queues and latency per model and tier") : out.index("KV working set per model")]
    rows: dict[tuple[str, str], list[str]] = {}
    alias = ""
    for line in section.splitlines():
        if line.startswith("│"):
            cells = [c.strip() for c in line.strip("│").split("│")]
            alias = cells[0] or alias
            rows[(alias, cells[1])] = cells
    assert len(rows) == 6
    for (alias, tier), cells in rows.items():
        counts = status["scheduling"][alias]["tiers"][tier]
        assert cells[2:6] == [str(counts[k]) for k in ("queued", "in_flight", "admitted", "rejected")], cells
    assert rows[("large", "cold")][2] == "1" and rows[("large", "hot")][3] == "1"  # queued cold, held hot
    # The KV view (the kv policy here): its gates idle (a few small calls), the window holds the queued calls.
    kv = table_row(out, "large", "window")
    waiting = status["kv"]["large"]["waiting_on"]
    assert kv[2] == "idle (on >= 4x, off <= 0.5x)" and status["kv"]["large"]["working_set"]["engaged"] is False
    assert (
        kv[-1] == f"{waiting['calls']} on window: {waiting['in_flight']} in flight, window 1" and waiting["calls"] >= 3
    )
    # Upstreams: one healthy replica per model, with its window.
    large = table_row(out, "large", status["upstreams"][0]["replicas"][0]["url"])
    assert large[2] == "healthy" and large[-3] == "1"
    assert large[-2] == "coordinator only" and large[-1] == "static window"  # native priority not configured
    # Agents: queued ones first, at most 6 shown, the rest counted.
    agents = [line.split("│")[1].strip() for line in out.splitlines() if line.startswith("│ waiter-")]
    assert sorted(agents) == ["waiter-cold", "waiter-hot", "waiter-warm"]
    first_agent_row = next(i for i, line in enumerate(out.splitlines()) if line.startswith("│ waiter-"))
    assert all("queued" in line for line in out.splitlines()[first_agent_row : first_agent_row + 3])
    assert "... and 2 more agents" in out  # 8 agents, 6 shown
    routed = status["savings"]["routed"]["calls"]
    assert f"({routed} calls on the small model)" in out and routed == 2
    assert "speculation not enabled" in out
    assert "PROMPT-SECRET" not in out


async def test_status_shows_the_kv_view_engaged_under_pressure_and_what_each_agent_waits_on() -> None:
    # A 500-token KV (configured; the correction off, so the simulator's own capacity is not learned): agent a's
    # call is held upstream, b's ~2,000-token call arrives: the active agents need over 4x the KV, the kv
    # policy's gates engage, and b waits for room in the working set.
    scheduling = {"policy": "kv", "kv_capacity_tokens": 500, "kv_correction": False, "kv_small_context_tokens": 0}
    async with coordinator(scheduling) as (url, client, state):
        large = state.dispatchers["large"]
        fleet = Fleet(client, state)
        holder = client.post(
            "/v1/chat/completions",
            json=chat("hold", model="large"),
            headers={"x-agent-id": "a", "x-sim-fault": "stall"},
        )
        fleet.tasks.append(asyncio.create_task(holder))
        await wait_until(lambda: large.in_flight == 1)
        big = client.post("/v1/chat/completions", json=chat("x " * 4000, model="large"), headers={"x-agent-id": "b"})
        fleet.tasks.append(asyncio.create_task(big))
        await wait_until(lambda: len(large.queue) == 1)
        try:
            rc, out, err = await status_command("--url", url)
            status = (await client.get("/status")).json()
        finally:
            await fleet.stop()
    assert rc == 0, err
    ws = status["kv"]["large"]["working_set"]
    assert status["kv"]["large"]["gate"] == "working_set" and ws["engaged"] is True  # the kv policy, engaged
    row = table_row(out, "large", "working_set")
    assert row[2] == "engaged (on >= 4x, off <= 0.5x)"
    assert row[3] == f"{fmt_tokens(ws['demand_tokens'])} = {ws['pressure_ratio']:.2f}x (2 agents)"
    assert ws["pressure_ratio"] >= 4 and row[4] == "500 of 500 (configured)"
    assert row[7] == "1" and row[8].startswith("1 on working_set: b needs")  # a holds the one place
    assert table_row(out, "small", "window")[2] == "idle (on >= 4x, off <= 0.5x)"  # the 7B: no pressure
    agents = {a["agent_id"]: a for a in status["agents"]}
    assert table_row(out, "b")[-1] == "working_set" and table_row(out, "a")[-1] == DASH
    assert table_row(out, "a")[-2] == fmt_tokens(agents["a"]["kv_resident_tokens"]) != "0"


async def test_status_needs_the_admin_token_when_the_coordinator_has_one() -> None:
    async with coordinator(admin_token="t0ken") as (url, _, _):
        rc, out, err = await status_command("--url", url)
        assert rc == 1 and out == ""
        assert "requires its admin token" in err and "--admin-token" in err
        rc, out, err = await status_command("--url", url, "--admin-token", "t0ken")
        assert rc == 0, err
        assert "Queues and latency per model and tier" in out
        rc, out, _ = await status_command("--url", url, env={"GOOSE_SIDECAR_COORDINATOR_ADMIN_TOKEN": "t0ken"})
        assert rc == 0 and "Upstreams" in out


async def test_status_says_clearly_when_the_coordinator_is_unreachable() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    rc, out, err = await status_command("--url", url, "--timeout", "2")
    assert rc == 1 and out == ""
    assert f"cannot reach the coordinator at {url}" in " ".join(err.split())
    assert "goose-sidecar up" in err


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
async def test_watch_redraws_until_interrupted(signum: int) -> None:
    async with coordinator() as (url, client, _):
        await client.post("/v1/agents/watcher-1/events", json={"seq": 1, "tool": "read_file", "ok": True})
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "sidecar.cli",
            "status",
            "--url",
            url,
            "--watch",
            "--interval",
            "0.1",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=ENV,
        )
        assert process.stdout is not None
        seen = b""
        try:
            async with asyncio.timeout(30):
                while seen.count(b"goose-sidecar status") < 2:
                    chunk = await process.stdout.read(4096)
                    assert chunk, "status --watch exited early"
                    seen += chunk
        finally:
            process.send_signal(signum)
            try:
                _, err = await asyncio.wait_for(process.communicate(), 60)
            except TimeoutError:
                process.kill()
                _, err = await process.communicate()
                raise AssertionError(f"status --watch ignored signal {signum}: {err.decode()}") from None
        assert process.returncode == 0, err.decode()
        assert b"watcher-1" in seen
