"""`python -m sidecar.coordinator.bench_speculation`: LLM-level speculation on and off, through the real fleet.

The fleet's own machinery (`sidecar.fleet.stack.start_stack`: the embedded simulator's 32B and 7B profiles and the
coordinator in-process on loopback; `sidecar.fleet.runner.run_fleet`: Goose-like agents, each with its own stdio
sidecar subprocess) runs the same seeds once per condition:

    off        `speculation.enabled = false`
    prefetch   `speculation.enabled = true`: the predicted next call is sent and served when identical
    warm       `speculation.enabled = true`, `speculation.mode = "warm"`: max_tokens=1 prefix warming only

Every condition has the sidecar flags speculation needs (`--peek-port 0`, so each stdio sidecar serves /peek and
reports its URL) and the same tool-level settings (test pre-runs and the fleet's read prefetch on, so results are
often already known): only the coordinator's LLM-level speculation differs. Low load: few agents on the
default GPU profile. High load: more agents on a GPU with few slots (`max_num_seqs`), where the seed measured
speculation hurting (0.79x at 2 slots; `seed/000_bc7af0ed774b52c4.txt`).

The agents' trajectories depend on their tool results (test output carries timings), so two conditions do not
run the same turns: compare seconds per turn (real seconds, whole run / turns), not totals. Answers are not
compared here (tests/coordinator/test_speculation_e2e.py replays every request with speculation off).
Numbers are printed; nothing is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

CONDITIONS: dict[str, dict[str, Any]] = {
    "off": {"speculation.enabled": False},
    "prefetch": {"speculation.enabled": True, "speculation.mode": "prefetch"},
    "warm": {"speculation.enabled": True, "speculation.mode": "warm"},
}


async def run_once(
    condition: str, *, agents: int, seed: int, max_turns: int, slots: int | None, time_scale: float, workdir: Path
) -> dict[str, Any]:
    import httpx

    from sidecar.config import load_config
    from sidecar.fleet.runner import FleetOptions, run_fleet
    from sidecar.fleet.stack import start_stack
    from sidecar.sim.settings import SimSettings

    overrides_sim: dict[str, dict[str, Any]] = {}
    if slots is not None:
        overrides_sim = {p: {"max_num_seqs": slots} for p in ("qwen2.5-coder-32b-a100", "qwen2.5-coder-7b-a100")}
    sim = SimSettings(seed=seed, time_scale=time_scale, profile_overrides=overrides_sim)
    options = FleetOptions(
        agents=agents,
        max_turns=max_turns,
        project_seed=seed,
        speculate_tests=True,
        prefetch=True,
        sidecar_settings=(("speculate_max_load_per_core", 8.0),),  # a shared 2-core machine is never "idle"
        sidecar_args=("--peek-port", "0"),
        label=f"{condition}-{seed}",
    )
    async with start_stack(load_config(env={}), sim=sim, overrides=CONDITIONS[condition]) as stack:
        run = await run_fleet(options, stack, workdir / f"{condition}-{seed}")
        async with httpx.AsyncClient(trust_env=False) as http:
            status = (await http.get(f"{stack.coordinator_url}/status")).json()["speculation"]
    turns = [t for a in run.agents for t in a.turns]
    served = sum(t.headers.get("x-goose-sidecar-speculative") == "1" for t in turns)
    return {
        "condition": condition,
        "seed": seed,
        "wall_s": run.wall_s,
        "turns": len(turns),
        "s_per_turn": sum(a.duration_s for a in run.agents) / max(len(turns), 1),
        "llm_s_per_turn": statistics.fmean(t.llm_s for t in turns) if turns else 0.0,
        "served": served,
        "errors": sum(a.error is not None for a in run.agents),
        "speculation": status,
    }


def summarize(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| load | condition | runs | turns | s/turn (mean) | vs off | LLM s/turn | served / turns | followups known "
        "| too late | mismatched | cancelled for real calls | wasted tokens |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for load in dict.fromkeys(r["load"] for r in rows):
        base = [r["s_per_turn"] for r in rows if r["load"] == load and r["condition"] == "off"]
        for condition in CONDITIONS:
            group = [r for r in rows if r["load"] == load and r["condition"] == condition]
            if not group:
                continue
            per_turn = statistics.fmean(r["s_per_turn"] for r in group)
            ratio = statistics.fmean(base) / per_turn if base and per_turn else float("nan")
            turns = sum(r["turns"] for r in group)
            spec = [r["speculation"] for r in group]
            lines.append(
                f"| {load} | {condition} | {len(group)} | {turns} | {per_turn:.3f} | {ratio:.3f}x "
                f"| {statistics.fmean(r['llm_s_per_turn'] for r in group):.3f} "
                f"| {sum(r['served'] for r in group)} / {turns} "
                f"| {sum(s['results_known'] for s in spec)} / {sum(s['followups'] for s in spec)} "
                f"| {sum(s['too_late'] for s in spec)} | {sum(s['mismatched'] for s in spec)} "
                f"| {sum(s['cancelled_for_real_calls'] for s in spec)} | {sum(s['wasted_tokens'] for s in spec)} |"
            )
    return "\n".join(lines)


async def main(args: argparse.Namespace) -> int:
    from sidecar.obs import configure_logging

    configure_logging("warning")
    loads = {"low": (args.low_agents, None), "high": (args.high_agents, args.high_slots)}
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-speculation-") as tmp:
        for load in args.loads:
            agents, slots = loads[load]
            for seed in range(args.seeds):
                for condition in args.conditions:
                    row = await run_once(
                        condition,
                        agents=agents,
                        seed=seed,
                        max_turns=args.max_turns,
                        slots=slots,
                        time_scale=args.time_scale,
                        workdir=Path(tmp) / load,
                    )
                    row["load"] = load
                    rows.append(row)
                    print(json.dumps(row), file=sys.stderr, flush=True)
    print(summarize(rows))
    return 0


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--loads", nargs="+", default=["low", "high"], choices=["low", "high"])
    parser.add_argument("--conditions", nargs="+", default=list(CONDITIONS), choices=list(CONDITIONS))
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--max-turns", type=int, default=14)
    parser.add_argument("--low-agents", type=int, default=2)
    parser.add_argument("--high-agents", type=int, default=8)
    parser.add_argument("--high-slots", type=int, default=2, help="max_num_seqs of the simulated GPUs at high load")
    parser.add_argument("--time-scale", type=float, default=10.0)
    return parser.parse_args(argv)


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main(parse())))
