"""Goose registration: Goose's own parser accepts the provider, config.yaml has every field Goose requires,
merging keeps the user's entries, the generated stdio entry really starts a working sidecar."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import goose
import pytest
from mcp import Client
from mcp.client.stdio import StdioServerParameters
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from sidecar.cli import main
from sidecar.goose import registration as gc
from sidecar.goose.command import example_files
from sidecar.goose.yamltext import dump
from sidecar.serving import serve_app

from ..conftest import NPM_TOOLS, ROOT, require_tool
from ..toolserver.conftest import SAMPLE, write_tree

SETUP = gc.AgentSetup(agent_id="agent-7", workspace="/w", coordinator="http://127.0.0.1:9/")
YAML_JS = NPM_TOOLS / "node_modules" / "yaml"

# Required fields per extension type (Goose's ExtensionConfig, serde; `enabled` from ExtensionEntry).
REQUIRED = {
    "stdio": {"name": str, "cmd": str, "args": list},
    "streamable_http": {"name": str, "uri": str},
    "platform": {"name": str},
    "builtin": {"name": str},
}
OPTIONAL = {
    "description": str,
    "envs": dict,
    "env_keys": list,
    "timeout": int,
    "available_tools": list,
    "headers": dict,
    "bundled": bool,
    "display_name": str,
}


def parse_yaml(text: str) -> Any:
    """A real YAML parser (the `yaml` npm package, installed with the MCP Inspector): PyYAML is not a dependency."""
    node = require_tool("node (22, from scripts/_npm_tools.sh)", NPM_TOOLS / "node_modules/.bin/node")
    require_tool("yaml (npm, from scripts/_npm_tools.sh)", YAML_JS)
    script = (
        "const Y=require(process.argv[1]);let s='';process.stdin.on('data',d=>s+=d)"
        ".on('end',()=>process.stdout.write(JSON.stringify(Y.parse(s,{strict:true,uniqueKeys:true}))))"
    )
    done = subprocess.run([node, "-e", script, str(YAML_JS)], input=text, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def check_extension(entry: dict[str, Any], *, in_recipe: bool = False) -> None:
    if not in_recipe:
        assert entry["enabled"] is True
    kind = entry["type"]
    for key, typ in REQUIRED[kind].items():
        assert isinstance(entry[key], typ), (kind, key)
    for key, value in entry.items():
        if key in OPTIONAL:
            assert isinstance(value, OPTIONAL[key]), key
        else:
            assert key in REQUIRED[kind] or key in ("type", "enabled"), f"unknown field {key}"
    if kind in ("stdio", "streamable_http"):
        assert entry["timeout"] > 600  # longer than a test run (Goose's default is 300 s)
        assert all(isinstance(a, str) for a in entry.get("args", []))


def test_custom_provider_parses_with_gooses_own_parser() -> None:
    provider = goose.declarative_provider_from_json(json.dumps(gc.custom_provider(SETUP)))
    assert provider.name() == gc.PROVIDER_ID


async def test_custom_provider_sends_the_agent_id_to_the_coordinator() -> None:
    seen: list[tuple[str, dict[str, str], dict[str, Any]]] = []

    async def completions(request: Request) -> Response:
        seen.append((request.url.path, dict(request.headers), await request.json()))
        chunk = {
            "id": "c1",
            "object": "chat.completion.chunk",
            "created": 1,
            "model": SETUP.model,
            "choices": [{"index": 0, "delta": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
        }
        usage = {**chunk, "choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}}
        body = f"data: {json.dumps(chunk)}\n\ndata: {json.dumps(usage)}\n\ndata: [DONE]\n\n"
        return Response(body, media_type="text/event-stream")

    app = Starlette(routes=[Route("/v1/chat/completions", completions, methods=["POST"])])
    async with serve_app(app) as url:
        setup = gc.AgentSetup(agent_id="agent-7", workspace="/w", coordinator=url)
        provider = goose.declarative_provider_from_json(json.dumps(gc.custom_provider(setup)))
        message = goose.ProviderMessage(role=goose.MessageRole.USER, content=[goose.MessageContent.TEXT(text="hi")])
        await provider.complete(goose.ProviderModelConfig(model_name=setup.model), "system", [message], [])
    path, headers, body = seen[0]
    assert path == "/v1/chat/completions"
    assert headers["x-agent-id"] == "agent-7"
    assert body["model"] == setup.model and body["stream"] is True


def test_generated_config_has_every_field_goose_requires() -> None:
    for transport in ("stdio", "http"):
        setup = gc.AgentSetup(agent_id="agent-7", workspace="/w", coordinator="http://c:8000", transport=transport)
        config = parse_yaml(gc.merge_config("", setup))
        check_extension(config["extensions"]["sidecar"])
        assert config["extensions"]["sidecar"]["type"] == ("streamable_http" if transport == "http" else "stdio")
        developer = config["extensions"]["developer"]
        check_extension(developer)
        assert developer["available_tools"] == ["write", "edit"]
        assert {k: developer[k] for k in ("name", "display_name", "description")} == gc.DEVELOPER
        assert config["GOOSE_PROVIDER"] == "openai" and config["OPENAI_HOST"] == "http://c:8000"
        assert config["GOOSE_CONTEXT_LIMIT"] == gc.DEFAULT_CONTEXT_LIMIT
        assert config["GOOSE_DISABLE_SESSION_NAMING"] is True
    secrets = parse_yaml(gc.merge_secrets("", SETUP))
    assert secrets == {"OPENAI_API_KEY": gc.DUMMY_API_KEY, "OPENAI_CUSTOM_HEADERS": "X-Agent-Id=agent-7"}


def test_recipe_has_what_goose_requires() -> None:
    recipe = parse_yaml(dump(gc.recipe(SETUP)))
    assert {"version", "title", "description"} <= set(recipe) and (recipe.get("instructions") or recipe.get("prompt"))
    assert recipe["parameters"][0]["key"] == "task" and "{{ task }}" in recipe["prompt"]
    for entry in recipe["extensions"]:
        assert "enabled" not in entry
        check_extension(entry, in_recipe=True)
    assert recipe["settings"]["goose_provider"] == "openai"


USER_CONFIG = """\
# keep this comment
GOOSE_PROVIDER: anthropic
extensions:
  mine:
    enabled: true
    type: stdio
    name: mine
    cmd: /usr/bin/mine
    args: []
    timeout: 300
  sidecar:
    enabled: false
    type: stdio
    name: sidecar
    cmd: stale
    args: []
