"""The dependency rule, read from the source of every module (imports inside functions included):

- `sidecar.core` imports only the standard library (and itself): pure policies, no I/O libraries;
- `coordinator`, `toolserver` and `sim` never import one another (they meet in the commands and the composition
  code: the commands and the composition root `sidecar.stack`), except the listed, known exceptions below, each
  with the reason it is still there;
- `mcp` is imported only by the MCP server (`toolserver`), the Goose-like client (`fleet`) and benchmarks;
- nothing imports `sidecar.bench` but `sidecar.bench` itself and the command-line entry points that run it;
- inside the sidecar, only its MCP surface (`mcpserver.py`) and its HTTP app (`httpapp.py`) import `mcp`;
- the Goose registration (`sidecar.goose`) imports only the standard library, itself and `core`: it writes
  what Goose reads and runs no service; no service imports it.

A new import that breaks a rule fails here with the file that does it."""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "sidecar"
SERVICES = {"coordinator", "toolserver", "sim"}
# (importer file, imported package): known exceptions, each to be removed by the change named.
KNOWN: set[tuple[str, str]] = set()
BENCH_ENTRY_POINTS = {"sidecar/cli.py", "sidecar/fleet/command_bench.py"}  # `goose-sidecar bench ...`
MCP_IMPORTERS = {"toolserver", "fleet", "bench"}
SIDECAR_MCP_MODULES = {"sidecar/toolserver/mcpserver.py", "sidecar/toolserver/httpapp.py"}


def imports() -> Iterator[tuple[str, str, str]]:
    """(file relative to the repository, its package under sidecar, imported top-level module path)."""
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        parts = path.relative_to(PACKAGE).parts
        package = parts[0] if len(parts) > 1 else parts[0].removesuffix(".py")
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), rel)):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    yield rel, package, alias.name
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                yield rel, package, node.module


IMPORTS = list(imports())


def sidecar_package(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if parts[0] == "sidecar" and len(parts) > 1 else None


def test_the_scan_sees_the_imports_it_judges() -> None:
    """The rules below are not vacuous: the scan finds the imports every layer is known to make."""
    found = {(package, sidecar_package(module)) for _, package, module in IMPORTS}
    assert {("coordinator", "core"), ("toolserver", "core"), ("bench", "sim"), ("cli", "config")} <= found
    assert ("goose", "goose") in found
    assert {("stack", "coordinator"), ("stack", "sim")} <= found  # where they meet


def test_core_imports_only_the_standard_library() -> None:
    bad = [
        (f, m)
        for f, package, m in IMPORTS
        if package == "core" and m.split(".")[0] not in sys.stdlib_module_names and not m.startswith("sidecar.core")
    ]
    assert not bad, bad


def test_the_services_do_not_import_one_another() -> None:
    bad = []
    for f, package, module in IMPORTS:
        target = sidecar_package(module)
        if package in SERVICES and target in SERVICES and target != package and (f, target) not in KNOWN:
            bad.append((f, module))
    assert not bad, bad


def test_the_known_exceptions_are_still_real() -> None:
    """An exception that no longer happens is removed from the list, so the list stays the truth."""
    seen = {(f, sidecar_package(m)) for f, _, m in IMPORTS}
    assert seen >= KNOWN, KNOWN - seen


@pytest.mark.parametrize("rule", ["mcp", "bench"])
def test_who_imports_mcp_and_the_benchmarks(rule: str) -> None:
    if rule == "mcp":
        bad = [(f, m) for f, package, m in IMPORTS if m.split(".")[0] == "mcp" and package not in MCP_IMPORTERS]
    else:
        bad = [
            (f, m)
            for f, package, m in IMPORTS
            if sidecar_package(m) == "bench" and package != "bench" and f not in BENCH_ENTRY_POINTS
        ]
    assert not bad, bad


def test_only_the_mcp_surface_and_the_http_app_of_the_sidecar_import_mcp() -> None:
    bad = [(f, m) for f, package, m in IMPORTS if package == "toolserver" and m.split(".")[0] == "mcp"]
    assert {f for f, _ in bad} == SIDECAR_MCP_MODULES, bad


def test_the_goose_registration_is_a_leaf() -> None:
    """`sidecar.goose` needs nothing but the standard library and `core`; nothing but the command line needs it."""
    own = [
        (f, m)
        for f, package, m in IMPORTS
        if package == "goose"
        and m.split(".")[0] not in sys.stdlib_module_names
        and sidecar_package(m) not in {"goose", "core"}
    ]
    users = [(f, m) for f, package, m in IMPORTS if sidecar_package(m) == "goose" and package != "goose"]
    assert not own, own
    assert not users, users
