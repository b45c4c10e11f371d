"""The container health probe against real loopback servers."""

from __future__ import annotations

import asyncio
import subprocess
import sys

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from sidecar.deploy.healthcheck import probe
from sidecar.serving import free_port, serve_app


async def _status(request: Request) -> PlainTextResponse:
    return PlainTextResponse("x", status_code=int(request.path_params["code"]))


APP = Starlette(routes=[Route("/status/{code:int}", _status)])


async def test_2xx_is_healthy_anything_else_is_not() -> None:
    async with serve_app(APP) as url:
        results = await asyncio.gather(
            *(asyncio.to_thread(probe, f"{url}/status/{code}") for code in (200, 204, 404, 503)),
            asyncio.to_thread(probe, f"{url}/status/301"),
        )
    assert [healthy for healthy, _ in results] == [True, True, False, False, False]
    assert "HTTP 503" in results[3][1]


async def test_the_module_exits_by_health_and_refused_connections_are_unhealthy() -> None:
    async with serve_app(APP) as url:
        ok = await asyncio.to_thread(_run, f"{url}/status/200")
        bad = await asyncio.to_thread(_run, f"{url}/status/500")
    refused = await asyncio.to_thread(_run, f"http://127.0.0.1:{free_port()}/healthz")
    assert (ok.returncode, bad.returncode, refused.returncode) == (0, 1, 1)
    assert "HTTP 500" in bad.stderr


def _run(url: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sidecar.deploy.healthcheck", url], capture_output=True, text=True, timeout=30
    )
