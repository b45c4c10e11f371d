"""User-facing text cites published sources by name, never a file of the development workspace that a reader of
a report, a dashboard or an installed package does not have."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from sidecar import citations
from sidecar.bench import scheduling as bench_scheduling
from sidecar.config_example import render_example
from sidecar.coordinator import dashboard
from sidecar.fleet.report import write_report
from sidecar.sim.profiles import PROFILES
from tests.fleet.test_report import bench_result
from tests.test_cli_help import COMMANDS

WORKSPACE_FILES = re.compile(r"000_bc7af0ed774b52c4|calibration\.md|DESIGN\.md|reference/\w+\.md|shared/|seed/")


def check(text: str) -> None:
    found = WORKSPACE_FILES.search(text)
    assert found is None, f"cites a workspace file: ...{text[max(0, found.start() - 80) : found.end() + 20]}..."


def test_the_bench_report_cites_published_sources(tmp_path: Path) -> None:
    report, data = write_report(bench_result(), tmp_path, [])
    check(report.read_text(encoding="utf-8"))
    check(data.read_text(encoding="utf-8"))
    assert "Background Agent Optimizations" in report.read_text(encoding="utf-8")


@pytest.mark.parametrize(
    "text",
    [
        render_example(),
        dashboard.COST_BASIS,
        bench_scheduling.SEED_REPORT,
        *(source for p in PROFILES.values() for source in p.sources),
        *(target.source for p in PROFILES.values() for target in p.targets),
        *(parser.format_help() for parser in COMMANDS.values()),
    ],
)
def test_user_facing_text_cites_published_sources(text: str) -> None:
    check(text)


def test_the_seed_report_is_named() -> None:
    assert "silly-goose" in citations.SEED_REPORT and "Siddharth Ramakrishnan" in citations.SEED_REPORT
