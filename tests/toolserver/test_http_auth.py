"""The HTTP sidecar's guard: a bearer token on every route but /healthz (and /peek, keyed), the Host check on
all, over a real uvicorn server on loopback; the CLI refuses to serve HTTP without a token."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from mcp import Client
from mcp.client.streamable_http import create_mcp_http_client, streamable_http_client

from sidecar.toolserver.httpapp import build_http_app, serve_http
from sidecar.toolserver.httpauth import TokenError, host_allowed, resolve_token
from sidecar.toolserver.settings import SidecarSettings
from sidecar.toolserver.sidecar import Sidecar

from ..conftest import ROOT
from .conftest import settle
from .test_clients import MCP_HEADERS, initialize_body

TOKEN = "t0ken-for-tests-0123456789abcdef"


@pytest.fixture
async def guarded(make_settings: Callable[..., SidecarSettings]) -> AsyncIterator[tuple[str, Sidecar]]:
    settle()
    sc = Sidecar(make_settings(allowed_hosts=["sidecar-1"]), env={})
    async with serve_http(build_http_app(sc, token=TOKEN)) as url:
        yield url, sc


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "",
        "Bearer",
        f"Basic {TOKEN}",
        f"Bearer {TOKEN[:-1]}",  # a prefix
        f"Bearer {TOKEN}x",  # an extension
        f"Bearer {TOKEN.upper()}",
        f"Token {TOKEN}",
        f"Bearer\t{TOKEN}",
        TOKEN,
    ],
)
async def test_mcp_without_the_token_is_refused(guarded: tuple[str, Sidecar], authorization: str | None) -> None:
    url, sc = guarded
    headers = dict(MCP_HEADERS)
    if authorization is not None:
        headers["Authorization"] = authorization
    async with httpx.AsyncClient(base_url=url, headers=headers) as http:
        answer = await http.post("/mcp", json=initialize_body())
        assert answer.status_code == 401
        assert answer.headers["www-authenticate"].startswith("Bearer")
        assert (await http.get("/stats")).status_code == 401
    assert sc.calls == 0


async def test_a_repeated_authorization_header_is_refused(guarded: tuple[str, Sidecar]) -> None:
    url, _ = guarded
    async with httpx.AsyncClient(base_url=url) as http:
        headers = [("Authorization", "Bearer wrong"), ("Authorization", f"Bearer {TOKEN}"), *MCP_HEADERS.items()]
        answer = await http.post("/mcp", json=initialize_body(), headers=headers)
        assert answer.status_code == 401


async def test_the_token_opens_mcp_and_stats_and_health_needs_none(guarded: tuple[str, Sidecar]) -> None:
    url, sc = guarded
    async with (
        create_mcp_http_client(headers={"Authorization": f"Bearer {TOKEN}"}) as http,
        Client(streamable_http_client(f"{url}/mcp", http_client=http)) as client,
    ):
        read = await client.call_tool("read_file", {"path": "pkg/calc.py"})
        assert not read.is_error
    assert sc.calls == 1
    async with httpx.AsyncClient(base_url=url) as http:
        assert (await http.get("/stats", headers={"Authorization": f"bearer {TOKEN}"})).json()["calls"] == 1
        health = await http.get("/healthz")
        assert health.status_code == 200 and set(health.json()) == {"ok", "generation"}
        # /peek has its own key instead of the token: the wrong key finds nothing, the right one answers.
        assert (await http.post("/peek?key=nope", json=[])).status_code == 404
        assert (await http.post(f"/peek?key={sc.peek_key}", json=[])).json() == []


@pytest.mark.parametrize("host", ["evil.example", "evil.example:80", "sidecar-10", "127.0.0.2", "sidecar-1.evil", ""])
@pytest.mark.parametrize("path", ["/stats", "/healthz", "/mcp", "/peek?key=KEY"])
async def test_every_route_checks_the_host(guarded: tuple[str, Sidecar], host: str, path: str) -> None:
    """A DNS-rebinding page reaches the sidecar under its own name: refused everywhere, token or not."""
    url, sc = guarded
    async with httpx.AsyncClient(base_url=url) as http:
        headers = {"Host": host, "Authorization": f"Bearer {TOKEN}", **MCP_HEADERS}
        answer = await http.post(path.replace("KEY", sc.peek_key), json=[], headers=headers)
        assert answer.status_code == 421
        for allowed in ("sidecar-1", "sidecar-1:8765", url.removeprefix("http://")):
            headers["Host"] = allowed
            assert (await http.get("/healthz", headers=headers)).status_code == 200


@pytest.mark.parametrize("origin", ["https://evil.example", "null", "http://sidecar-1.evil"])
async def test_other_sites_pages_are_refused(guarded: tuple[str, Sidecar], origin: str) -> None:
    url, _ = guarded
    async with httpx.AsyncClient(base_url=url) as http:
        headers = {"Origin": origin, "Authorization": f"Bearer {TOKEN}", **MCP_HEADERS}
        assert (await http.post("/mcp", json=initialize_body(), headers=headers)).status_code == 403
        assert (await http.get("/stats", headers=headers)).status_code == 403
        headers["Origin"] = "http://sidecar-1:8765"
        assert (await http.get("/stats", headers=headers)).status_code == 200


def test_host_patterns() -> None:
    allowed = ["127.0.0.1:*", "localhost:*", "[::1]:*", "box", "box:*"]
    for host in ("127.0.0.1:80", "LOCALHOST:1", "[::1]:9", "box", "box:1", "127.0.0.1"):
        assert host_allowed(host, allowed), host
    for host in ("127.0.0.1.evil:80", "box.evil", "[::1", "evil:box", "", None, "::1:80", "boxx"):
        assert not host_allowed(host, allowed), host
    assert host_allowed("anything", ["*"])


def test_resolve_token(tmp_path: Path) -> None:
    assert resolve_token(f"  {TOKEN}\n", None, insecure_no_auth=False) == TOKEN
    file = tmp_path / "token"
    file.write_text(TOKEN + "\nignored\n")
    assert resolve_token(None, file, insecure_no_auth=False) == TOKEN
    assert resolve_token("", file, insecure_no_auth=False) == TOKEN  # compose's empty ${VAR:-}: the file decides
    assert resolve_token(None, None, insecure_no_auth=True) is None
    for token, token_file in [
        (None, None),
        ("", None),
        ("   ", None),
        ("short", None),
        ("a" * 15, None),
        ("has a space in it 0123", None),
        ("ctl\x01char-0123456789abc", None),
        (None, tmp_path / "missing"),
        (None, tmp_path),  # a directory
    ]:
        with pytest.raises(TokenError):
            resolve_token(token, token_file, insecure_no_auth=False)
    (tmp_path / "empty").write_text("")
    with pytest.raises(TokenError):
        resolve_token(None, tmp_path / "empty", insecure_no_auth=True)  # a named file must hold a token


def cli_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GOOSE_SIDECAR_")}
    return {**env, **extra}


@pytest.mark.parametrize("token", [None, "", "short"])
async def test_the_cli_refuses_http_without_a_token(workspace: Path, token: str | None) -> None:
    extra = {} if token is None else {"GOOSE_SIDECAR_SIDECAR_AUTH_TOKEN": token}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "sidecar.cli",
        "mcp",
        "--workspace",
        str(workspace),
        "--http",
        "127.0.0.1:0",
        cwd=str(ROOT),
        env=cli_env(**extra),
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 2
    assert b"token" in err


def test_the_auth_token_setting_is_kept_out_of_reprs() -> None:
    settings: Any = SidecarSettings(auth_token=TOKEN)
    assert TOKEN not in repr(settings)


async def test_oversized_headers_are_refused_before_the_token_is_checked(guarded: tuple[str, Sidecar]) -> None:
    url, _ = guarded
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(b"GET /stats HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: " + b"a" * (1024 * 1024) + b"\r\n\r\n")
        try:
            await writer.drain()
            answer = await asyncio.wait_for(reader.read(4096), 30)
        except ConnectionError:
            answer = b""
    finally:
        writer.close()
    assert not answer.startswith(b"HTTP/1.1 200") and not answer.startswith(b"HTTP/1.1 401")
    async with httpx.AsyncClient(base_url=url) as http:
        assert (await http.get("/healthz")).status_code == 200


async def test_an_oversized_peek_is_refused(guarded: tuple[str, Sidecar]) -> None:
    url, sc = guarded

    async def body() -> Any:
        for _ in range(64):
            yield b"[" * 65536

    async with httpx.AsyncClient(base_url=url) as http:
        answer = await http.post(f"/peek?key={sc.peek_key}", content=body())
        assert answer.status_code == 413
