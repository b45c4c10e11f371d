"""Several coordinators in front of one engine: each with its share of the window, agents split between them.

Real servers on loopback: one simulator (vLLM V1's priority policy, `max_num_seqs` slots), two or three real
coordinators configured as peers (`[coordinator] peers / index`), and, where Debian's nginx is installed, a real
nginx in front hashing each agent to one coordinator. The upstream's side is measured at the upstream: an ASGI
wrapper around the simulator counts the chat calls it holds at once. Counts and finish ranks are asserted, never
timings.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import subprocess
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from sidecar.bench.ordering import PROFILE, engine_count
from sidecar.config import load_config
from sidecar.coordinator.app import build_app
from sidecar.core.partition import owner
from sidecar.serving import free_port, serve_app
from sidecar.sim.app import build_sim_app
from sidecar.sim.settings import SimSettings
from sidecar.testing import wait_until
from tests.conftest import require_tool

TIME_SCALE = 4.0


@dataclass
class InFlight:
    """ASGI wrapper: how many chat calls the wrapped server holds now, and the most it ever held at once."""

    app: Any
    now: int = 0
    peak: int = 0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        counted = scope["type"] == "http" and scope["path"].endswith("/chat/completions")
        if counted:
            self.now += 1
            self.peak = max(self.peak, self.now)
        try:
            await self.app(scope, receive, send)
        finally:
            if counted:
                self.now -= 1


@dataclass
class Fleet:
    engine_url: str
    model: str
    engine: InFlight
    coordinators: list[str]
    finished: list[str] = field(default_factory=list)


@contextlib.asynccontextmanager
async def fleet(
    peers: int, slots: int, native: bool, *, time_scale: float = TIME_SCALE, **scheduling: Any
) -> AsyncIterator[Fleet]:
    """One simulator with `slots` sequence slots and `peers` coordinators in front of it (peer i = index i)."""
    settings = SimSettings(
        time_scale=time_scale, scheduling_policy="priority", profile_overrides={PROFILE: {"max_num_seqs": slots}}
    )
    sim = build_sim_app(settings, PROFILE)
    engine = InFlight(sim)
    upstream = dict(scheduling.pop("upstream", {}))
    async with contextlib.AsyncExitStack() as stack:
        engine_url = await stack.enter_async_context(serve_app(engine))
        model = sim.state.sim.served.names[0]
        urls = []
        for index in range(peers):
            overrides: dict[str, Any] = {
                "models": {
                    "large": {"replicas": [engine_url], "served_name": model, "native_priority": native, **upstream}
                },
                "coordinator.peers": peers,
                "coordinator.index": index,
                "scheduling.metrics_interval_s": 0.1,
                **{f"scheduling.{k}": v for k, v in scheduling.items()},
            }
            urls.append(await stack.enter_async_context(serve_app(build_app(load_config(env={}, overrides=overrides)))))
        yield Fleet(engine_url, model, engine, urls)


def chat(model: str, tokens: int, tier: str, text: str = "go on with the task") -> dict[str, Any]:
    return {
        "model": model,
        "messages": [{"role": "user", "content": text}],
        "max_tokens": tokens,
        "ignore_eos": True,
        "temperature": 0,
        "priority": tier,
    }


async def call(client: httpx.AsyncClient, url: str, agent: str, body: dict[str, Any]) -> None:
    response = await client.post(f"{url}/v1/chat/completions", json=body, headers={"X-Agent-Id": agent})
    assert response.status_code == 200, f"{agent}: {response.status_code} {response.text[:300]}"


async def run_agents(f: Fleet, agents: Sequence[str], calls: int, tokens: int = 24) -> None:
    """Each agent sends `calls` cold calls one after another to the coordinator that owns it."""
    async with httpx.AsyncClient(timeout=120, trust_env=False) as client:

        async def agent(name: str) -> None:
            url = f.coordinators[owner(name, len(f.coordinators))]
            for _ in range(calls):
                await call(client, url, name, chat(f.model, tokens, "cold", f"{name}: go on"))

        await asyncio.gather(*(agent(a) for a in agents))


async def statuses(client: httpx.AsyncClient, f: Fleet) -> list[dict[str, Any]]:
    return [(await client.get(f"{url}/status")).json() for url in f.coordinators]


AGENTS = [f"agent-{n}" for n in range(1, 13)]


@pytest.mark.parametrize(
    ("case", "slots", "native", "scheduling", "bound"),
    [
        # a fixed window of 6 for the upstream: 2 per peer; vLLM (4 slots) keeps the rest in its own queue
        ("static window", 4, True, {"window": 6}, 6),
        # the engine's configured max_num_seqs: 2 + 1 + 1 in flight, nothing waits inside vLLM
        ("configured max_num_seqs", 4, False, {"upstream": {"max_num_seqs": 4}}, 4),
    ],
)
async def test_the_peers_together_never_hold_more_than_the_upstreams_window(
    case: str, slots: int, native: bool, scheduling: dict[str, Any], bound: int
) -> None:
    async with fleet(3, slots, native, **scheduling) as f:
        await run_agents(f, AGENTS, calls=3)
        assert f.engine.peak == bound, case  # never more, and the shares together do fill it
        async with httpx.AsyncClient(timeout=10) as client:
            status = await statuses(client, f)
    assert [s["peer"] for s in status] == [{"index": i, "peers": 3} for i in range(3)]
    assert sum(s["scheduling"]["large"]["window"] for s in status) == bound
    served = [{a["agent_id"] for a in s["agents"]} for s in status]
    assert set().union(*served) == set(AGENTS) and sum(map(len, served)) == len(AGENTS)  # each at one peer


async def test_each_peer_takes_its_share_of_the_capacity_it_learns() -> None:
    """Nothing configured: every peer learns the engine's 4 slots from its /metrics (the same engine for all) and
    keeps only its share, so once learnt the peers hold 4 calls in flight between them, not 4 each."""
    async with fleet(3, 4, False) as f, httpx.AsyncClient(timeout=10) as client:

        async def learnt() -> bool:
            return all(s["scheduling"]["large"]["engine_slots"] == 4 for s in await statuses(client, f))

        async def load_until_learnt() -> bool:
            # Calls long enough that vLLM's queue outlasts several scrapes even when a loaded machine slows them.
            await run_agents(f, AGENTS, calls=1, tokens=96)
            return await learnt()

        await wait_until(load_until_learnt, "every peer to learn the engine's 4 slots", limit_s=180)
        windows = [s["scheduling"]["large"]["window"] for s in await statuses(client, f)]
        assert sum(windows) == 4, windows
        f.engine.peak = f.engine.now
        await run_agents(f, AGENTS, calls=3)
        assert f.engine.peak == 4


async def test_a_hot_call_at_one_peer_overtakes_cold_calls_another_peer_left_waiting_in_vllm() -> None:
    """2 engine slots shared by 2 peers (1 each, plus one call each may wait inside vLLM with native priority).
    Six cold calls, alternating peers, then a hot one at peer 1, all as long: vLLM runs the first two colds
    (the second sent 1.2 engine seconds after the first), holds one cold of each peer in its queue, and each peer
    holds one more. The hot call passes its peer's full window and vLLM starts it in the first slot that frees,
    ahead of both waiting colds, peer 0's included: it finishes third, right after the two that were running.
    Held at its peer until the peer's own slot frees, it would start 1.2 engine seconds after peer 0's waiting
    cold and finish fourth."""
    candidates = [f"agent-{n}" for n in range(60)]
    names = {peer: [a for a in candidates if owner(a, 2) == peer][:4] for peer in (0, 1)}
    hot = names[1].pop()
    order = [names[i % 2][i // 2] for i in range(6)] + [hot]
    gaps = [1.2] + [0.1] * 5  # engine seconds after each cold call reached the engine or its peer
    setup = fleet(2, 2, True, time_scale=1.5, upstream={"max_num_seqs": 2})
    async with setup as f, httpx.AsyncClient(timeout=120, trust_env=False) as client:

        async def one(agent: str) -> None:
            tier = "hot" if agent == hot else "cold"
            await call(client, f.coordinators[owner(agent, 2)], agent, chat(f.model, 120, tier, agent))
            f.finished.append(agent)

        async def arrived(n: int) -> bool:
            """The first `n` calls are held by a peer or the engine, or done (as the ordering bench counts)."""
            held = [s["scheduling"]["large"] for s in await statuses(client, f)]
            in_flight = sum(d["in_flight"] for d in held)
            queued = sum(d["queued"] for d in held)
            engine = await engine_count(client, f.engine_url)
            return in_flight + queued + len(f.finished) == n and engine == in_flight

        tasks = []
        for i, agent in enumerate(order):
            tasks.append(asyncio.create_task(one(agent)))
            await wait_until(functools.partial(arrived, i + 1), f"call {i + 1} to reach a peer or the engine", 90)
            if i < len(gaps):
                await asyncio.sleep(gaps[i] / 1.5)
        await asyncio.gather(*tasks)
    assert f.finished.index(hot) + 1 == 3, (f.finished, order)
    assert set(f.finished[:2]) == {order[0], order[1]}, (f.finished, order)


NGINX_CONF = """
daemon off;
master_process off;
worker_processes 1;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log warn;
events {{ worker_connections 256; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
{routing}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://coordinators;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            proxy_buffering off;
            proxy_read_timeout 600s;
        }}
    }}
}}
"""


def nginx_conf(tmp: Path, coordinators: Sequence[str], port: int) -> Path:
    """nginx.conf for a loopback nginx whose routing is docs/nginx-coordinators.conf, with `coordinators` as
    its servers."""
    routing = Path(__file__).resolve().parents[2] / "docs" / "nginx-coordinators.conf"
    servers = "".join(f"    server {url.removeprefix('http://')};\n" for url in coordinators)
    lines = routing.read_text(encoding="utf-8").splitlines(keepends=True)
    snippet = "".join(servers if "server coordinator-0" in line else line for line in lines)
    snippet = "".join(line for line in snippet.splitlines(keepends=True) if "server coordinator-" not in line)
    conf = tmp / "nginx.conf"
    conf.write_text(NGINX_CONF.format(tmp=tmp, port=port, routing=snippet), encoding="utf-8")
    return conf


def error_log(tmp: Path) -> str:
    path = tmp / "error.log"
    return path.read_text(encoding="utf-8", errors="replace") if path.exists() else "(no error.log)"


@contextlib.asynccontextmanager
async def nginx(tmp: Path, coordinators: Sequence[str]) -> AsyncIterator[str]:
    """A real nginx on loopback hashing each agent to one of `coordinators` (the configuration docs/deploy.md
    shows); yields its URL."""
    binary = require_tool("nginx", "/usr/sbin/nginx")
    port = free_port()
    conf = nginx_conf(tmp, coordinators, port)
    proc = await asyncio.create_subprocess_exec(
        binary, "-p", str(tmp), "-c", str(conf), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    url = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(timeout=5) as client:

            async def up() -> bool:
                assert proc.returncode is None, error_log(tmp)
                with contextlib.suppress(httpx.HTTPError):
                    return (await client.get(f"{url}/livez")).status_code == 200
                return False

            await wait_until(up, "nginx to answer", 30)
        yield url
    finally:
        if proc.returncode is None:
            proc.terminate()
        await proc.wait()


async def test_an_l7_balancer_hashing_the_agent_sends_each_agent_to_one_coordinator(tmp_path: Path) -> None:
    """Through a real nginx (`hash $agent consistent`): Goose's calls carry `X-Agent-Id`, the path form
    `/agents/{id}/v1/...` carries none, the sidecar's events only the path. All of one agent's calls and events
    land on one coordinator, and the fleet is spread over both."""
    agents = [f"agent-{n}" for n in range(1, 17)]
    event = {"session_id": "s", "seq": 1, "tool": "edit_file", "ok": True, "paths": ["a.py"], "duration_ms": 1}
    async with contextlib.AsyncExitStack() as stack:
        f = await stack.enter_async_context(fleet(2, 4, True))
        lb = await stack.enter_async_context(nginx(tmp_path, f.coordinators))
        client = await stack.enter_async_context(httpx.AsyncClient(base_url=lb, timeout=120, trust_env=False))

        async def agent(name: str) -> None:
            body = chat(f.model, 4, "cold", name)
            for path in ("/v1/chat/completions", f"/agents/{name}/v1/chat/completions"):
                headers = {"X-Agent-Id": name} if path.startswith("/v1") else {}
                response = await client.post(path, json=body, headers=headers)
                assert response.status_code == 200, response.text
            response = await client.post(f"/v1/agents/{name}/events", json={**event, "session_id": name})
            assert response.status_code == 200, response.text

        await asyncio.gather(*(agent(a) for a in agents))
        status = [(await client.get(f"{url}/status")).json() for url in f.coordinators]
    seen = [{a["agent_id"]: (a["requests"], a["events"]) for a in s["agents"]} for s in status]
    assert all(seen), seen  # both coordinators serve part of the fleet
    for name in agents:
        where = [i for i, agents_here in enumerate(seen) if name in agents_here]
        assert len(where) == 1, (name, seen)
        assert seen[where[0]][name] == (2, 1), (name, seen)  # both calls and the event, at that one coordinator
