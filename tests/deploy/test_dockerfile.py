"""The Dockerfile and its build context, checked without a Docker daemon: hadolint, structure, .dockerignore."""

from __future__ import annotations

import json
import re
import subprocess
import tomllib
from pathlib import Path

import pytest

from tests.conftest import require_tool

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined and comments dropped."""
    lines: list[tuple[str, str]] = []
    pending = ""
    for raw in text.splitlines():
        if raw.lstrip().startswith("#") and not pending:
            continue
        line = raw.rstrip()
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = (pending + line).strip()
        pending = ""
        if line:
            word, _, rest = line.partition(" ")
            lines.append((word.upper(), rest.strip()))
    return lines


def stages() -> list[list[tuple[str, str]]]:
    found: list[list[tuple[str, str]]] = []
    for name, args in instructions(DOCKERFILE.read_text(encoding="utf-8")):
        if name == "FROM":
            found.append([])
        if found:
            found[-1].append((name, args))
    return found


def test_hadolint_passes() -> None:
    hadolint = require_tool("hadolint", ROOT / ".venv" / "bin" / "hadolint")
    done = subprocess.run([hadolint, str(DOCKERFILE)], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


def test_multi_stage_with_a_slim_python_base() -> None:
    all_stages = stages()
    assert len(all_stages) >= 2
    first = instructions(DOCKERFILE.read_text(encoding="utf-8"))[0]
    assert first[0] == "ARG" and re.fullmatch(r"PYTHON_IMAGE=python:3\.1[1-9]-slim(-\w+)?", first[1])
    assert all_stages[-1][0] == ("FROM", "${PYTHON_IMAGE}")


def test_final_stage_runs_goose_sidecar_as_a_non_root_user_with_a_healthcheck() -> None:
    final = dict(stages()[-1])
    assert json.loads(final["ENTRYPOINT"]) == ["goose-sidecar"]
    assert json.loads(final["CMD"])[:3] == ["up", "--host", "0.0.0.0"]
    user = final["USER"].split(":")[0]
    assert user.isdigit() and int(user) != 0
    health = final["HEALTHCHECK"]
    assert "CMD" in health and "sidecar.deploy.healthcheck" in health
    assert "--from=build /opt/venv /opt/venv" in final["COPY"]
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["scripts"]
    assert "goose-sidecar" in scripts


def test_no_build_tools_in_the_final_stage_and_only_git_from_apt() -> None:
    final = stages()[-1]
    final_text = " ".join(args for _, args in final)
    for tool in ("apk ", "gcc", "build-essential", "pip install", "curl", "wget"):
        assert tool not in final_text
    (install,) = [args for name, args in final if name == "RUN" and "apt-get" in args]
    command = install.split("apt-get install", 1)[1].split("&&")[0]
    assert {word for word in command.split() if not word.startswith("-")} == {"git"}
    assert "--no-install-recommends" in command and "rm -rf /var/lib/apt/lists/*" in install


def test_the_image_has_git_and_ripgrep_for_the_sidecars_tools() -> None:
    """git_status/git_diff run `git`; search runs `rg` when it is on PATH (else a slower Python fallback)."""
    build, final = stages()[0], stages()[-1]
    build_args = dict(args.split("=", 1) for name, args in build if name == "ARG" and "=" in args)
    assert re.fullmatch(r'"ripgrep==\d+\.\d+\.\d+"', build_args["RIPGREP"])
    (pip,) = [args for name, args in build if name == "RUN" and "pip install" in args]
    assert "${RIPGREP}" in pip and "--only-binary ripgrep" in pip  # a wheel with the binary, never a Rust build
    path = next(args for name, args in final if name == "ENV" and args.startswith("PATH="))
    assert path.startswith("PATH=/opt/venv/bin:")  # where the wheel puts rg
    assert any(name == "RUN" and "install -y --no-install-recommends git" in args for name, args in final)


def docker_ignored(path: str, patterns: list[str]) -> bool:
    """Docker's .dockerignore rule: the last pattern matching the path or one of its parents decides."""
    parts = path.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    ignored = False
    for raw in patterns:
        negate = raw.startswith("!")
        pattern = raw[1:] if negate else raw
        pattern = pattern.strip().rstrip("/")
        regex = re.escape(pattern).replace(r"\*\*", "\0").replace(r"\*", "[^/]*").replace(r"\?", "[^/]")
        regex = regex.replace("\0/", "(.*/)?").replace("\0", ".*")
        if any(re.fullmatch(regex, c) for c in candidates):
            ignored = not negate
    return ignored


def dockerignore_patterns() -> list[str]:
    text = (ROOT / ".dockerignore").read_text(encoding="utf-8")
    return [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


@pytest.mark.parametrize(
    "path",
    [
        "pyproject.toml",
        "README.md",
        "LICENSE",
        "sidecar/__init__.py",
        "sidecar/deploy/healthcheck.py",
        "sidecar/cli.py",
    ],
)
def test_the_context_keeps_what_the_build_copies(path: str) -> None:
    assert not docker_ignored(path, dockerignore_patterns())


@pytest.mark.parametrize(
    "path",
    [
        ".env",
        "goose-sidecar.toml",
        ".venv/bin/python",
        ".git/config",
        "workspaces/agent-1/secret.py",
        "tests/deploy/test_dockerfile.py",
        "sidecar/__pycache__/cli.cpython-311.pyc",
        "results/run.json",
    ],
)
def test_the_context_leaves_out_secrets_venvs_and_workspaces(path: str) -> None:
    assert docker_ignored(path, dockerignore_patterns())


def test_every_copy_source_exists_and_is_in_the_context() -> None:
    for name, args in instructions(DOCKERFILE.read_text(encoding="utf-8")):
        if name == "COPY" and not args.startswith("--from"):
            *sources, _ = args.split()
            for source in sources:
                assert (ROOT / source).exists(), source
                assert not docker_ignored(source.rstrip("/"), dockerignore_patterns()), source
