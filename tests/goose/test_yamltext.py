"""YAML emission and text-level merging for Goose's config files (sidecar/goose/yamltext.py)."""

from __future__ import annotations

import pytest

from sidecar.goose.yamltext import MergeError, dump, scalar, set_map_entry, set_top_level


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (None, "null"),
        (True, "true"),
        (False, "false"),
        (600, "600"),
        (0.5, "0.5"),
        ("sidecar", "sidecar"),
        ("/usr/bin/goose-sidecar", "/usr/bin/goose-sidecar"),
        ("goose-sidecar", "goose-sidecar"),
        ("v1/chat/completions", "v1/chat/completions"),
        ("true", '"true"'),
        ("No", '"No"'),
        ("on", '"on"'),
        ("123", '"123"'),
        ("1e3", '"1e3"'),
        (".inf", '".inf"'),
        ("", '""'),
        ("--workspace", '"--workspace"'),
        ("http://127.0.0.1:8000", '"http://127.0.0.1:8000"'),
        ("a: b", '"a: b"'),
        ("x #y", '"x #y"'),
        ("X-Agent-Id=agent-7", '"X-Agent-Id=agent-7"'),
        ("it's", '"it\'s"'),
        ('say "hi"', '"say \\"hi\\""'),
        ("tab\there", '"tab\\there"'),
        ("ünï", '"ünï"'),
        ("*.py", '"*.py"'),
        ("&anchor", '"&anchor"'),
    ],
)
def test_scalar(value: object, text: str) -> None:
    assert scalar(value) == text


def test_dump_nested() -> None:
    doc = {
        "extensions": {
            "sidecar": {"enabled": True, "type": "stdio", "args": ["mcp", "--workspace", "/w"], "envs": {}},
            "developer": {"available_tools": ["write", "edit"], "env_keys": []},
        },
        "list_of_maps": [{"key": "task", "requirement": "required"}, "plain"],
    }
    assert dump(doc) == (
        "extensions:\n"
        "  sidecar:\n"
        "    enabled: true\n"
        "    type: stdio\n"
        "    args:\n"
        "      - mcp\n"
        '      - "--workspace"\n'
        "      - /w\n"
        "    envs: {}\n"
        "  developer:\n"
        "    available_tools:\n"
        "      - write\n"
        "      - edit\n"
        "    env_keys: []\n"
        "list_of_maps:\n"
        "  - key: task\n"
        "    requirement: required\n"
        "  - plain\n"
    )


@pytest.mark.parametrize(
    ("text", "rendered"),
    [
        ("line one\nline two", "k: |-\n  line one\n  line two\n"),
        ("line one\nline two\n", "k: |\n  line one\n  line two\n"),
        ("a\n\nb", "k: |-\n  a\n\n  b\n"),
        (" leading\nspace", 'k: " leading\\nspace"\n'),
        ("trailing \nspace", 'k: "trailing \\nspace"\n'),
        ("two\n\n", 'k: "two\\n\\n"\n'),
    ],
)
def test_multiline_strings(text: str, rendered: str) -> None:
    assert dump({"k": text}) == rendered


USER_CONFIG = """\
# my goose config
GOOSE_PROVIDER: anthropic
GOOSE_MODEL: claude
extensions:
  computercontroller:
    enabled: false
    name: computercontroller
    type: builtin
  # my own server
  mine:
    enabled: true
    type: stdio
    name: mine
    cmd: mine
    args:
    - --flag
  sidecar:
    enabled: true
    type: stdio
    name: sidecar
    cmd: old
    args: []
OTHER_KEY: keep me
list_key:
- a
- b
"""


def test_set_top_level_replaces_only_that_key() -> None:
    out = set_top_level(USER_CONFIG, "GOOSE_PROVIDER", "openai")
    assert out == USER_CONFIG.replace("GOOSE_PROVIDER: anthropic", "GOOSE_PROVIDER: openai")
    out = set_top_level(out, "list_key", ["c"])
    assert out.endswith("OTHER_KEY: keep me\nlist_key:\n  - c\n")
    out = set_top_level(out, "NEW_KEY", 5)
    assert out.endswith("list_key:\n  - c\nNEW_KEY: 5\n")
    assert out.startswith("# my goose config\n")


def test_set_map_entry_replaces_one_extension_and_keeps_the_rest() -> None:
    out = set_map_entry(USER_CONFIG, "extensions", "sidecar", {"enabled": True, "type": "stdio", "cmd": "new"})
    assert "    cmd: new\n" in out and "cmd: old" not in out
    before_sidecar = USER_CONFIG.split("  sidecar:")[0]
    assert out.startswith(before_sidecar)  # comments and other extensions byte for byte
    assert out.endswith("OTHER_KEY: keep me\nlist_key:\n- a\n- b\n")


def test_set_map_entry_appends_a_new_extension() -> None:
    out = set_map_entry(USER_CONFIG, "extensions", "developer", {"enabled": True, "type": "platform"})
    assert "    args: []\n  developer:\n    enabled: true\n    type: platform\nOTHER_KEY" in out


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", "extensions:\n  sidecar:\n    enabled: true\n"),
        ("A: 1\n", "A: 1\nextensions:\n  sidecar:\n    enabled: true\n"),
        ("extensions: {}\nB: 2\n", "extensions:\n  sidecar:\n    enabled: true\nB: 2\n"),
        ("extensions:\nB: 2\n", "extensions:\n  sidecar:\n    enabled: true\nB: 2\n"),
        ("extensions: null\n", "extensions:\n  sidecar:\n    enabled: true\n"),
        (
            "extensions:\n    other:\n        x: 1\n",
            "extensions:\n    other:\n        x: 1\n    sidecar:\n      enabled: true\n",
        ),
        ('"extensions":\n  "sidecar":\n    enabled: false\n', '"extensions":\n  sidecar:\n    enabled: true\n'),
        ("extensions: # mine\n  a: {x: 1}\n", "extensions: # mine\n  a: {x: 1}\n  sidecar:\n    enabled: true\n"),
    ],
)
def test_set_map_entry_shapes(text: str, expected: str) -> None:
    assert set_map_entry(text, "extensions", "sidecar", {"enabled": True}) == expected


def test_flow_sections_are_not_clobbered() -> None:
    with pytest.raises(MergeError, match="flow style"):
        set_map_entry("extensions: {mine: {enabled: true}}\n", "extensions", "sidecar", {"enabled": True})


def test_merging_is_idempotent() -> None:
    entry = {"enabled": True, "type": "stdio", "name": "sidecar", "cmd": "x", "args": ["mcp"]}
    once = set_map_entry(USER_CONFIG, "extensions", "sidecar", entry)
    assert set_map_entry(once, "extensions", "sidecar", entry) == once
    top = set_top_level(once, "GOOSE_MODEL", "qwen")
    assert set_top_level(top, "GOOSE_MODEL", "qwen") == top
