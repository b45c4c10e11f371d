"""The fleet commands' argument handling, checked without running a fleet."""

from __future__ import annotations

from pathlib import Path

import pytest

from sidecar.cli import main
from sidecar.fleet.command_fleet import output_file, write_json


def test_output_to_a_directory_writes_fleet_json_inside_it(tmp_path: Path) -> None:
    assert output_file(str(tmp_path)) == tmp_path / "fleet.json"
    assert output_file(f"{tmp_path}/new/") == tmp_path / "new" / "fleet.json"
    assert output_file(str(tmp_path / "run.json")) == tmp_path / "run.json"
    write_json(output_file(f"{tmp_path}/new/"), {"ok": True})  # was IsADirectoryError for a directory
    assert (tmp_path / "new" / "fleet.json").read_text() == '{\n "ok": true\n}\n'


def test_an_unusable_output_fails_before_the_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "fleet.json").mkdir()
    assert main(["fleet", "--output", str(tmp_path)]) == 2
    assert "is a directory" in capsys.readouterr().err
