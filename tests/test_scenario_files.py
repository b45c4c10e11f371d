"""Finding and loading a named scenario file: folders in order, a `.toml` path, every problem as a ConfigError."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import BaseModel, ConfigDict, Field

from sidecar.bench.fleetsim import scenario as fleetsim
from sidecar.config import ConfigError
from sidecar.fleet import scenario as fleet
from sidecar.scenario_files import available_scenarios, load_scenario_file, scenario_path


class Small(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    source: str
    agents: int = Field(1, ge=1)


@pytest.fixture
def folders(tmp_path: Path) -> list[Path]:
    first, second = tmp_path / "first", tmp_path / "second"
    for folder in (first, second):
        folder.mkdir()
    (first / "a.toml").write_text("agents = 2\n")
    (second / "a.toml").write_text("agents = 3\n")
    (second / "b.toml").write_text("agents = 4\n")
    return [first, second]


def test_the_first_folder_with_the_name_wins(folders: list[Path]) -> None:
    assert scenario_path("a", folders) == folders[0] / "a.toml"
    a, b = load_scenario_file("a", folders, Small), load_scenario_file("b", folders, Small)
    assert (a.agents, a.name, a.source) == (2, "a", str(folders[0] / "a.toml"))
    assert (b.agents, b.name) == (4, "b")
    assert available_scenarios([*folders, folders[0] / "absent"]) == ["a", "b"]


def test_a_toml_path_is_read_as_it_is(folders: list[Path], tmp_path: Path) -> None:
    (tmp_path / "own.toml").write_text('name = "mine"\nagents = 5\n')
    loaded = load_scenario_file(str(tmp_path / "own.toml"), folders, Small)
    assert (loaded.name, loaded.agents) == ("mine", 5)


def test_problems_are_config_errors_naming_what_and_where(folders: list[Path]) -> None:
    with pytest.raises(ConfigError, match=r"no workload 'c'; available: a, b \(or a .toml path\)"):
        load_scenario_file("c", folders, Small, "workload")
    (folders[0] / "broken.toml").write_text("agents = [\n")
    with pytest.raises(ConfigError, match=r"scenario 'broken': "):
        load_scenario_file("broken", folders, Small)
    (folders[0] / "bad.toml").write_text("agents = 0\nwheels = 3\n")
    with pytest.raises(ConfigError) as caught:
        load_scenario_file("bad", folders, Small)
    assert len(caught.value.problems) == 2 and all(str(folders[0] / "bad.toml") in p for p in caught.value.problems)


def test_both_kinds_of_scenario_load_through_it() -> None:
    assert fleet.load_scenario("small").source.endswith("small.toml")
    assert fleetsim.load_scenario("tiny").source.endswith("tiny.toml")
    with pytest.raises(ConfigError, match=r"no fleet-sim scenario 'nope'; available: .*tiny"):
        fleetsim.load_scenario("nope")
