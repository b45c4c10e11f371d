"""The composition root: the embedded simulators and the coordinator in front of them, in this event loop.

The one place the coordinator and the simulator meet (they never import each other): `goose-sidecar up` with
no upstream configured, the demo and fleet runs (`sidecar.fleet.stack`), the benchmarks and the tests all build
their stack here.

- `simulators(settings)`: the `large` (32B) and `small` (7B) simulated vLLM servers on loopback ports;
- `in_front_of(config, models)`: the coordinator's configuration with its upstreams replaced by them;
- `serve_coordinator(config)`: the coordinator served in this loop; yields its URL and app;
- `embedded_stack(config, sim)`: all three, as one block.

Every server is a real uvicorn server on a real socket (`sidecar.serving`), so every call crosses real HTTP
exactly as it would between processes.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from starlette.applications import Starlette

from sidecar.config import Config, with_overrides
from sidecar.coordinator.app import build_app
from sidecar.coordinator.command import KEEP_ALIVE_S, http_protocol
from sidecar.serving import serve_app
from sidecar.sim.app import build_sim_app
from sidecar.sim.settings import SimSettings

# Alias -> profile: the large model for complex work, the small one for simple work (the design's "Routing").
EMBEDDED_PROFILES = {"large": "qwen2.5-coder-32b-a100", "small": "qwen2.5-coder-7b-a100"}


@dataclass(frozen=True, slots=True)
class SimModel:
    """One embedded simulator: its routing alias, the model name it serves, its base URL (no `/v1`) and its
    engine's clock (simulated seconds)."""

    alias: str
    served_name: str
    url: str
    clock: Callable[[], float]


@dataclass(frozen=True, slots=True)
class EmbeddedStack:
    """A running coordinator (`url`, `app`, the `config` it was built from) in front of `models`."""

    url: str
    app: Starlette
    config: Config
    models: list[SimModel]


@contextlib.asynccontextmanager
async def simulators(settings: SimSettings) -> AsyncIterator[list[SimModel]]:
    """Serve the `large` and `small` simulators on OS-chosen loopback ports until the block exits.

    `settings` applies to both (policy, seed, time scale, faults, `profile_overrides` by profile name);
    `settings.host`/`port`/`profile`/`served_model_names` are for a standalone simulator and are ignored here.
    """
    async with contextlib.AsyncExitStack() as stack:
        models = []
        for alias, profile in EMBEDDED_PROFILES.items():
            app = build_sim_app(settings, profile)
            url = await stack.enter_async_context(serve_app(app))
            sim = app.state.sim
            models.append(SimModel(alias, sim.served.names[0], url, sim.driver.now))
        yield models


def in_front_of(config: Config, models: Sequence[SimModel], *, native_priority: bool | None = None) -> Config:
    """`config` with its upstreams replaced by `models`, validated (ConfigError on a problem).

    `native_priority`, when given, is declared for every model (True exactly when the simulators run vLLM's
    priority policy: nothing can detect it); None leaves it to `[scheduling] native_priority`.
    """
    table: dict[str, dict[str, Any]] = {}
    for m in models:
        table[m.alias] = {"served_name": m.served_name, "replicas": [m.url]}
        if native_priority is not None:
            table[m.alias]["native_priority"] = native_priority
    return with_overrides(config, {"models": table})


@contextlib.asynccontextmanager
async def serve_coordinator(
    config: Config, host: str = "127.0.0.1", port: int = 0, **uvicorn_options: Any
) -> AsyncIterator[tuple[str, Starlette]]:
    """The coordinator for `config`, served in this loop until the block exits: (its base URL, its app). It is
    served with `up`'s HTTP protocol (httptools with its head bound) and keep-alive, so what runs in-process is
    what production serves; `uvicorn_options` override them."""
    app = build_app(config)
    served_as_up = {**http_protocol(config.coordinator.max_header_bytes), "timeout_keep_alive": KEEP_ALIVE_S}
    async with serve_app(app, host, port, **{**served_as_up, **uvicorn_options}) as url:
        yield url, app


@contextlib.asynccontextmanager
async def embedded_stack(
    config: Config,
    sim: SimSettings | None = None,
    *,
    native_priority: bool | None = None,
    host: str = "127.0.0.1",
    port: int = 0,
    **uvicorn_options: Any,
) -> AsyncIterator[EmbeddedStack]:
    """The simulators for `sim` (default `config.sim`) and a coordinator for `config` in front of them."""
    async with simulators(sim or config.sim) as models:
        resolved = in_front_of(config, models, native_priority=native_priority)
        async with serve_coordinator(resolved, host, port, **uvicorn_options) as (url, app):
            yield EmbeddedStack(url, app, resolved, models)
