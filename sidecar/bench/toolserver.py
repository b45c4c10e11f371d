"""Sidecar benchmark: `python -m sidecar.bench.toolserver [--quick] [--json FILE]`.

Prints, on a generated sample project:
- per tool, cached vs uncached latency, p50/p99, in-process (the tool body, as the server calls it) and over a
  real MCP round trip (the SDK client, in-memory transport and streamable HTTP on loopback);
- invalidation latency: a file written by another process until its event is applied (the cache has noticed),
  and until a tree-wide hit's consistency barrier passes; `read_file` needs neither (every hit re-stats);
- the cache stress test (`stress.py`): operations and stale reads (must be 0).
Targets (issue 5): in-process hit p50 <= 0.2 ms; a repeated `run_tests` < 5 ms; invalidation within 50 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from mcp import Client

from sidecar.bench.stress import run_stress
from sidecar.toolserver.httpapp import build_http_app, serve_http
from sidecar.toolserver.settings import SidecarSettings
from sidecar.toolserver.sidecar import Sidecar


def sample_project(root: Path, modules: int = 60) -> None:
    """A small Python package with a pytest suite that takes about a second."""
    (root / "pkg").mkdir(parents=True)
    (root / "tests").mkdir()
    (root / "pkg" / "__init__.py").write_text("")
    for i in range(modules):
        funcs = "\n\n".join(f"def f{i}_{j}(x):\n    return x * {j} + {i}\n" for j in range(20))
        (root / "pkg" / f"mod{i}.py").write_text(f'"""Module {i}."""\n\n\n{funcs}')
    for i in range(10):
        (root / "tests" / f"test_mod{i}.py").write_text(
            f"import sys\nimport time\n\nsys.path.insert(0, '.')\nfrom pkg.mod{i} import f{i}_1\n\n\n"
            f"def test_f():\n    time.sleep(0.08)\n    assert f{i}_1(1) == {1 + i}\n"
        )
    (root / ".gitignore").write_text("__pycache__/\n")


def percentiles(samples_ns: list[int]) -> dict[str, float]:
    ordered = sorted(samples_ns)

    def at(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] / 1e6

    return {"p50_ms": at(0.50), "p99_ms": at(0.99), "n": len(ordered)}


async def timed(
    call: Callable[[], Awaitable[Any]], n: int, before: Callable[[], None] | None = None
) -> dict[str, float]:
    samples = []
    for _ in range(n):
        if before is not None:
            before()
        t0 = time.perf_counter_ns()
        await call()
        samples.append(time.perf_counter_ns() - t0)
    return percentiles(samples)


def _async(fn: Callable[[], Any]) -> Callable[[], Awaitable[Any]]:
    async def call() -> Any:
        result = fn()
        return await result if asyncio.iscoroutine(result) else result

    return call


async def bench_in_process(sc: Sidecar, n: int) -> dict[str, dict[str, dict[str, float]]]:
    t = sc.tools
    calls: dict[str, Callable[[], Any]] = {
        "read_file": lambda: t.read_file("pkg/mod7.py"),
        "list_dir": lambda: t.list_dir(".", 2),
        "search": lambda: t.search(r"def f3_\d+"),
    }
    out: dict[str, dict[str, dict[str, float]]] = {}
    for name, fn in calls.items():
        call = _async(fn)
        await call()
        hit = await timed(call, n)
        miss = await timed(call, max(n // 10, 20), before=lambda: sc.cache.flush("bench"))
        out[name] = {"cached": hit, "uncached": miss}
    run = _async(lambda: t.run_tests())
    first = await timed(run, 2, before=lambda: sc.cache.flush("bench"))
    await run()
    out["run_tests"] = {"cached": await timed(run, max(n // 10, 20)), "uncached": first}
    return out


async def bench_mcp(client: Client, sc: Sidecar, n: int) -> dict[str, dict[str, dict[str, float]]]:
    calls: dict[str, tuple[str, dict[str, Any]]] = {
        "read_file": ("read_file", {"path": "pkg/mod7.py"}),
        "list_dir": ("list_dir", {}),
        "search": ("search", {"pattern": r"def f3_\d+"}),
        "run_tests": ("run_tests", {}),
    }
    meta: Any = {"agent-session-id": "bench"}
    out: dict[str, dict[str, dict[str, float]]] = {}
    for name, (tool, args) in calls.items():

        async def call(tool: str = tool, args: dict[str, Any] = args) -> None:
            result = await client.call_tool(tool, args, meta=meta)
            assert not result.is_error, result

        await call()
        misses = 2 if tool == "run_tests" else max(n // 10, 20)
        out[name] = {
            "cached": await timed(call, n if tool != "run_tests" else max(n // 10, 20)),
            "uncached": await timed(call, misses, before=lambda: sc.cache.flush("bench")),
        }
    return out


async def bench_invalidation(sc: Sidecar, root: Path, n: int) -> dict[str, dict[str, float]]:
    """External writes (another process's view: plain file writes) until the sidecar has noticed them."""
    target = root / "pkg" / "mod3.py"
    applied: dict[str, int] = {}
    sc.watcher.add_listener(lambda path: applied.__setitem__(path, time.perf_counter_ns()))
    event_ns, barrier_ns = [], []
    text = target.read_text()
    for i in range(n):
        applied.pop(str(target), None)
        await sc.tools.search(r"def f3_\d+")
        target.write_text(text + f"# {i}\n")
        written = time.perf_counter_ns()
        out = await sc.tools.search(r"def f3_\d+")  # a tree-wide hit must pass the barrier: sees the change
        barrier_ns.append(time.perf_counter_ns() - written)
        assert not out.cached
        await sc.watcher.barrier()  # the file's own event came before the cookie's
        event_ns.append(applied[str(target)] - written)
    target.write_text(text)
    return {"event_applied": percentiles(event_ns), "tree_hit_after_change": percentiles(barrier_ns)}


async def run_bench(quick: bool) -> dict[str, Any]:
    n = 200 if quick else 2000
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "project"
        sample_project(root)
        await asyncio.sleep(0.15)  # past the racy window
        settings = SidecarSettings(
            workspace=root, test_command=f"{sys.executable} -m pytest -q -p no:cacheprovider", test_timeout_s=120
        )
        sc = Sidecar(settings, env={})
        async with sc:
            results["in_process"] = await bench_in_process(sc, n)
            async with Client(sc.mcp) as client:
                results["mcp_in_memory"] = await bench_mcp(client, sc, n // 4)
            async with serve_http(build_http_app(sc)) as url, Client(f"{url}/mcp") as client:
                results["mcp_http"] = await bench_mcp(client, sc, n // 4)
            results["invalidation"] = await bench_invalidation(sc, root, 50 if quick else 300)
            results["cache"] = sc.cache.stats
        stress_root = Path(tmp) / "stress"
        stress_root.mkdir()
        async with Sidecar(SidecarSettings(workspace=stress_root), env={}) as stress_sc:
            result = await run_stress(
                stress_sc,
                seconds=3.0 if quick else 8.0,
                burst_files=3000 if quick else 20000,
                overflow_rounds=1 if quick else 3,
            )
        results["stress"] = result.as_dict()
    return results


def render(results: dict[str, Any]) -> str:
    lines = []
    for mode in ("in_process", "mcp_in_memory", "mcp_http"):
        lines.append(f"\n{mode}: tool latency, ms (p50 / p99)")
        lines.append(f"  {'tool':<10} {'cached':>20} {'uncached':>20}")
        for tool, row in results[mode].items():
            c, u = row["cached"], row["uncached"]
            lines.append(
                f"  {tool:<10} {c['p50_ms']:>9.3f} / {c['p99_ms']:<8.3f} {u['p50_ms']:>9.3f} / {u['p99_ms']:<8.3f}"
            )
    inv = results["invalidation"]
    lines.append("\ninvalidation, ms (p50 / p99)")
    for name, row in inv.items():
        lines.append(f"  {name:<22} {row['p50_ms']:.3f} / {row['p99_ms']:.3f}  (n={row['n']})")
    lines.append("  read_file                0 (every hit re-stats its file)")
    s = results["stress"]
    lines.append(
        f"\nstress ({s['seconds']:g} s): {s['operations']} operations "
        f"({sum(v for k, v in s['writer_ops'].items() if k not in ('burst_files', 'forced_overflows'))} changes, "
        f"{s['writer_ops'].get('burst_files', 0)} burst files, {s['writer_ops'].get('forced_overflows', 0)} forced "
        f"overflows, {s['reads']} reads, {s['searches']} searches), stale reads: {s['stale_reads']}, "
        f"stale search lines: {s['stale_search_lines']}, cache hits {s['cache_hits']}, flushes {s['flushes']}"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="fewer samples and a shorter stress run")
    parser.add_argument("--json", metavar="FILE", help="also write the numbers as JSON")
    args = parser.parse_args(argv)
    import warnings

    from sidecar.obs import configure_logging

    configure_logging("error")  # the stress test's forced overflows log warnings by design
    warnings.filterwarnings("ignore", message="Callback with id", category=RuntimeWarning)
    results = asyncio.run(run_bench(args.quick))
    print(render(results))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return 0 if results["stress"]["stale_reads"] == 0 and results["stress"]["stale_search_lines"] == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
