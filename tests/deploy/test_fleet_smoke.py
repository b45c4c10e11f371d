"""The compose fleet as plain local processes: exactly each service's command and environment, on loopback.

Every goose-sidecar service of `docker-compose.yml` (`compose_project(2, simulator=True)`, which a test keeps equal
to the committed file) runs with its own command line and environment, through the image's entrypoint
(`goose-sidecar`). Only what Docker would provide is translated: container ports become free loopback ports,
`http://<service>:<port>` URLs point at them, and each mounted volume becomes a temporary directory (a path that is
a mount target in the command becomes that directory). The coordinator gets the `GOOSE_SIDECAR_MODELS` line that
`goose-sidecar deploy coordinator-config --simulator --format env` prints (the `sim` profile setup). Services start
in compose's order and readiness is each one's own compose healthcheck command; the one-shot goose-config services
run to completion. Then the fleet is driven as each Goose container would drive it: MCP tools/list and tools/call
on its sidecar at the URL its recipe registers (with the Host header that URL implies), and streamed chat
completions through the coordinator with goose-N's provider environment. Only Goose itself is not run.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from mcp import Client
from mcp.client.streamable_http import create_mcp_http_client, streamable_http_client

from sidecar.deploy.compose import compose_project
from sidecar.serving import free_port

ROOT = Path(__file__).resolve().parents[2]
AGENTS = 2
SERVICES = compose_project(AGENTS, simulator=True)["services"]
SERVERS = ["simulator-32b", "simulator-7b", "coordinator", *(f"sidecar-{n}" for n in range(1, AGENTS + 1))]
ONE_SHOT = [f"goose-config-{n}" for n in range(1, AGENTS + 1)]


def entrypoint() -> list[str]:
    """The image's ENTRYPOINT, `goose-sidecar`: the installed console script, else the module."""
    script = Path(sys.executable).with_name("goose-sidecar")
    return [str(script)] if script.exists() else [sys.executable, "-m", "sidecar.cli"]


def split_volume(volume: str) -> tuple[str, str]:
    """`SOURCE:TARGET[:MODE]` -> (SOURCE, TARGET); SOURCE may hold `${VAR:-default}`, so split from the right."""
    source, _, target = volume.removesuffix(":ro").removesuffix(":rw").rpartition(":")
    return source, target


def container_port(service: str) -> int:
    command = SERVICES[service]["command"]
    if "--port" in command:
        return int(command[command.index("--port") + 1])
    return int(command[command.index("--http") + 1].rpartition(":")[2])


