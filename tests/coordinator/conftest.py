from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from sidecar.config import Config, load_config
from sidecar.coordinator.app import build_app
from sidecar.coordinator.state import CoordinatorState
from sidecar.serving import serve_app
from tests.coordinator.scripted_upstream import Upstream


@dataclass
class Stack:
    upstream: Upstream
    upstream_url: str
    url: str
    state: CoordinatorState
    client: httpx.AsyncClient


def make_config(upstream_url: str, scheduling: dict[str, Any] | None = None, **coordinator: Any) -> Config:
    """One upstream; the proxy-fidelity tests send bodies unchanged (no native priority added)."""
    overrides: dict[str, Any] = {"models": {"default": {"replicas": [upstream_url]}}}
    overrides.update({f"coordinator.{k}": v for k, v in coordinator.items()})
    overrides.update({f"scheduling.{k}": v for k, v in {"native_priority": "off", **(scheduling or {})}.items()})
    return load_config(env={}, overrides=overrides)


@asynccontextmanager
async def stack(scheduling: dict[str, Any] | None = None, **coordinator: Any) -> AsyncIterator[Stack]:
    upstream = Upstream()
    async with serve_app(upstream.app()) as upstream_url:
        app = build_app(make_config(upstream_url, scheduling, **coordinator))
        async with serve_app(app) as url, httpx.AsyncClient(base_url=url, timeout=10) as client:
            yield Stack(upstream, upstream_url, url, app.state.coordinator, client)


@pytest.fixture
def make_stack() -> Callable[..., AbstractAsyncContextManager[Stack]]:
    return stack


@pytest.fixture
async def s() -> AsyncIterator[Stack]:
    async with stack() as value:
        yield value
