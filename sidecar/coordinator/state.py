"""What one coordinator app holds, built by `app.build_app` and handed to its routes (no globals)."""

from __future__ import annotations

from dataclasses import dataclass, field

import httpx

from sidecar.config import Config
from sidecar.coordinator.agents import AgentBook
from sidecar.coordinator.dashboard import Board, Page
from sidecar.coordinator.dispatcher import Dispatcher
from sidecar.coordinator.planner import Planner
from sidecar.coordinator.speculation import Speculator
from sidecar.coordinator.telemetry import Telemetry
from sidecar.coordinator.upstream import UpstreamPool
from sidecar.coordinator.upstream_client import UpstreamClient


@dataclass
class CoordinatorState:
    """`client`: the shared httpx client (the sidecars' `/peek` and `/early`, and every replica without its own);
    `upstreams`: the one way to the models; `book`: every per-agent and per-session record."""

    config: Config
    client: httpx.AsyncClient
    upstreams: UpstreamClient
    pool: UpstreamPool
    telemetry: Telemetry
    dispatchers: dict[str, Dispatcher]
    planner: Planner
    board: Board
    page: Page
    book: AgentBook
    keys: dict[str, str] = field(default_factory=dict)
    speculator: Speculator | None = None
