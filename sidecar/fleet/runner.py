"""Run a fleet: N agents, each on its own copy of a sample project beside its own sidecar process.

`run_fleet(options, stack, workdir)`:
1. writes agent k's project (`generate_project(options.project_seed * 1000 + k)`) under `workdir/agent-k`;
2. starts every sidecar (`goose-sidecar mcp` over stdio, events to the stack's tap) and waits for all of
   them, so process start-up never counts as agent time;
3. starts the agents together (agent k after `k * stagger_s`), samples the timeline meanwhile;
4. stops the sidecars (their queued events drain to the tap), then joins each agent's tool calls with the
   sidecar's events by `seq` to count cache hits per turn.
Agents that fail are recorded with their error; the run itself only fails if a sidecar cannot start.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from sidecar.fleet.agent import Agent, AgentSpec, CallLog, Writer, WriterSpec
from sidecar.fleet.chat import ChatClient
from sidecar.fleet.mcp_client import open_sidecar
from sidecar.fleet.project import generate_project, write_project, writer_prompts
from sidecar.fleet.records import AgentRun, FleetRun, Turn
from sidecar.fleet.stack import Stack
from sidecar.fleet.timeline import Sampler

EVENT_DRAIN_S = 3.0
# The sample project needs plain pytest; not loading this environment's dev plugins (hypothesis, asyncio,
# timeout) cuts a test run from ~0.75 s to ~0.3 s on the 2-core bench machine.
SIDECAR_ENV = {"PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}


@dataclass(frozen=True)
class FleetOptions:
    agents: int = 2
    writers: int = 0  # documentation agents (no tools): docstrings and commit messages, the seed's simple work
    writer_turns: int = 6
    max_turns: int = 30
    model: str = "large"
    project_seed: int = 0
    modules: int = 4
    bugs: int = 2
    test_delay_s: float = 0.0  # real seconds a full test run of each project takes beyond pytest's own time
    stagger_s: float = 0.0
    compress: bool = False
    keep_recent: int = 2
    prefetch: bool = False
    tool_cache: bool = True
    speculate_tests: bool = False  # the sidecar's tool-level speculation (test pre-runs after an edit)
    peek: bool = False  # the sidecar serves /peek so the coordinator's LLM-level speculation can see its results
    # Extra `[sidecar]` settings for every sidecar, (field, value) pairs, passed as GOOSE_SIDECAR_SIDECAR_* variables.
    sidecar_settings: tuple[tuple[str, Any], ...] = ()
    timeline_interval_s: float = 0.1
    label: str = "fleet"
    sidecar_args: tuple[str, ...] = field(default_factory=tuple)


def sidecar_command() -> tuple[str, list[str]]:
    """`goose-sidecar` from this environment (the console script beside the interpreter, else the module)."""
    script = Path(sys.executable).with_name("goose-sidecar")
    if script.exists():
        return str(script), []
    return sys.executable, ["-m", "sidecar.cli"]


def sidecar_env(options: FleetOptions) -> dict[str, str]:
    """The sidecars' environment: plain pytest, and `[sidecar]` settings as configuration variables."""
    env = dict(SIDECAR_ENV)
    settings = dict(options.sidecar_settings)
    if options.speculate_tests:
        settings["speculate_tests"] = True
    if options.peek:
        settings["peek_port"] = 0
    for name, value in settings.items():
        text = (
            json.dumps(value)
            if isinstance(value, list | dict)
            else str(value).lower()
            if isinstance(value, bool)
            else str(value)
        )
        env[f"GOOSE_SIDECAR_SIDECAR_{name.upper()}"] = text
    return env


def sidecar_args(options: FleetOptions, workspace: Path, tap_url: str, agent_id: str) -> list[str]:
    args = [
        "mcp",
        "--workspace",
        str(workspace),
        "--coordinator",
        tap_url,
        "--agent-id",
        agent_id,
        "--test-command",
        f"{sys.executable} -m pytest -q",
        "--allow-command",
        "git commit *",
        "--log-level",
        "warning",
        "--log-format",
        "json",
    ]
    if not options.tool_cache:
        args += ["--cache-max-bytes", "0"]
    return args + list(options.sidecar_args)


