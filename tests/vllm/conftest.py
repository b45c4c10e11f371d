"""The real-vLLM tier's fixtures: each vLLM server the selected tests need is started once per session, all at
once, before the first test (start-up is minutes on CPU, so it happens outside any test's timeout).

Without the vLLM venv or the model (scripts/test-vllm makes both) every test skips with the reason; under
`CI=true` it fails instead, because CI must run the tier.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from sidecar.config import Config, load_config
from sidecar.coordinator.app import build_app
from sidecar.coordinator.state import CoordinatorState
from sidecar.serving import serve_app
from tests.vllm.servers import SPECS, EarlyCoordinator, VllmServer, install_problem

HERE = Path(__file__).resolve().parent
EARLY = "early_coordinator"
_STATE: dict[str, Any] = {"servers": {}, "early": None, "tmp": None}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in Path(item.path).resolve().parents:
            item.add_marker(pytest.mark.vllm)


def pytest_collection_finish(session: pytest.Session) -> None:
    """Start what the selected tests need: the early coordinator first (it must predate its vLLM), then every
    needed vLLM server concurrently, and wait until all answer /health."""
    wanted = set()
    for item in session.items:
        if HERE not in Path(item.path).resolve().parents:
            continue
        names = set(getattr(item, "fixturenames", ()))
        wanted |= {name for name in SPECS if f"vllm_{name}" in names}
        if EARLY in names:
            wanted.add("fcfs2")
    if not wanted or install_problem() is not None:
        return
    tmp = Path(tempfile.mkdtemp(prefix="goose-vllm-tier-"))
    _STATE["tmp"] = tmp
    servers = {name: VllmServer(name, SPECS[name], tmp / name / "vllm.log") for name in sorted(wanted)}
    _STATE["servers"] = servers
    if any(EARLY in getattr(item, "fixturenames", ()) for item in session.items):
        early = EarlyCoordinator(servers["fcfs2"], tmp / "early")
        early.start()
        _STATE["early"] = early
    for server in servers.values():
        server.start()
    with ThreadPoolExecutor(len(servers)) as pool:
        list(pool.map(lambda s: s.wait_healthy(), servers.values()))


def pytest_sessionfinish(session: pytest.Session) -> None:
    early = _STATE.get("early")
    if early is not None:
        early.stop()
    for server in _STATE["servers"].values():
        server.stop()
    tmp = _STATE.get("tmp")
    if tmp is not None and session.testsfailed == 0:
        shutil.rmtree(tmp, ignore_errors=True)
    elif tmp is not None:
        print(f"\nvLLM tier: server logs kept in {tmp}")


def _unavailable(reason: str) -> None:
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"the real-vLLM tier must run in CI: {reason}")
    pytest.skip(reason)


def require_install() -> None:
    """Skip (fail under CI) unless the vLLM venv and the tiny model are in place."""
    problem = install_problem()
    if problem is not None:
        _unavailable(problem)


def _server(name: str) -> VllmServer:
    require_install()
    server: VllmServer | None = _STATE["servers"].get(name)
    if server is None:
        pytest.fail(f"vLLM {name} was not started (fixture requested outside tests/vllm?)")
    if server.failure:
        pytest.fail(server.failure)
    return server


@pytest.fixture(scope="session")
def vllm_prio2() -> VllmServer:
    """`--scheduling-policy priority --max-num-seqs 2`."""
    return _server("prio2")


@pytest.fixture(scope="session")
def vllm_prio4() -> VllmServer:
    """`--scheduling-policy priority --max-num-seqs 4`."""
    return _server("prio4")


@pytest.fixture(scope="session")
def vllm_fcfs2() -> VllmServer:
    """No scheduling flag (fcfs) and `--max-num-seqs 2`."""
    return _server("fcfs2")


@pytest.fixture(scope="session")
def vllm_kv24() -> VllmServer:
    """fcfs, a KV cache of 24 blocks (3,072 tokens) and `--max-model-len 2048`."""
    return _server("kv24")


@pytest.fixture(scope="session")
def early_coordinator(vllm_fcfs2: VllmServer) -> EarlyCoordinator:
    """A `goose-sidecar up --upstream <fcfs2>` started before that vLLM was launched."""
    early: EarlyCoordinator | None = _STATE.get("early")
    assert early is not None
    return early


def coordinator_config(upstream_url: str, native_priority: bool = False, **overrides: Any) -> Config:
    """The default configuration with one upstream (what `goose-sidecar up --upstream URL` runs); with
    `native_priority`, that upstream declared as running `--scheduling-policy priority` (nothing can detect it)."""
    model = {"replicas": [upstream_url], "native_priority": native_priority}
    return load_config(env={}, overrides={"models": {"default": model}, **overrides})


@asynccontextmanager
async def coordinator(
    upstream_url: str, native_priority: bool = False, **overrides: Any
) -> AsyncIterator[tuple[httpx.AsyncClient, CoordinatorState]]:
    """A coordinator in this process on a loopback port, in front of `upstream_url`."""
    app = build_app(coordinator_config(upstream_url, native_priority, **overrides))
    async with serve_app(app) as url, httpx.AsyncClient(base_url=url, timeout=300) as client:
        yield client, app.state.coordinator
