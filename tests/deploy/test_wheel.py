"""A built wheel works on its own: built from a copy of the package's files, installed into an empty folder,
run from a directory with no checkout around it (scenarios, the dashboard's files and the example config come
from package data, not from the repository)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

# What pyproject.toml's build reads; anything else the wheel needs must be package data.
BUILD_INPUTS = ("pyproject.toml", "README.md", "LICENSE", "sidecar")


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("wheel")
    src = base / "src"
    src.mkdir()
    for name in BUILD_INPUTS:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, src / name, ignore=shutil.ignore_patterns("__pycache__"))
        elif source.exists():
            shutil.copy2(source, src / name)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    # No build isolation: the dev environment has setuptools>=77 (a dev dependency), so no download is needed.
    built = subprocess.run(
        [*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(base / "dist"), str(src)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert built.returncode == 0, built.stdout + built.stderr
    (wheel,) = (base / "dist").glob("goose_sidecar-*.whl")
    site = base / "site"
    done = subprocess.run(
        [*pip, "install", "--no-deps", "--no-index", "--target", str(site), str(wheel)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return site


def run_from_wheel(site: Path, cwd: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """`goose-sidecar ARGS` with the wheel's package first on the path (dependencies from this environment)."""
    code = (
        "import sys, sidecar; from pathlib import Path; "
        f"assert Path(sidecar.__file__).is_relative_to({str(site)!r}), sidecar.__file__; "
        "from sidecar.cli import main; sys.exit(main(sys.argv[1:]))"
    )
    env = {**os.environ, "PYTHONPATH": str(site)}
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_bench_lists_the_packaged_scenarios(installed: Path, tmp_path: Path) -> None:
    done = run_from_wheel(installed, tmp_path, "bench", "--list")
    assert done.returncode == 0, done.stderr
    line = next(x for x in done.stdout.splitlines() if x.startswith("scenarios:"))
    assert {"demo", "small", "full"} <= {name.strip() for name in line.split(":", 1)[1].split(",")}


def test_the_wheel_holds_every_scenario_of_the_checkout(installed: Path) -> None:
    shipped = {p.name for p in (ROOT / "sidecar" / "fleet" / "scenarios").glob("*.toml")}
    assert shipped and shipped == {p.name for p in (installed / "sidecar" / "fleet" / "scenarios").glob("*.toml")}


def test_the_wheel_carries_the_license_it_declares(installed: Path) -> None:
    assert (ROOT / "LICENSE").read_text(encoding="utf-8").lstrip().startswith("Apache License")
    (info,) = installed.glob("goose_sidecar-*.dist-info")
    assert "License-Expression: Apache-2.0" in (info / "METADATA").read_text(encoding="utf-8")
    assert (info / "licenses" / "LICENSE").read_bytes() == (ROOT / "LICENSE").read_bytes()


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_demo_runs_from_the_wheel(installed: Path, tmp_path: Path) -> None:
    """The quick tour as a user of the wheel runs it (one agent, to keep it short): scenario, simulator,
    coordinator, sidecar processes and the results table, all from the installed package."""
    from sidecar.serving import free_port

    done = run_from_wheel(installed, tmp_path, "demo", "--agents", "1", "--port", str(free_port()), timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "dashboard: http://127.0.0.1:" in done.stdout + done.stderr
    assert "calls by model" in done.stdout + done.stderr
