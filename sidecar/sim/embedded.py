"""The simulator inside another process's event loop: two models on loopback ports, for `goose-sidecar up`."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

from sidecar.serving import serve_app
from sidecar.sim.app import build_sim_app
from sidecar.sim.settings import SimSettings

# Alias -> profile: the large model for complex work, the small one for simple work (DESIGN.md "Routing").
EMBEDDED_PROFILES = {"large": "qwen2.5-coder-32b-a100", "small": "qwen2.5-coder-7b-a100"}


@dataclass(frozen=True, slots=True)
class EmbeddedModel:
    """One embedded sim: its routing alias, the model name it serves, and its base URL (no `/v1`)."""

    alias: str
    served_name: str
    url: str


@contextlib.asynccontextmanager
async def run_embedded(settings: SimSettings) -> AsyncIterator[list[EmbeddedModel]]:
    """Serve the `large` (32B) and `small` (7B) sims on OS-chosen loopback ports until the block exits.

    `settings` applies to both (policy, seed, time scale, faults, `profile_overrides` by profile name);
    `settings.host`/`port`/`profile`/`served_model_names` are for a standalone sim and are ignored here.
    """
    async with contextlib.AsyncExitStack() as stack:
        models = []
        for alias, profile in EMBEDDED_PROFILES.items():
            app = build_sim_app(settings, profile)
            url = await stack.enter_async_context(serve_app(app, host="127.0.0.1", port=0))
            models.append(EmbeddedModel(alias, app.state.sim.served.names[0], url))
        yield models
