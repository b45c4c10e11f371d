"""goose-sidecar.example.toml is generated from the settings models: it is current, and it loads to the defaults."""

from __future__ import annotations

import subprocess
import sys

from sidecar.config import Config, load_config
from sidecar.config_example import field_comments, render_example, toml_value
from sidecar.coordinator.settings import CoordinatorSettings

from .conftest import ROOT

EXAMPLE = ROOT / "goose-sidecar.example.toml"


def test_the_checked_in_example_is_current() -> None:
    assert EXAMPLE.read_text(encoding="utf-8") == render_example(), (
        "regenerate: python -m sidecar.config_example > goose-sidecar.example.toml"
    )


def test_the_example_loads_to_the_defaults() -> None:
    assert load_config(EXAMPLE, env={}) == Config()


def test_every_setting_is_in_the_example() -> None:
    text = render_example()
    for section, model in Config.model_fields.items():
        fields = getattr(model.annotation, "model_fields", None)
        if fields is None:
            continue
        assert f"\n[{section}]\n" in text
        for name in fields:
            assert f"\n{name} = " in text or f"\n# {name} = " in text, f"{section}.{name}"


def test_comments_come_from_the_source() -> None:
    comments = field_comments(CoordinatorSettings)
    assert comments["host"] == ["loopback unless told otherwise"]
    assert comments["retries"][0].startswith("Retries before the first byte")
    assert comments["read_timeout_s"] == []  # the comment above connect_timeout_s belongs to it alone
    assert toml_value({"a b": [1, "x"], "c": True}) == '{ "a b" = [1, "x"], c = true }'


def test_the_module_prints_the_example() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "sidecar.config_example"], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout == render_example()
