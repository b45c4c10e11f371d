"""Per-agent API keys end to end: `deploy keys` writes a keys file, `goose-config --api-key` puts an agent's key
where Goose reads it, and a coordinator started with that keys file takes the agent from the key alone."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from sidecar.cli import main
from sidecar.coordinator.keys import load_keys
from sidecar.deploy.compose import compose_project
from tests.coordinator.conftest import stack
from tests.coordinator.scripted_upstream import MODEL

CHAT = {"model": MODEL, "messages": [{"role": "user", "content": "fix it"}], "stream": False}


def read_env(path: Path) -> dict[str, str]:
    pairs = (shlex.split(line)[0].split("=", 1) for line in path.read_text().splitlines() if line.strip())
    return {k: v for k, v in pairs}


def test_deploy_keys_writes_a_secret_keys_file_and_env_lines(tmp_path: Path) -> None:
    keys_file, env = tmp_path / "keys.txt", tmp_path / ".env"
    env.write_text("AGENT_1_TASK=fix-the-tests\n")
    assert main(["deploy", "keys", "--agents", "3", "-o", str(keys_file), "--env-file", str(env)]) == 0
    keys = load_keys(keys_file)  # the coordinator's own loader accepts it
    assert sorted(keys.values()) == ["agent-1", "agent-2", "agent-3"] and len(set(keys)) == 3
    assert oct(keys_file.stat().st_mode & 0o777) == "0o600"
    lines = read_env(env)
    assert lines["AGENT_1_TASK"] == "fix-the-tests"  # appended, nothing replaced
    assert {lines[f"AGENT_{n}_API_KEY"]: f"agent-{n}" for n in (1, 2, 3)} == keys
    assert main(["deploy", "keys", "--agents", "1", "-o", str(keys_file)]) == 1  # never overwrites keys
    assert load_keys(keys_file) == keys


def test_compose_gives_each_goose_its_key_from_env() -> None:
    services = compose_project(2)["services"]
    assert services["goose-2"]["environment"]["OPENAI_API_KEY"] == "${AGENT_2_API_KEY:-goose-sidecar}"


async def test_a_generated_key_written_by_goose_config_identifies_the_agent(tmp_path: Path) -> None:
    keys_file = tmp_path / "keys.txt"
    assert main(["deploy", "keys", "--agents", "2", "-o", str(keys_file)]) == 0
    key = next(k for k, agent in load_keys(keys_file).items() if agent == "agent-2")
    root = tmp_path / "goose"
    argv = ["goose-config", "--agent-id", "agent-2", "--workspace", str(tmp_path), "--coordinator", "http://c:1"]
    assert main([*argv, "--goose-root", str(root), "--api-key", key]) == 0
    written = read_env(root / "config" / "goose-sidecar.env")["OPENAI_API_KEY"]
    assert written == key and key in (root / "config" / "secrets.yaml").read_text()
    async with stack(keys_file=str(keys_file)) as st:
        ok = await st.client.post("/v1/chat/completions", json=CHAT, headers={"authorization": f"Bearer {written}"})
        assert ok.status_code == 200
        status = (await st.client.get("/status")).json()
        assert [a["agent_id"] for a in status["agents"]] == ["agent-2"]
        dummy = await st.client.post(
            "/v1/chat/completions", json=CHAT, headers={"authorization": "Bearer goose-sidecar"}
        )
        assert dummy.status_code == 401  # the default dummy key is refused by a coordinator with keys


@pytest.mark.parametrize("bad", ["", "two words"])
def test_a_bad_api_key_is_a_clear_error(tmp_path: Path, bad: str, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["goose-config", "--agent-id", "a", "--coordinator", "http://c", "--goose-root", str(tmp_path)]
    assert main([*argv, "--api-key", bad]) == 2
    assert "--api-key must be" in capsys.readouterr().err
