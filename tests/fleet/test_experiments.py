"""Experiments and scenarios: every experiment is well formed; the shipped scenarios load."""

from __future__ import annotations

from pathlib import Path

import pytest

from sidecar.config import ConfigError, load_config, with_overrides
from sidecar.fleet.experiments import (
    BASELINE_FLEET,
    CONDITIONS,
    EXPERIMENTS,
    condition_settings,
    needed_conditions,
    select,
)
from sidecar.fleet.metrics import summarize
from sidecar.fleet.records import FleetRun
from sidecar.fleet.runner import FleetOptions
from sidecar.fleet.scenario import PACKAGED_SCENARIOS, REPO_SCENARIOS, load_scenario
from sidecar.fleet.stack import supports


@pytest.mark.parametrize("experiment", EXPERIMENTS, ids=lambda e: e.name)
def test_experiment_is_well_formed(experiment) -> None:  # type: ignore[no-untyped-def]
    metrics = set(summarize(FleetRun("empty")))
    for name in experiment.conditions:
        assert name in CONDITIONS
    for row in experiment.rows:
        assert row.metric in metrics, row.metric
        assert len(row.seed) <= 3
    for without, with_, metric in experiment.headlines:
        assert {without, with_} <= set(experiment.conditions) and metric in metrics
    assert experiment.offline == (not experiment.conditions)


def test_conditions_only_use_known_settings() -> None:
    options = set(FleetOptions.__dataclass_fields__)
    for condition in CONDITIONS.values():
        config, fleet = condition_settings(
            condition, {k: True for k in condition.config} | {"sidecar.speculate_tests": True}
        )
        assert set(fleet) <= options
        with_overrides(load_config(env={}), {k: v for k, v in config.items() if supports(k)})


def test_speculation_turns_on_both_levels() -> None:
    supported = {"speculation.enabled": True, "sidecar.speculate_tests": True, "sidecar.peek_port": True}
    for name in ("speculation", "all_on"):
        config, fleet = condition_settings(CONDITIONS[name], supported)
        assert config["speculation.enabled"] is True
        assert fleet["speculate_tests"] is True and fleet["peek"] is True
    config, fleet = condition_settings(CONDITIONS["baseline"], supported)
    assert config["speculation.enabled"] is False and not fleet["speculate_tests"] and not fleet["peek"]


def test_unsupported_settings_are_left_out() -> None:
    config, fleet = condition_settings(CONDITIONS["speculation"], {})
    assert config == {} and "speculate_tests" not in fleet and "peek" not in fleet
    assert fleet["model"] == BASELINE_FLEET["model"]


def test_shared_conditions_run_once() -> None:
    chosen = select(["priority", "routing", "batching"])
    names = needed_conditions(chosen, {e.name: True for e in chosen})
    assert names == ["fcfs", "pools", "baseline", "kv", "routed", "batch200", "batch1000"]
    assert needed_conditions(chosen, {"priority": True}) == ["fcfs", "pools", "baseline", "kv"]
    with pytest.raises(KeyError):
        select(["nope"])


def test_supports() -> None:
    assert supports("scheduling.policy") and supports("routing") and supports("sidecar.test_command")
    assert not supports("scheduling.nope") and not supports("nope.policy") and not supports("log.level.deeper")


SHIPPED = sorted([*PACKAGED_SCENARIOS.glob("*.toml"), *REPO_SCENARIOS.glob("*.toml")])


def test_the_packaged_scenarios_are_there() -> None:
    assert {"small", "demo", "full"} <= {p.stem for p in SHIPPED}


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_shipped_scenarios_load(path: Path) -> None:
    scenario = load_scenario(str(path))
    assert scenario.name == path.stem and scenario.description
    assert scenario.sim.get("time_scale", 1.0) >= 1.0
    select(scenario.bench.experiments)


def test_small_is_the_default_and_problems_are_reported(tmp_path: Path) -> None:
    assert load_scenario("small").fleet.agents >= 2
    bad = tmp_path / "bad.toml"
    bad.write_text('name = "bad"\n[fleet]\nagents = 0\nwheels = 3\n')
    with pytest.raises(ConfigError) as caught:
        load_scenario(str(bad))
    assert len(caught.value.problems) == 2
    with pytest.raises(ConfigError, match=r"no scenario 'nope'; available: .*small"):
        load_scenario("nope")


def test_time_constants_follow_the_simulator_clock() -> None:
    from sidecar.fleet.stack import scaled_times

    base = load_config(env={})
    scaled = scaled_times(base, {"scheduling.batch_window_ms": 200.0, "scheduling.policy": "fcfs"}, 40.0)
    assert scaled["scheduling.policy"] == "fcfs"
    assert scaled["scheduling.batch_window_ms"] == 5.0  # 200 simulated ms at 40x
    assert scaled["scheduling.aging_s"] == base.scheduling.aging_s / 40
    assert scaled["scheduling.kv_keep_s"] == base.scheduling.kv_keep_s / 40  # a short tool call, simulated
    assert scaled["scheduling.metrics_interval_s"] == 0.1  # the floor
    assert scaled_times(base, {"scheduling.batch_window_ms": 0.0}, 40.0)["scheduling.batch_window_ms"] == 0.0
    assert scaled_times(base, {"a.b": 1}, 1.0) == {"a.b": 1}
    with_overrides(base, scaled)  # every scaled key is a real setting