async def run_fleet(
    options: FleetOptions,
    stack: Stack,
    workdir: Path,
    *,
    on_turn: Callable[[AgentRun, Turn], None] | None = None,
    on_ready: Callable[[list[str]], None] | None = None,
    on_done: Callable[[AgentRun], None] | None = None,
) -> FleetRun:
    specs = await asyncio.to_thread(_prepare, options, workdir)
    writer_specs = _writers(options)
    if on_ready is not None:
        on_ready([s.agent_id for s in specs] + [w.agent_id for w in writer_specs])
    command, prefix = sidecar_command()
    started = asyncio.Event()
    ready: list[asyncio.Event] = [asyncio.Event() for _ in specs]
    epoch_box: list[float] = []
    agents: list[Agent] = []
    results: list[AgentRun] = []

    async with httpx.AsyncClient(
        timeout=httpx.Timeout(connect=10.0, read=900.0, write=60.0, pool=60.0),
        limits=httpx.Limits(max_connections=max(16, 4 * len(specs))),
        trust_env=False,
    ) as client:
        chat = ChatClient(client, stack.coordinator_url, stack.clocks)

        async def one(k: int, spec: AgentSpec) -> None:
            log = (workdir / f"{spec.agent_id}.sidecar.log").open("w", encoding="utf-8")
            with log:
                args = prefix + sidecar_args(options, spec.workspace, stack.tap_url, spec.agent_id)
                env = {"AGENT_SESSION_ID": spec.session_id, "AGENT_ID": spec.agent_id, **sidecar_env(options)}
                async with open_sidecar(command, args, env=env, cwd=str(spec.workspace), errlog=log) as tools:
                    ready[k].set()
                    await started.wait()
                    await asyncio.sleep(k * options.stagger_s)
                    agent = Agent(spec, chat, tools, epoch=epoch_box[0], on_turn=on_turn)
                    agents.append(agent)
                    result = await agent.run()
                    results.append(result)
                    if on_done is not None:
                        on_done(result)

        async def write(k: int, spec: WriterSpec) -> None:
            await started.wait()
            await asyncio.sleep((len(specs) + k) * options.stagger_s)
            result = await Writer(spec, chat, epoch=epoch_box[0], on_turn=on_turn).run()
            results.append(result)
            if on_done is not None:
                on_done(result)

        tasks = [asyncio.create_task(one(k, spec)) for k, spec in enumerate(specs)]
        tasks += [asyncio.create_task(write(k, spec)) for k, spec in enumerate(writer_specs)]
        waiting = [asyncio.create_task(event.wait()) for event in ready]
        try:
            await _all_ready(tasks, waiting)
            epoch_box.append(time.monotonic())
            sampler = Sampler(client, stack.upstream_urls, stack.coordinator_url, epoch_box[0])
            sampling = asyncio.create_task(sampler.run(options.timeline_interval_s))
            started.set()
            try:
                await asyncio.gather(*tasks)
            finally:
                wall = time.monotonic() - epoch_box[0]
                sampling.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await sampling
        finally:
            for task in [*tasks, *waiting]:
                task.cancel()
            await asyncio.gather(*tasks, *waiting, return_exceptions=True)

    for agent in agents:
        await stack.tap.wait_for(agent.spec.agent_id, len(agent.calls), EVENT_DRAIN_S)
        join_events(agent.run_record, agent.calls, stack.tap.events.get(agent.spec.agent_id, []))
    order = {agent_id: k for k, agent_id in enumerate([s.agent_id for s in specs] + [w.agent_id for w in writer_specs])}
    results.sort(key=lambda run: order[run.agent_id])
    return FleetRun(
        label=options.label,
        agents=results,
        time_scale=stack.time_scale,
        wall_s=wall,
        settings={"fleet": _plain(options)},
        timeline=sampler.samples,
        events=sum(len(v) for v in stack.tap.events.values()),
    )


async def _all_ready(tasks: Sequence[asyncio.Task[None]], waiting: Sequence[asyncio.Task[Any]]) -> None:
    """Wait until every sidecar is up; re-raise the first start-up failure."""
    pending: set[asyncio.Task[Any]] = set(waiting)
    while pending:
        done, _ = await asyncio.wait({*pending, *tasks}, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            if task in tasks:
                task.result()  # a sidecar (or agent) that ended before the start: raise why
                raise RuntimeError("a sidecar exited before the fleet started")
        pending -= done


def _prepare(options: FleetOptions, workdir: Path) -> list[AgentSpec]:
    workdir.mkdir(parents=True, exist_ok=True)
    specs = []
    for k in range(options.agents):
        project = generate_project(
            options.project_seed * 1000 + k,
            modules=options.modules,
            bugs=options.bugs,
            test_delay_s=options.test_delay_s,
        )
        workspace = write_project(project, workdir / f"agent-{k + 1}")
        specs.append(
            AgentSpec(
                agent_id=f"agent-{k + 1}",
                session_id=f"{options.label}-{options.project_seed}-{k + 1}",
                workspace=workspace,
                task=project.task,
                model=options.model,
                max_turns=options.max_turns,
                compress=options.compress,
                keep_recent=options.keep_recent,
                prefetch=options.prefetch,
            )
        )
    return specs


def _writers(options: FleetOptions) -> list[WriterSpec]:
    return [
        WriterSpec(
            agent_id=f"writer-{k + 1}",
            session_id=f"{options.label}-{options.project_seed}-w{k + 1}",
            model=options.model,
            prompts=tuple(writer_prompts(options.project_seed * 1000 + 500 + k, options.writer_turns)),
        )
        for k in range(options.writers)
    ]


def join_events(run: AgentRun, calls: list[CallLog], events: list[dict[str, Any]]) -> None:
    """Attribute the sidecar's `cached` flags to turns: the n-th call made is the event with `seq` n."""
    by_seq = {e.get("seq"): e for e in events if e.get("session_id") in (run.session_id, None)}
    prefetched: set[str] = set()
    turns = {turn.index: turn for turn in run.turns}
    for n, call in enumerate(calls, start=1):
        event = by_seq.get(n)
        turn = turns.get(call.turn)
        if call.prefetch:
            if call.path:
                prefetched.add(call.path.removeprefix("./"))
            continue
        if event is None or turn is None or not event.get("cached"):
            continue
        turn.cache_hits += 1
        path = call.path.removeprefix("./") if call.path else None
        if call.tool == "read_file" and path in prefetched:
            turn.prefetch_hits += 1
            prefetched.discard(path)  # a prefetch is served once; later hits are the cache's own


def _plain(options: FleetOptions) -> dict[str, Any]:
    return {name: getattr(options, name) for name in options.__dataclass_fields__}
