"""Upstreams: the models the coordinator can reach, their replicas, health and served names.

One `UpstreamPool` per app. Each configured alias (`[models.<alias>]`) is an `Upstream` with one or more
`Replica`s. Served model names come from config or are discovered from each replica's `/v1/models`.
A background task re-checks health (`/health`, as vLLM and the simulator serve it) on an interval.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

import httpx

from sidecar.coordinator.settings import ModelUpstream
from sidecar.obs import get_logger

log = get_logger("sidecar.coordinator.upstream")


@dataclass
class Replica:
    url: str
    healthy: bool = True  # optimistic until the first check says otherwise
    last_check: float | None = None
    last_error: str | None = None
    in_flight: int = 0
    served: int = 0


@dataclass
class Upstream:
    alias: str
    replicas: list[Replica]
    headers: dict[str, str]
    served_names: list[str] = field(default_factory=list)
    configured_name: str | None = None

    @property
    def served_name(self) -> str:
        """The name calls are sent with when a request names the alias (vLLM reports the first name)."""
        return self.configured_name or (self.served_names[0] if self.served_names else self.alias)

    @property
    def in_flight(self) -> int:
        return sum(r.in_flight for r in self.replicas)


class UpstreamPool:
    def __init__(self, models: Mapping[str, ModelUpstream], client: httpx.AsyncClient) -> None:
        self.client = client
        self.upstreams: list[Upstream] = []
        for alias, spec in models.items():
            headers = dict(spec.headers)
            if spec.api_key:
                headers["Authorization"] = f"Bearer {spec.api_key}"
            self.upstreams.append(
                Upstream(
                    alias=alias,
                    replicas=[Replica(url) for url in spec.replicas],
                    headers=headers,
                    served_names=[spec.served_name] if spec.served_name else [],
                    configured_name=spec.served_name,
                )
            )

    def resolve(self, model: str) -> tuple[Upstream, str] | None:
        """The upstream for a requested model name and the name to send: alias -> its served name; a served
        name -> itself. A name nobody serves goes to the only upstream when there is just one (it answers
        with its own 404, byte for byte); with several, None."""
        for upstream in self.upstreams:
            if model == upstream.alias and model not in upstream.served_names:
                return upstream, upstream.served_name
            if model in upstream.served_names:
                return upstream, model
        if len(self.upstreams) == 1:
            return self.upstreams[0], model
        return None

    def pick_replica(self, upstream: Upstream) -> Replica:
        """Least in-flight among healthy replicas (all replicas when none is healthy: let the call say why)."""
        candidates = [r for r in upstream.replicas if r.healthy] or upstream.replicas
        return min(candidates, key=lambda r: (r.in_flight, r.served))

    def known_models(self) -> list[str]:
        names: list[str] = []
        for upstream in self.upstreams:
            names.extend(upstream.served_names or [upstream.alias])
        return names

    async def check(self, check_timeout: float = 5.0) -> None:
        """Check every replica once (concurrently): health, and served names where not yet known."""
        jobs = [self._check_replica(u, r, check_timeout) for u in self.upstreams for r in u.replicas]
        await asyncio.gather(*jobs)

    async def _check_replica(self, upstream: Upstream, replica: Replica, check_timeout: float) -> None:
        try:
            response = await self.client.get(f"{replica.url}/health", headers=upstream.headers, timeout=check_timeout)
            healthy = response.status_code == 200
            error = None if healthy else f"/health answered {response.status_code}"
            if healthy and not upstream.served_names:
                models = await self.client.get(
                    f"{replica.url}/v1/models", headers=upstream.headers, timeout=check_timeout
                )
                if models.status_code == 200:
                    data = models.json().get("data", [])
                    upstream.served_names = [m["id"] for m in data if isinstance(m, dict) and "id" in m]
        except (httpx.HTTPError, ValueError) as exc:
            healthy, error = False, f"{type(exc).__name__}: {exc}"
        if healthy != replica.healthy:
            log.info("upstream_health", alias=upstream.alias, url=replica.url, healthy=healthy, error=error)
        replica.healthy, replica.last_error, replica.last_check = healthy, error, time.monotonic()

    async def watch(self, interval: float) -> None:
        """Re-check health forever (run as a task; cancel to stop)."""
        while True:
            await asyncio.sleep(interval)
            with contextlib.suppress(Exception):
                await self.check()
