"""Cache stress: concurrent readers and writers, every kind of change, no read may ever return stale content."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from sidecar.bench.stress import run_stress
from sidecar.toolserver.settings import SidecarSettings
from sidecar.toolserver.sidecar import Sidecar


async def test_no_stale_reads_under_churn(make_settings: Callable[..., SidecarSettings], tmp_path: Path) -> None:
    empty = tmp_path / "stress"
    empty.mkdir()
    kinds = ("same_size_old_mtime", "atomic_rename", "cp_p", "touch", "delete_recreate", "dir_swap")
    async with Sidecar(make_settings(workspace=empty), env={}) as sc:
        # At least 3 s, then on until the tools were exercised enough (a slow machine fits less work in 3 s).
        result = await run_stress(
            sc,
            seconds=3.0,
            burst_files=3000,
            overflow_rounds=2,
            min_reads=101,
            min_searches=6,
            writer_kinds=kinds,
            max_seconds=60.0,
        )
    print(f"\nstress: {result.as_dict()}")
    assert result.stale_reads == 0 and result.stale_search_lines == 0
    assert result.reads > 100 and result.searches > 5  # the test really exercised the tools...
    assert result.cache_hits > 0  # ... and the cache served hits between changes
    assert all(result.writer_ops.get(kind, 0) > 0 for kind in kinds), result.writer_ops
    if result.writer_ops["forced_overflows"]:
        assert result.flushes >= 1  # the kernel queue overflowed for real: everything was flushed
