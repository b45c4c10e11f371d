"""`python -m sidecar.bench.ordering`: does a hot call get ahead of cold work, and where is it held?

The experiment of issue 14 (finding 1): an engine with `--scheduling-policy priority` and few sequence slots
(`max_num_seqs` 2, and 4 for the issue's target); `colds` cold calls sent 0.3 s apart (4, or 6), then one hot
call; the rank at which the hot call finishes among all of them (1 = first). Conditions:

    direct     the engine reached directly, vLLM's integer priorities (cold 2, hot 0): what vLLM alone does
    default    through the coordinator, default scheduling, the upstream declared `native_priority = true`
    undeclared through the coordinator, default scheduling, native priority not declared (the coordinator then
               sends no `priority` and orders alone)
    fcfs       through the coordinator with `policy = "fcfs"` (no ordering, no `priority` sent)

Each call generates exactly `cold_tokens` / `hot_tokens` tokens (`ignore_eos`), so the finish order follows from
the engine's scheduling, not from the text. A call is sent only after the previous one has reached the engine
(its `/metrics` count it) or the coordinator (its `/status` counts it), then 0.3 s (engine time) later: the
arrival order is fixed whatever the machine's load. Ranks, not timings, are the result.

By default the engine is our simulator (the Qwen2.5-Coder-32B-on-A100 profile, `time_scale` engine seconds per
real second). `--upstream URL --model NAME` runs the same against a real vLLM started with
`--scheduling-policy priority --max-num-seqs N` (pass `--slots N` to label it; the slots are the server's), with
`--cold-tokens`/`--hot-tokens` scaled to its decode speed so the calls keep the margins above (the tiny CPU model
of `reference/vllm_cpu.md` decodes ~16 ms per token: about 225 and 135).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import httpx

CONDITIONS = ("direct", "default", "undeclared", "fcfs")
PROFILE = "qwen2.5-coder-32b-a100"
GAP_S = 0.3  # the spacing between calls, engine seconds
# 45 ms per decode step at batch 1 on the 32B profile (22.1 tok/s, reference/calibration.md): cold calls ~3.7 s,
# the hot one ~2.2 s. The last call then arrives ~1.9 s before the first ends, and the hot call finishes after
# every cold call that was running when it started and before the next cold one, by 1.3 engine seconds or more
# at 2 and 4 slots. (A hot call this short finishes at the same rank under fcfs at 4 slots: it starts after the
# two queued colds but ends before them.)
COLD_TOKENS = 80
HOT_TOKENS = 48


@dataclass(frozen=True)
class Case:
    """One run's shape: the engine's `slots`, `colds` cold calls before the hot one, the simulator's `time_scale`
    (the pause between calls is `GAP_S / time_scale`) and the tokens each cold call and the hot call generate."""

    slots: int
    colds: int
    time_scale: float = 1.0
    cold_tokens: int = COLD_TOKENS
    hot_tokens: int = HOT_TOKENS


@dataclass(frozen=True)
class Trial:
    condition: str
    slots: int
    colds: int
    hot_rank: int  # 1-based finish position of the hot call among colds + 1
    order: tuple[str, ...]  # names in finish order


async def engine_count(client: httpx.AsyncClient, url: str) -> int:
    """Requests the engine holds (running + waiting), from its vLLM /metrics (the simulator's too)."""
    text = (await client.get(f"{url}/metrics")).text
    total = 0.0
    for line in text.splitlines():
        name = line.split("{", 1)[0].split(" ", 1)[0]
        if name in ("vllm:num_requests_running", "vllm:num_requests_waiting"):
            total += float(line.rsplit(" ", 1)[1])
    return int(total)


async def coordinator_count(client: httpx.AsyncClient, url: str) -> tuple[int, int]:
    """(calls in flight, calls queued) at the coordinator, over its models."""
    scheduling = (await client.get(f"{url}/status")).json()["scheduling"]
    return sum(d["in_flight"] for d in scheduling.values()), sum(d["queued"] for d in scheduling.values())


async def _until(check: Callable[[], Awaitable[bool]], within_s: float = 60.0) -> None:
    deadline = asyncio.get_running_loop().time() + within_s
    while not await check():
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError("the experiment's calls did not arrive where expected")
        await asyncio.sleep(0.01)


async def run_trial(
    condition: str, engine_url: str, model: str, case: Case, coordinator_url: str | None = None
) -> Trial:
    """One run of the experiment against an idle engine: `case.colds` cold calls then a hot one; the hot call's
    rank. `coordinator_url` None sends straight to the engine with integer priorities."""
    slots, colds, time_scale = case.slots, case.colds, case.time_scale
    cold_tokens, hot_tokens = case.cold_tokens, case.hot_tokens
    finished: list[str] = []
    direct = coordinator_url is None
    target = engine_url if direct else coordinator_url
    async with httpx.AsyncClient(timeout=300, trust_env=False) as client:

        async def call(name: str, hot: bool) -> None:
            body: dict[str, Any] = {
                "model": model,
                "messages": [{"role": "user", "content": f"{name}: go on with the task"}],
                "max_tokens": hot_tokens if hot else cold_tokens,
                "ignore_eos": True,
                "temperature": 0,
            }
            body["priority"] = (0 if hot else 2) if direct else ("hot" if hot else "cold")
            response = await client.post(f"{target}/v1/chat/completions", json=body)
            if response.status_code != 200:
                raise RuntimeError(f"{name}: {response.status_code} {response.text[:300]}")
            finished.append(name)

        async def arrived(n: int) -> bool:
            """The first `n` calls are in the engine (or, through the coordinator, held there or in the engine),
            or done. Counts that are momentarily out of step (a call ending) just mean: look again."""
            if direct:
                return await engine_count(client, engine_url) + len(finished) == n
            assert coordinator_url is not None
            in_flight, queued = await coordinator_count(client, coordinator_url)
            return in_flight + queued + len(finished) == n and await engine_count(client, engine_url) == in_flight

        await _until(functools.partial(arrived, 0))
        tasks = []
        for i in range(colds + 1):
            hot = i == colds
            tasks.append(asyncio.create_task(call("hot" if hot else f"cold-{i}", hot)))
            await _until(functools.partial(arrived, i + 1))
            if not hot:
                await asyncio.sleep(GAP_S / time_scale)
        await asyncio.gather(*tasks)
    return Trial(condition, slots, colds, finished.index("hot") + 1, tuple(finished))


def coordinator_overrides(condition: str, engine_url: str, model: str) -> dict[str, Any]:
    """The coordinator's config for a condition: default scheduling except what the condition names."""
    upstream: dict[str, Any] = {"served_name": model, "replicas": [engine_url]}
    if condition == "default":
        upstream["native_priority"] = True
    overrides: dict[str, Any] = {"models": {"large": upstream}}
    if condition == "fcfs":
        overrides["scheduling.policy"] = "fcfs"
    return overrides


@contextlib.asynccontextmanager
async def coordinator(condition: str, engine_url: str, model: str) -> AsyncIterator[str]:
    from sidecar.config import load_config
    from sidecar.stack import serve_coordinator

    config = load_config(env={}, overrides=coordinator_overrides(condition, engine_url, model))
    async with serve_coordinator(config) as (url, _):
        yield url


@contextlib.asynccontextmanager
async def simulator(slots: int, time_scale: float) -> AsyncIterator[tuple[str, str]]:
    """Our simulator with the priority policy and `slots` sequence slots: (URL, served model name)."""
    from sidecar.serving import serve_app
    from sidecar.sim.app import build_sim_app
    from sidecar.sim.settings import SimSettings

    settings = SimSettings(
        time_scale=time_scale, scheduling_policy="priority", profile_overrides={PROFILE: {"max_num_seqs": slots}}
    )
    app = build_sim_app(settings, PROFILE)
    async with serve_app(app) as url:
        yield url, app.state.sim.served.names[0]


async def run_condition(condition: str, engine_url: str, model: str, case: Case) -> Trial:
    """One condition on an idle engine (a coordinator of its own for every condition but `direct`)."""
    async with contextlib.AsyncExitStack() as stack:
        url = (
            None
            if condition == "direct"
            else await stack.enter_async_context(coordinator(condition, engine_url, model))
        )
        return await run_trial(condition, engine_url, model, case, coordinator_url=url)
    raise AssertionError("unreachable")  # mypy: the exit stack does not swallow exceptions


async def run_experiment(
    cases: Sequence[tuple[int, int]] = ((2, 4), (2, 6), (4, 4), (4, 6)),
    conditions: Sequence[str] = CONDITIONS,
    *,
    time_scale: float = 2.0,
    upstream: tuple[str, str] | None = None,
    cold_tokens: int = COLD_TOKENS,
    hot_tokens: int = HOT_TOKENS,
) -> list[Trial]:
    """Every condition at every (slots, colds) case, each on a fresh simulator (or on `upstream` (URL, model),
    whose slots are its own)."""
    trials = []
    for slots, colds in cases:
        for condition in conditions:
            if upstream is not None:  # a real engine runs in real time
                engine, model = upstream
                case = Case(slots, colds, cold_tokens=cold_tokens, hot_tokens=hot_tokens)
                trials.append(await run_condition(condition, engine, model, case))
                continue
            async with simulator(slots, time_scale) as (url, model):
                case = Case(slots, colds, time_scale, cold_tokens, hot_tokens)
                trials.append(await run_condition(condition, url, model, case))
    return trials


def format_table(trials: Sequence[Trial]) -> str:
    cases = sorted({(t.slots, t.colds) for t in trials})
    conditions = [c for c in CONDITIONS if any(t.condition == c for t in trials)]
    head = "| condition | " + " | ".join(f"{s} slots, {c} colds" for s, c in cases) + " |"
    lines = [head, "|" + "---|" * (len(cases) + 1)]
    for condition in conditions:
        cells = []
        for slots, colds in cases:
            trial = next((t for t in trials if (t.condition, t.slots, t.colds) == (condition, slots, colds)), None)
            cells.append("-" if trial is None else f"{trial.hot_rank}/{colds + 1}")
        lines.append(f"| {condition} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sidecar.bench.ordering", description=__doc__)
    parser.add_argument("--upstream", help="a real vLLM (base URL) instead of the simulator")
    parser.add_argument("--model", help="the model name the upstream serves (with --upstream)")
    parser.add_argument("--slots", type=int, default=None, help="the upstream's --max-num-seqs (with --upstream)")
    parser.add_argument("--colds", type=int, default=None, help="cold calls before the hot one (with --upstream)")
    parser.add_argument(
        "--cases", default="2x4,2x6,4x4,4x6", help="simulator cases, SLOTSxCOLDS comma-separated (2x4,2x6,4x4,4x6)"
    )
    parser.add_argument("--time-scale", type=float, default=2.0, help="simulator seconds per real second")
    parser.add_argument("--cold-tokens", type=int, default=COLD_TOKENS, help="tokens each cold call generates")
    parser.add_argument("--hot-tokens", type=int, default=HOT_TOKENS, help="tokens the hot call generates")
    parser.add_argument("--json", action="store_true", help="print the trials as JSON lines too")
    args = parser.parse_args(argv)
    if args.upstream:
        if not (args.model and args.slots):
            parser.error("--upstream needs --model and --slots")
        from sidecar.coordinator.settings import server_url

        colds = args.colds or args.slots + 2
        upstream = (server_url(args.upstream), args.model)
        tokens = {"cold_tokens": args.cold_tokens, "hot_tokens": args.hot_tokens}
        trials = asyncio.run(run_experiment([(args.slots, colds)], upstream=upstream, **tokens))
    else:
        try:
            cases = [(int(a), int(b)) for a, _, b in (c.strip().partition("x") for c in args.cases.split(","))]
        except ValueError:
            parser.error(f"--cases: expected SLOTSxCOLDS items such as 2x4, got {args.cases!r}")
        trials = asyncio.run(
            run_experiment(cases, time_scale=args.time_scale, cold_tokens=args.cold_tokens, hot_tokens=args.hot_tokens)
        )
    print(format_table(trials))
    if args.json:
        for t in trials:
            print(json.dumps(t.__dict__), file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
