"""`goose-sidecar bench`'s engine: every condition the chosen experiments need, once per seed, then the report.

Order: seed by seed; within a seed every condition, rotated by one position per seed, so slow drift of the
machine (other load on 2 shared cores) does not always hit the same condition. Each run gets a fresh stack
(simulator with the seed, coordinator with the condition's settings, event tap) and fresh sidecars and
projects, so nothing carries over between runs. A run that fails is recorded with its error and left out of
the comparisons; the bench goes on.

Outputs (under `outdir`): `report.md`, `results.json` (scenario, per-run summaries, comparisons), `runs/` (every
turn of every run, one JSON per run) and the PNG plots (`plots.py`).
"""

from __future__ import annotations

import datetime as dt
import json
import platform
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sidecar.config import Config
from sidecar.fleet.experiments import (
    CONDITIONS,
    FLEET_REQUIRES,
    OPTIONAL_BASELINE,
    Experiment,
    condition_settings,
    needed_conditions,
)
from sidecar.fleet.metrics import summarize
from sidecar.fleet.records import FleetRun
from sidecar.fleet.runner import FleetOptions, run_fleet
from sidecar.fleet.scenario import Scenario
from sidecar.fleet.stack import start_stack, supports
from sidecar.sim.settings import SimSettings


@dataclass
class BenchRun:
    condition: str
    seed: int
    summary: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    real_s: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "condition": self.condition,
            "seed": self.seed,
            "summary": self.summary,
            "error": self.error,
            "real_s": self.real_s,
        }


@dataclass
class BenchResult:
    scenario: Scenario
    experiments: list[Experiment]
    availability: dict[str, str | None]  # experiment -> None if it ran, else why not
    runs: list[BenchRun] = field(default_factory=list)
    fleet_runs: dict[tuple[str, int], FleetRun] = field(default_factory=dict)
    started: str = ""
    real_s: float = 0.0
    command: str = ""
    environment: dict[str, Any] = field(default_factory=dict)


def availability(experiments: list[Experiment]) -> dict[str, str | None]:
    """None for an experiment this build can run, else the reason it cannot."""
    found: dict[str, str | None] = {}
    for experiment in experiments:
        missing = [key for key in experiment.requires if not supports(key)]
        found[experiment.name] = f"the coordinator has no setting {', '.join(missing)} yet" if missing else None
    return found


def plan(experiments: list[Experiment], seeds: list[int]) -> list[tuple[int, str]]:
    """(seed, condition) in run order: each seed's conditions rotated by the seed's position."""
    avail = availability(experiments)
    conditions = needed_conditions(experiments, {name: why is None for name, why in avail.items()})
    order: list[tuple[int, str]] = []
    for position, seed in enumerate(seeds):
        shift = position % len(conditions) if conditions else 0
        order += [(seed, name) for name in conditions[shift:] + conditions[:shift]]
    return order


async def run_bench(
    scenario: Scenario,
    base: Config,
    experiments: list[Experiment],
    *,
    on_start: Callable[[int, int, str, int], None] | None = None,
    on_end: Callable[[BenchRun], None] | None = None,
    workroot: Path | None = None,
) -> BenchResult:
    result = BenchResult(scenario, experiments, availability(experiments))
    result.started = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    result.environment = {"python": platform.python_version(), "machine": platform.machine(), "cpus": _cpus()}
    keys = {*OPTIONAL_BASELINE, *FLEET_REQUIRES.values(), *(k for c in CONDITIONS.values() for k in c.config)}
    supported = {key: supports(key) for key in keys | {"scheduling.policy", "routing.enabled"}}
    order = plan(experiments, scenario.bench.seeds)
    t0 = time.monotonic()
    root = Path(tempfile.mkdtemp(prefix="goose-bench-", dir=workroot))
    try:
        for index, (seed, name) in enumerate(order):
            if on_start is not None:
                on_start(index, len(order), name, seed)
            run = await _one(scenario, base, name, seed, supported, root / f"{name}-{seed}", result)
            result.runs.append(run)
            if on_end is not None:
                on_end(run)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    result.real_s = time.monotonic() - t0
    return result


async def _one(
    scenario: Scenario,
    base: Config,
    name: str,
    seed: int,
    supported: dict[str, bool],
    workdir: Path,
    result: BenchResult,
) -> BenchRun:
    condition = CONDITIONS[name]
    config, fleet = condition_settings(condition, supported)
    sim = SimSettings(**{**scenario.sim, "seed": seed})
    f = scenario.fleet
    options = FleetOptions(
        agents=f.agents,
        writers=f.writers,
        writer_turns=f.writer_turns,
        max_turns=f.max_turns,
        project_seed=seed,
        modules=f.modules,
        bugs=f.bugs,
        test_delay_s=f.test_s / sim.time_scale,
        stagger_s=f.stagger_s,
        keep_recent=f.keep_recent,
        sidecar_settings=tuple(scenario.sidecar.items()),
        label=name,
        **fleet,
    )
    t0 = time.monotonic()
    run = BenchRun(name, seed)
    try:
        async with start_stack(base, sim=sim, overrides={**scenario.coordinator, **config}) as stack:
            fleet_run = await run_fleet(options, stack, workdir)
            fleet_run.settings["coordinator_status"] = await _status_sections(stack.coordinator_url)
        fleet_run.settings["coordinator"] = config
        fleet_run.settings["seed"] = seed
        run.summary = summarize(fleet_run)
        result.fleet_runs[(name, seed)] = fleet_run
        errors = [a.error for a in fleet_run.agents if a.error]
        if errors and len(errors) == len(fleet_run.agents):
            run.error = f"every agent failed: {errors[0]}"
    except Exception as exc:  # one broken condition must not lose the others
        run.error = f"{type(exc).__name__}: {exc}"
    run.real_s = time.monotonic() - t0
    return run


async def _status_sections(url: str) -> dict[str, Any]:
    """The coordinator's own account of the run (speculation, tool cache, savings), as /status reports it."""
    import httpx

    try:
        async with httpx.AsyncClient(timeout=5.0, trust_env=False) as client:
            status = (await client.get(f"{url}/status")).json()
    except (httpx.HTTPError, ValueError):
        return {}
    return {k: status[k] for k in ("speculation", "tool_cache", "savings", "scheduling") if k in status}


def write_runs(result: BenchResult, outdir: Path) -> None:
    folder = outdir / "runs"
    folder.mkdir(parents=True, exist_ok=True)
    for (name, seed), fleet_run in sorted(result.fleet_runs.items()):
        data = fleet_run.to_dict()
        for agent in data["agents"]:
            for turn in agent["turns"]:
                turn.pop("headers", None)
        (folder / f"{name}-seed{seed}.json").write_text(json.dumps(data, default=str) + "\n", encoding="utf-8")


def _cpus() -> int | None:
    import os

    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count()
