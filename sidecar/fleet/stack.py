"""The serving stack a fleet runs against: simulator (or a real upstream), coordinator, and the event tap.

Three ways, first that applies:
- `coordinator_url`: an already running coordinator (`goose-sidecar up`); nothing is started but the tap;
- `upstream`: an OpenAI-compatible server (vLLM) serving every model; the coordinator runs in-process;
- neither: the simulator's `large` (32B) and `small` (7B) models in-process, then the coordinator in-process
  in front of them (both built by the composition root, `sidecar.stack`).
In-process servers are real uvicorn servers on loopback ports (`sidecar.serving`), so every call crosses real
HTTP exactly as it would between processes.

With the embedded simulator at time scale T (simulated seconds per real second), the coordinator's own time
constants are divided by T (`scaled_times`): a 200 ms batching window, a 15 s aging bound or a 1 s metrics
interval then last 200 ms, 15 s and 1 s on the simulator's clock, as they would in front of a real GPU.
Without this, a 1000 ms window at T = 30 would hold calls for 30 simulated seconds. Metrics scrapes keep a
floor of 0.1 real seconds (faster scraping would cost the 2-core bench machine more than it tells).

Experiment toggles are coordinator configuration keys (`scheduling.policy`, `routing.enabled`,
`scheduling.batch_window_ms`, ...), applied with `with_overrides`; `supports(key)` says whether this build of
the coordinator has a key, so an experiment can be reported as unavailable instead of failing.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx
from pydantic import BaseModel

from sidecar.config import Config, with_overrides
from sidecar.fleet.events import EventTap
from sidecar.serving import serve_app
from sidecar.sim.settings import SimSettings


@dataclass
class Stack:
    coordinator_url: str
    tap: EventTap
    tap_url: str
    models: dict[str, str] = field(default_factory=dict)  # alias -> served name (empty when unknown)
    upstream_urls: dict[str, str] = field(default_factory=dict)  # alias -> base URL, for /metrics
    time_scale: float = 1.0
    config: Config | None = None
    clocks: dict[str, Callable[[], float]] = field(default_factory=dict)  # served name -> simulator clock


# Coordinator settings that are durations in the world being simulated (divided by the time scale), and rates
# per minute of it (multiplied). Real-world timeouts (connect, read) stay as they are.
SCALED_DURATIONS = (
    "scheduling.aging_s",
    "scheduling.kv_keep_s",  # unscaled, 4 s at 40x is 160 s of tool time: every agent kept its place all task long
    "scheduling.kv_active_window_s",
    "scheduling.metrics_interval_s",
    "scheduling.service_half_life_s",
    "scheduling.stage_ttl_s",
    "scheduling.batch_window_ms",
    "speculation.max_age_s",
)
SCALED_RATES = ("speculation.wasted_tokens_per_minute",)
FLOORS = {"scheduling.metrics_interval_s": 0.1}


def scaled_times(base: Config, overrides: Mapping[str, Any], time_scale: float) -> dict[str, Any]:
    """`overrides` plus every time constant this build has, expressed on a clock `time_scale` times faster."""
    scaled = dict(overrides)
    if time_scale == 1.0:
        return scaled
    for key in (*SCALED_DURATIONS, *SCALED_RATES):
        if not supports(key):
            continue
        value = overrides.get(key, _get(base, key))
        if not isinstance(value, int | float) or isinstance(value, bool):
            continue
        if key in SCALED_RATES:
            scaled[key] = round(value * time_scale)
        else:
            scaled[key] = max(value / time_scale, FLOORS.get(key, 0.0)) if value else value
    return scaled


def _get(config: Config, key: str) -> Any:
    node: Any = config
    for part in key.split("."):
        node = getattr(node, part, None)
    return node


def supports(key: str, model: type[BaseModel] = Config) -> bool:
    """Whether the dotted configuration `key` exists in this build (e.g. `scheduling.batch_window_ms`)."""
    head, _, rest = key.partition(".")
    field_info = model.model_fields.get(head)
    if field_info is None:
        return False
    if not rest:
        return True
    annotation = field_info.annotation
    return isinstance(annotation, type) and issubclass(annotation, BaseModel) and supports(rest, annotation)


@contextlib.asynccontextmanager
async def start_stack(
    base: Config,
    *,
    coordinator_url: str | None = None,
    upstream: str | None = None,
    sim: SimSettings | None = None,
    overrides: Mapping[str, Any] | None = None,
    listen: tuple[str, int] | None = None,
) -> AsyncIterator[Stack]:
    """Start what is needed (see the module docstring); everything stops when the block exits.

    `listen` is where an in-process coordinator binds (default: a free loopback port).
    """
    async with contextlib.AsyncExitStack() as stack:
        client = await stack.enter_async_context(httpx.AsyncClient(timeout=10.0, trust_env=False))
        models: dict[str, str] = {}
        urls: dict[str, str] = {}
        clocks: dict[str, Callable[[], float]] = {}
        config: Config | None = None
        time_scale = 1.0
        if coordinator_url is None:
            from sidecar.stack import in_front_of, serve_coordinator, simulators

            if upstream is not None:
                config = with_overrides(base, {**(overrides or {}), "models": {"default": {"replicas": [upstream]}}})
                urls["default"] = upstream.rstrip("/")
            else:
                sim = sim or base.sim
                time_scale = sim.time_scale
                sims = await stack.enter_async_context(simulators(sim))
                models = {m.alias: m.served_name for m in sims}
                urls = {m.alias: m.url for m in sims}
                clocks = {m.served_name: m.clock for m in sims}
                native = sim.scheduling_policy == "priority"  # configuration, as `up` says it for its sims
                config = in_front_of(
                    with_overrides(base, scaled_times(base, overrides or {}, time_scale)), sims, native_priority=native
                )
            host, port = listen or ("127.0.0.1", 0)
            served, _ = await stack.enter_async_context(serve_coordinator(config, host, port))
            coordinator_url = served
        tap = EventTap(coordinator_url, client)
        tap_url = await stack.enter_async_context(serve_app(tap.app()))
        yield Stack(coordinator_url, tap, tap_url, models, urls, time_scale, config, clocks)