GOOSE_MODE: smart_approve
"""


def test_merge_keeps_the_users_entries() -> None:
    merged = gc.merge_config(USER_CONFIG, SETUP)
    assert merged.startswith("# keep this comment\n")
    assert "  mine:\n    enabled: true\n    type: stdio\n    name: mine\n    cmd: /usr/bin/mine\n" in merged
    config = parse_yaml(merged)
    assert config["extensions"]["mine"] == {
        "enabled": True,
        "type": "stdio",
        "name": "mine",
        "cmd": "/usr/bin/mine",
        "args": [],
        "timeout": 300,
    }
    assert config["extensions"]["sidecar"]["cmd"] != "stale"
    assert config["GOOSE_MODE"] == "smart_approve" and config["GOOSE_PROVIDER"] == "openai"
    assert gc.merge_config(merged, SETUP) == merged  # idempotent


def test_merge_into_gooses_newer_provider_layout() -> None:
    text = (
        "active_provider: anthropic\n"
        "providers:\n  anthropic:\n    enabled: true\n    model: claude\n    configured: true\n"
    )
    config = parse_yaml(gc.merge_config(text, SETUP))
    assert config["active_provider"] == "openai"
    assert config["providers"]["anthropic"]["model"] == "claude"
    assert config["providers"]["openai"] == {"enabled": True, "model": SETUP.model, "configured": True}
    assert "GOOSE_PROVIDER" not in config  # Goose would delete flat keys in this layout anyway


def test_checked_in_examples_are_current() -> None:
    for name, text in example_files().items():
        path = ROOT / "goose_config" / name
        assert path.read_text(encoding="utf-8") == text, (
            f"regenerate: goose-sidecar goose-config --write-examples goose_config ({name})"
        )


def test_command_writes_a_goose_root_and_merges_per_agent(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "goose"
    (root / "config").mkdir(parents=True)
    (root / "config" / "config.yaml").write_text(USER_CONFIG)
    argv = [
        "goose-config",
        "--agent-id",
        "agent-1",
        "--workspace",
        str(tmp_path),
        "--coordinator",
        "http://c:8000",
        "--goose-root",
        str(root),
    ]
    assert main(argv) == 0
    assert main([*argv[:2], "agent-2", *argv[3:]]) == 0  # a second run for another agent id updates in place
    out = capsys.readouterr().out
    assert "goose run --recipe" in out
    config = parse_yaml((root / "config" / "config.yaml").read_text())
    assert config["extensions"]["mine"]["cmd"] == "/usr/bin/mine"
    assert (
        "agent-2" in config["extensions"]["sidecar"]["args"]
        and "agent-1" not in config["extensions"]["sidecar"]["args"]
    )
    secrets = parse_yaml((root / "config" / "secrets.yaml").read_text())
    assert secrets["OPENAI_CUSTOM_HEADERS"] == "X-Agent-Id=agent-2"
    assert oct((root / "config" / "secrets.yaml").stat().st_mode & 0o777) == "0o600"
    provider = json.loads((root / "config" / "custom_providers" / "goose_sidecar.json").read_text())
    assert provider["headers"] == {"X-Agent-Id": "agent-2"}
    env = (root / "config" / "goose-sidecar.env").read_text()
    assert f"GOOSE_PATH_ROOT={root}\n" in env and "OPENAI_CUSTOM_HEADERS=X-Agent-Id=agent-2\n" in env


def test_command_needs_a_destination(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GOOSE_PATH_ROOT", raising=False)
    assert main(["goose-config", "--agent-id", "a", "--coordinator", "http://c"]) == 2


async def test_the_generated_stdio_entry_starts_a_working_sidecar(tmp_path: Path) -> None:
    workspace = tmp_path / "ws"
    write_tree(workspace, SAMPLE)
    setup = gc.AgentSetup(agent_id="agent-7", workspace=str(workspace), coordinator="http://127.0.0.1:9")
    entry = gc.stdio_extension(setup)
    params = StdioServerParameters(command=entry["cmd"], args=entry["args"], env={**os.environ, **entry["envs"]})
    async with Client(params) as client:
        result = await client.call_tool("list_dir", {"path": "pkg", "depth": 1})
        assert result.content[0].text.split("\n")[1:] == ["pkg/__init__.py", "pkg/calc.py"]  # type: ignore[union-attr]
