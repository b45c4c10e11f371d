"""Every default is defined once: the settings, the pure policies and the benchmarks agree because they share it.

Each policy (`sidecar.core`) defines its own defaults; the settings models take them from there, and the
benchmarks start from the settings. A hand-copied default that drifts fails here.
"""

from __future__ import annotations

import inspect

from sidecar.bench.fleetsim.scenario import CoordinatorSection
from sidecar.bench.scheduling import Knobs
from sidecar.config import load_config
from sidecar.coordinator.app import make_dispatcher
from sidecar.coordinator.dispatcher import Dispatcher
from sidecar.coordinator.settings import SchedulingSettings
from sidecar.core.admission import AdmissionLimits
from sidecar.core.ordering import AttainedService, Pools, PriorityOrder, make_policy
from sidecar.core.toolcache import RACY_WINDOW_NS
from sidecar.core.working_set import KVAwareOrder
from sidecar.toolserver.settings import SidecarSettings

SETTINGS = SchedulingSettings()


def test_the_scheduling_settings_are_the_policies_own_defaults() -> None:
    kv = KVAwareOrder(capacity_tokens=SETTINGS.kv_capacity_tokens)
    assert SETTINGS.aging_s == PriorityOrder().aging_s == kv.aging_s
    assert make_policy("priority") == PriorityOrder(aging_s=SETTINGS.aging_s)
    assert make_policy("pools") == Pools(hot=SETTINGS.hot_pool, cold=SETTINGS.cold_pool) == Pools()
    assert SETTINGS.kv_keep_s == kv.keep_s
    assert SETTINGS.max_window == AdmissionLimits().max_window
    half_life = inspect.signature(Dispatcher).parameters["half_life_s"].default
    assert SETTINGS.service_half_life_s == AttainedService().half_life_s == half_life


def test_the_coordinators_dispatcher_starts_from_the_admission_defaults() -> None:
    config = load_config(env={}, overrides={"models": {"large": {"replicas": ["http://127.0.0.1:1"]}}})
    limits = make_dispatcher("large", config).limits
    assert (limits.initial_window, limits.max_window) == (AdmissionLimits().initial_window, SETTINGS.max_window)
    small = load_config(env={}, overrides={"models": config.model_dump()["models"], "scheduling.max_window": 2})
    assert make_dispatcher("large", small).limits.initial_window == 2  # never above the configured maximum


def test_the_benchmarks_start_from_the_coordinators_defaults() -> None:
    knobs = Knobs()
    assert (knobs.aging_s, knobs.metrics_interval_s, knobs.service_half_life_s) == (
        SETTINGS.aging_s,
        SETTINGS.metrics_interval_s,
        SETTINGS.service_half_life_s,
    )
    section = CoordinatorSection()
    for name in ("aging_s", "kv_keep_s", "metrics_interval_s", "max_window", "hot_pool", "cold_pool"):
        assert getattr(section, name) == getattr(SETTINGS, name), name


def test_the_sidecars_racy_window_is_the_caches_own() -> None:
    assert SidecarSettings.model_fields["racy_window_ms"].default * 1_000_000 == RACY_WINDOW_NS
