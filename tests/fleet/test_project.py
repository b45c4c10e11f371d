"""The sample-project generator: deterministic, planted bugs marked for the simulator, suites that fail until fixed."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sidecar.fleet.project import MARKER, generate_project, plant, write_project
from sidecar.fleet.snippets import THEMES
from sidecar.sim.agent import pending_fixes
from sidecar.sim.transcript import Transcript


def test_same_seed_same_files_and_different_seeds_differ() -> None:
    first, again = generate_project(7), generate_project(7)
    assert first.files == again.files
    assert first.bugs == again.bugs
    assert generate_project(8).files != first.files


@pytest.mark.parametrize("seed", range(6))
def test_shape(seed: int) -> None:
    project = generate_project(seed, modules=4, bugs=2)
    assert len(project.source_files) == 5  # four modules and the package's __init__
    assert 20 <= project.test_count <= 60
    assert len(project.bugs) == 2
    marked = [line for path in project.source_files for line in project.files[path].splitlines() if MARKER in line]
    assert len(marked) == 2
    for path in project.source_files:
        compile(project.files[path], path, "exec")


@pytest.mark.parametrize("theme", THEMES, ids=lambda t: t.module)
def test_every_bug_line_occurs_once(theme) -> None:  # type: ignore[no-untyped-def]
    for snippet in theme.snippets:
        planted = plant(snippet.source, *snippet.bug)
        assert planted != snippet.source
        assert planted.count(MARKER) == 1


def test_plant_refuses_a_line_that_is_not_there_once() -> None:
    with pytest.raises(ValueError):
        plant("x = 1\nx = 1\n", "x = 1", "x = 2")


def test_the_simulator_sees_each_planted_bug_as_a_fix() -> None:
    """What the simulator's agent derives from a `read_file` of a module: the exact edit that fixes it."""
    project = generate_project(3, bugs=3)
    for bug in project.bugs:
        text = project.files[bug.path]
        lines = {n: line for n, line in enumerate(text.split("\n"), start=1)}
        transcript = Transcript(tools={}, steps=[], task="", files=[bug.path], lines={bug.path: lines})
        fixes = pending_fixes(transcript)
        assert any(fix.after.strip().startswith(bug.correct) and bug.broken in fix.before for fix in fixes)


def test_suite_fails_until_the_bugs_are_fixed(tmp_path: Path) -> None:
    project = generate_project(11, bugs=2)
    root = write_project(project, tmp_path / "ws")
    env = {**os.environ, "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}
    pytest_argv = [sys.executable, "-m", "pytest", "-q"]
    broken = subprocess.run(pytest_argv, cwd=root, capture_output=True, text=True, env=env, timeout=60)
    assert broken.returncode == 1, broken.stdout
    failed = set(re.findall(r"^FAILED \S+::(\w+)", broken.stdout, re.M))
    assert failed and failed <= {name for bug in project.bugs for name in bug.tests}
    for bug in project.bugs:
        path = root / bug.path
        fixed = [
            line[: len(line) - len(line.lstrip())] + bug.correct if MARKER in line and bug.broken in line else line
            for line in path.read_text().split("\n")
        ]
        path.write_text("\n".join(fixed))
    passing = subprocess.run(pytest_argv, cwd=root, capture_output=True, text=True, env=env, timeout=60)
    assert passing.returncode == 0, passing.stdout
    assert f"{project.test_count} passed" in passing.stdout


def test_written_project_is_a_clean_git_repository(tmp_path: Path) -> None:
    root = write_project(generate_project(2), tmp_path / "ws")
    status = subprocess.run(["git", "status", "--porcelain"], cwd=root, capture_output=True, text=True, check=True)
    assert status.stdout == ""
    log = subprocess.run(["git", "log", "--oneline"], cwd=root, capture_output=True, text=True, check=True)
    assert len(log.stdout.splitlines()) == 1


def test_a_slower_suite_takes_at_least_its_delay_and_still_fails_on_the_bugs(tmp_path: Path) -> None:
    assert "tests/conftest.py" not in generate_project(3, modules=1).files
    project = generate_project(3, modules=1, bugs=1, test_delay_s=1.0)
    root = write_project(project, tmp_path / "slow")
    started = time.monotonic()
    env = {**os.environ, "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}
    argv = [sys.executable, "-m", "pytest", "-q"]
    run = subprocess.run(argv, cwd=root, capture_output=True, text=True, env=env, timeout=60)
    elapsed = time.monotonic() - started
    assert run.returncode == 1 and "failed" in run.stdout, run.stdout  # the planted bug still fails
    assert elapsed >= 1.0  # a lower bound only: the sleeps add up to the delay, whatever the machine