@dataclass
class Fleet:
    tmp: Path
    ports: dict[str, tuple[int, int]] = field(default_factory=dict)  # service -> (container port, loopback port)
    volumes: dict[str, Path] = field(default_factory=dict)  # volume source in the compose file -> directory

    dotenv: dict[str, str] = field(default_factory=dict)  # `.env` as `deploy secrets` writes it

    def localize(self, value: str) -> str:
        """A URL as a container sees it (`http://<service>:<port>`) as the loopback URL of that process, and
        `${NAME:-}` filled from `.env` as compose interpolates it."""
        for service, (inner, outer) in self.ports.items():
            value = value.replace(f"http://{service}:{inner}", f"http://127.0.0.1:{outer}")
        return re.sub(r"\$\{(\w+):-\}", lambda m: self.dotenv.get(m.group(1), ""), value)

    def volume(self, service: str, target: str) -> Path:
        for volume in SERVICES[service].get("volumes", []):
            source, inside = split_volume(volume)
            if inside == target:
                return self.volumes.setdefault(source, self.tmp / "volumes" / re.sub(r"\W+", "_", source))
        raise KeyError(target)

    def command(self, service: str) -> list[str]:
        argv = [self.localize(arg) for arg in SERVICES[service]["command"]]
        mounts = {split_volume(v)[1] for v in SERVICES[service].get("volumes", [])}
        argv = [str(self.volume(service, a)) if a in mounts else a for a in argv]
        if service in self.ports:
            inner, outer = self.ports[service]
            swap = {"0.0.0.0": "127.0.0.1", f"0.0.0.0:{inner}": f"127.0.0.1:{outer}"}
            argv = [swap.get(a, a) for a in argv]
            if "--port" in argv:
                argv[argv.index("--port") + 1] = str(outer)
        return argv

    def env(self, service: str, models_line: str) -> dict[str, str]:
        """The image's environment in spirit (PATH, HOME, unbuffered) plus exactly what the service declares."""
        keep = {k: v for k, v in os.environ.items() if k in ("PATH", "LANG", "LC_ALL")}
        env = {**keep, "HOME": str(self.tmp), "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(ROOT)}
        declared = SERVICES[service].get("environment", {})
        if isinstance(declared, list):  # pass-through names: compose takes the values from the shell or .env
            dotenv = {"GOOSE_SIDECAR_MODELS": self.localize(models_line)}
            for entry in declared:
                name, sep, value = entry.partition("=")
                env[name] = self.localize(value) if sep else dotenv[name]
        else:
            env.update({k: self.localize(v) for k, v in declared.items()})
        return env

    def healthcheck(self, service: str) -> list[str]:
        test = SERVICES[service]["healthcheck"]["test"]
        assert test[:2] == ["CMD", "python"]
        inner, outer = self.ports[service]
        return [sys.executable, *(a.replace(f"127.0.0.1:{inner}/", f"127.0.0.1:{outer}/") for a in test[2:])]


def make_workspace(path: Path) -> None:
    (path / "pkg").mkdir(parents=True)
    (path / "pkg" / "__init__.py").write_text("")
    (path / "pkg" / "calc.py").write_text("def add(a, b):\n    return a + b\n")
    (path / "tests").mkdir()
    (path / "tests" / "test_calc.py").write_text(
        "from pkg.calc import add\n\n\ndef test_add():\n    assert add(1, 2) == 3\n"
    )


def coordinator_models_line(fleet: Fleet) -> str:
    done = subprocess.run(
        [*entrypoint(), "deploy", "coordinator-config", "--simulator", "--format", "env"],
        cwd=fleet.tmp,
        env=fleet.env("goose-config-1", ""),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    name, _, value = done.stdout.strip().partition("=")
    assert name == "GOOSE_SIDECAR_MODELS"
    return value


def deploy_secrets(fleet: Fleet) -> dict[str, str]:
    """The `.env` secrets, from `goose-sidecar deploy secrets` as the operator runs it."""
    done = subprocess.run(
        [*entrypoint(), "deploy", "secrets", "--agents", str(AGENTS)],
        cwd=fleet.tmp,
        env=fleet.env("goose-config-1", ""),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return dict(line.split("=", 1) for line in done.stdout.splitlines())


@contextlib.contextmanager
def running(tmp: Path) -> Iterator[Fleet]:
    fleet = Fleet(tmp=tmp, ports={s: (container_port(s), free_port()) for s in SERVERS})
    for n in range(1, AGENTS + 1):
        make_workspace(fleet.volume(f"sidecar-{n}", "/workspace"))
    models_line = coordinator_models_line(fleet)
    fleet.dotenv = deploy_secrets(fleet)
    logs = tmp / "logs"
    logs.mkdir()
    processes: dict[str, subprocess.Popen[bytes]] = {}
    try:
        for service in SERVERS:
            with (logs / f"{service}.log").open("wb") as log:
                processes[service] = subprocess.Popen(
                    [*entrypoint(), *fleet.command(service)],
                    cwd=tmp,
                    env=fleet.env(service, models_line),
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
        for service in ONE_SHOT:
            done = subprocess.run(
                [*entrypoint(), *fleet.command(service)],
                cwd=tmp,
                env=fleet.env(service, models_line),
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
            assert done.returncode == 0, f"{service}: {done.stderr}"
        deadline = time.monotonic() + 90
        for service in SERVERS:
            while True:
                if processes[service].poll() is not None:
                    pytest.fail(f"{service} exited: {(logs / f'{service}.log').read_text()[-3000:]}")
                probe = subprocess.run(fleet.healthcheck(service), capture_output=True, timeout=30, check=False)
                if probe.returncode == 0:
                    break
                if time.monotonic() > deadline:
                    pytest.fail(f"{service} never became healthy: {probe.stderr.decode()}")
                time.sleep(0.2)
        yield fleet
    finally:
        for process in processes.values():
            process.terminate()
        for process in processes.values():
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=15)


def goose_view(fleet: Fleet, n: int) -> tuple[dict[str, str], str]:
    """goose-N's provider environment, and the sidecar URL its recipe (written by goose-config-N) registers."""
    goose = SERVICES[f"goose-{n}"]
    recipe_path = goose["command"][goose["command"].index("--recipe") + 1]
    root_target = next(t for _, t in map(split_volume, goose["volumes"]) if recipe_path.startswith(t + "/"))
    recipe = fleet.volume(f"goose-{n}", root_target) / Path(recipe_path).relative_to(root_target)
    (uri,) = re.findall(r'uri: "([^"]+)"', recipe.read_text(encoding="utf-8"))
    return dict(goose["environment"]), uri


def openai_tools(tools: list[Any]) -> list[dict[str, Any]]:
    """The sidecar's tools as Goose offers them to the model (`sidecar__<name>`, OpenAI function format)."""
    return [
        {
            "type": "function",
            "function": {
                "name": f"sidecar__{t.name}",
                "description": t.description,
                "parameters": t.input_schema,
                "strict": False,
            },
        }
        for t in tools
    ]


def sse_chunks(body: str) -> list[Any]:
    frames = [line.removeprefix("data: ") for line in body.splitlines() if line.startswith("data: ")]
    assert frames[-1] == "[DONE]"
    return [json.loads(frame) for frame in frames[:-1]]


@pytest.mark.slow
async def test_the_compose_fleet_runs_as_local_processes(tmp_path: Path) -> None:
    with running(tmp_path) as fleet:
        async with httpx.AsyncClient(timeout=120) as http:
            for n in range(1, AGENTS + 1):
                env, uri = goose_view(fleet, n)
                # MCP as Goose does it: to the recipe's URI, whose host part is the Host header the sidecar must
                # accept, with the bearer token Goose fills into the recipe's header from goose-N's environment.
                host = {"Host": urlsplit(uri).netloc}
                token = fleet.localize(env["GOOSE_SIDECAR_TOKEN"])
                assert len(token) >= 32
                denied = await http.get(fleet.localize(uri).replace("/mcp", "/stats"), headers=host)
                assert denied.status_code == 401  # a neighbour without the token gets nothing
                async with (
                    create_mcp_http_client(headers={**host, "Authorization": f"Bearer {token}"}) as mcp_http,
                    Client(streamable_http_client(fleet.localize(uri), http_client=mcp_http)) as client,
                ):
                    tools = (await client.list_tools()).tools
                    assert {"read_file", "run_tests", "edit_file"} <= {t.name for t in tools}
                    meta: Any = {"agent-session-id": f"session-{n}"}
                    read = await client.call_tool("read_file", {"path": "pkg/calc.py"}, meta=meta)
                    assert not read.is_error and "return a + b" in read.content[0].text  # type: ignore[union-attr]
                    tests = await client.call_tool("run_tests", {}, meta=meta)
                    assert "1 passed" in tests.content[0].text  # type: ignore[union-attr]

                # The LLM call as Goose's openai provider makes it from goose-N's environment.
                headers = {"Authorization": f"Bearer {env['OPENAI_API_KEY']}", "agent-session-id": f"session-{n}"}
                headers.update(pair.split("=", 1) for pair in env["OPENAI_CUSTOM_HEADERS"].split(","))
                body = {
                    "model": env["GOOSE_MODEL"],
                    "messages": [
                        {"role": "system", "content": "You are a coding agent."},
                        {"role": "user", "content": "The test in tests/test_calc.py fails; find out why."},
                    ],
                    "tools": openai_tools(tools),
                    "stream": True,
                    "stream_options": {"include_usage": True},
                    "max_tokens": 64,
                }
                url = f"{fleet.localize(env['OPENAI_HOST'])}/{env['OPENAI_BASE_PATH']}"
                response = await http.post(url, json=body, headers=headers)
                assert response.status_code == 200, response.text
                chunks = sse_chunks(response.text)
                assert all(c["object"] == "chat.completion.chunk" for c in chunks)
                assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] > 0
                assert chunks[0]["model"].startswith("Qwen/Qwen2.5-Coder-")

            status_url = fleet.localize("http://coordinator:8080/status")
            assert (await http.get(status_url)).status_code == 401  # the admin token from .env guards it
            admin = {"Authorization": f"Bearer {fleet.dotenv['COORDINATOR_ADMIN_TOKEN']}"}
            status = (await http.get(status_url, headers=admin)).json()
        text = json.dumps(status)
        for n in range(1, AGENTS + 1):
            assert f"agent-{n}" in text  # identified by the X-Agent-Id header Goose's custom headers carry


def test_the_smoke_test_runs_every_goose_sidecar_service() -> None:
    ours = {name for name, s in SERVICES.items() if s["image"] == "goose-sidecar:local"}
    assert ours == set(SERVERS) | set(ONE_SHOT)
    assert shlex.join(entrypoint()).endswith(("goose-sidecar", "sidecar.cli"))
