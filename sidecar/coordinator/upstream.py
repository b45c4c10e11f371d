"""Upstreams: the models the coordinator can reach, their replicas, health and served names.

One `UpstreamPool` per app. Each configured alias (`[models.<alias>]`) is an `Upstream` with one or more
`Replica`s. Served model names come from config or are discovered from each replica's `/v1/models`.
A background task re-checks health (`/health`, as vLLM and the simulator serve it; `/v1/models` for a server
without `/health`) on an interval.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field

import httpx

from sidecar.coordinator.settings import ModelUpstream
from sidecar.core.admission import UpstreamMetrics
from sidecar.core.breaker import Breaker
from sidecar.core.engine_admission import ScrapeFailure
from sidecar.core.routing import ReplicaState, pick_replica
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
    breaker: Breaker = field(default_factory=Breaker)


@dataclass
class Upstream:
    alias: str
    replicas: list[Replica]
    headers: dict[str, str]
    served_names: list[str] = field(default_factory=list)
    configured_name: str | None = None
    # The upstream orders by vLLM's `priority` field (it runs with `--scheduling-policy priority`). Configuration
    # says so: vLLM V1 accepts and ignores `priority` without that flag, so no answer can tell (reference/vllm.md).
    native_priority: bool = False
    # Send the agent's session id as vLLM's `X-Session-ID` (vLLM 0.33+).
    session_id: bool = False

    @property
    def served_name(self) -> str:
        """The name calls are sent with when a request names the alias (vLLM reports the first name)."""
        return self.configured_name or (self.served_names[0] if self.served_names else self.alias)

    @property
    def in_flight(self) -> int:
        return sum(r.in_flight for r in self.replicas)


class UpstreamPool:
    def __init__(
        self, models: Mapping[str, ModelUpstream], client: httpx.AsyncClient, *, native_priority: bool = False
    ) -> None:
        """`native_priority`: the default for models whose `[models.<alias>] native_priority` is not set."""
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
                    native_priority=native_priority if spec.native_priority is None else spec.native_priority,
                    session_id=spec.session_id,
                )
            )

    def pick_replica(self, upstream: Upstream, agent_key: str, exclude: Collection[str] = ()) -> Replica:
        """The agent's own replica (rendezvous affinity keeps its prefix cache warm) unless it is much more loaded
        than the least loaded. Skipped: replicas in `exclude` (already tried for this call), unhealthy ones and
        those whose circuit breaker is open, as long as another remains; otherwise the least bad is used and the
        call reports the real failure."""
        now = time.monotonic()
        fresh = [r for r in upstream.replicas if r.url not in exclude] or upstream.replicas
        usable = [r for r in fresh if r.healthy and r.breaker.allows(now)] or fresh
        if len(usable) == 1:
            chosen = usable[0]
        else:
            choice = pick_replica([ReplicaState(r.url, True, r.in_flight) for r in usable], agent_key)
            assert choice is not None
            chosen = usable[choice.index]
        chosen.breaker = chosen.breaker.on_attempt(now)
        chosen.served += 1
        return chosen

    def succeeded(self, replica: Replica) -> None:
        replica.breaker = replica.breaker.on_success()

    def failed(self, replica: Replica) -> None:
        before = replica.breaker.phase(time.monotonic())
        replica.breaker = replica.breaker.on_failure(time.monotonic())
        if replica.breaker.phase(time.monotonic()) != before:
            log.warning("circuit_breaker", url=replica.url, phase=str(replica.breaker.phase(time.monotonic())))

    async def check(self, check_timeout: float = 5.0, only: Upstream | None = None) -> None:
        """Check every replica (of `only`, when given) once, concurrently: health, and served names where not
        yet known."""
        upstreams = self.upstreams if only is None else [only]
        jobs = [self._check_replica(u, r, check_timeout) for u in upstreams for r in u.replicas]
        await asyncio.gather(*jobs)

    async def _check_replica(self, upstream: Upstream, replica: Replica, check_timeout: float) -> None:
        try:
            response = await self.client.get(f"{replica.url}/health", headers=upstream.headers, timeout=check_timeout)
            healthy = response.status_code == 200
            error = None if healthy else f"/health answered {response.status_code}"
            models = None
            if response.status_code in (404, 405):
                # An OpenAI-compatible server without vLLM's /health (a hosted API, another proxy): a model list
                # that answers is its health.
                models = await self.client.get(
                    f"{replica.url}/v1/models", headers=upstream.headers, timeout=check_timeout
                )
                healthy = models.status_code == 200
                error = None if healthy else f"{error}, /v1/models answered {models.status_code}"
            if healthy and not upstream.served_names:
                if models is None:
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

    async def scrape(self, upstream: Upstream, scrape_timeout: float = 2.0) -> UpstreamMetrics | ScrapeFailure:
        """One /metrics scrape of every replica of `upstream`, merged (sums; KV usage the max). Without a
        snapshot: NOT_VLLM when some replica answered 200 or 404 without vLLM's metrics (another kind of server),
        else UNREACHABLE (no answer, or an error status such as a starting vLLM's or a proxy's 502/503)."""
        snapshots = []
        failure = ScrapeFailure.UNREACHABLE
        for replica in upstream.replicas:
            try:
                response = await self.client.get(
                    f"{replica.url}/metrics", headers=upstream.headers, timeout=scrape_timeout
                )
            except httpx.HTTPError:
                continue
            parsed = parse_vllm_metrics(response.text, time.monotonic()) if response.status_code == 200 else None
            if parsed is not None:
                snapshots.append(parsed)
            elif response.status_code in (200, 404):
                failure = ScrapeFailure.NOT_VLLM
        if not snapshots:
            return failure
        return UpstreamMetrics(
            waiting=sum(s.waiting for s in snapshots),
            running=sum(s.running for s in snapshots),
            kv_usage=max(s.kv_usage for s in snapshots),
            preemptions_total=sum(s.preemptions_total for s in snapshots),
            scraped_at=min(s.scraped_at for s in snapshots),
            kv_capacity_tokens=sum(s.kv_capacity_tokens or 0 for s in snapshots) or None,
            kv_block_tokens=next((s.kv_block_tokens for s in snapshots if s.kv_block_tokens), None),
            prefix_cache_hits_total=_sum_known(s.prefix_cache_hits_total for s in snapshots),
            prefix_cache_queries_total=_sum_known(s.prefix_cache_queries_total for s in snapshots),
        )

    async def watch(self, interval: float) -> None:
        """Re-check health forever (run as a task; cancel to stop)."""
        while True:
            await asyncio.sleep(interval)
            with contextlib.suppress(Exception):
                await self.check()


def parse_vllm_metrics(text: str, scraped_at: float) -> UpstreamMetrics | None:
    """vLLM's Prometheus text -> the admission snapshot, summed over engines. None when it has no vLLM metrics
    (then the upstream is not vLLM and the window stays static)."""
    values: dict[str, float] = {}
    kv_tokens: int | None = None
    block: int | None = None
    for line in text.splitlines():
        if not line.startswith("vllm:"):
            continue
        name_labels, _, value = line.rpartition(" ")
        name = name_labels.split("{", 1)[0]
        try:
            number = float(value)
        except ValueError:
            continue
        if name == "vllm:cache_config_info":
            labels = dict(_LABEL.findall(name_labels))
            tokens = kv_capacity_tokens(labels)
            kv_tokens = kv_tokens if tokens is None else (kv_tokens or 0) + tokens
            size = labels.get("block_size", "")
            block = int(size) if size.isdigit() and int(size) > 0 else block
        elif name == "vllm:kv_cache_usage_perc":  # `gpu_cache_usage_perc` is gone from vLLM (reference/vllm.md)
            values["kv"] = max(values.get("kv", 0.0), number)
        else:
            values[name] = values.get(name, 0.0) + number
    if "vllm:num_requests_waiting" not in values:
        return None
    return UpstreamMetrics(
        waiting=int(values["vllm:num_requests_waiting"]),
        running=int(values.get("vllm:num_requests_running", 0)),
        kv_usage=values.get("kv", 0.0),
        preemptions_total=values.get("vllm:num_preemptions_total", 0.0),
        scraped_at=scraped_at,
        kv_capacity_tokens=kv_tokens,
        kv_block_tokens=block,
        prefix_cache_hits_total=values.get("vllm:prefix_cache_hits_total"),
        prefix_cache_queries_total=values.get("vllm:prefix_cache_queries_total"),
    )


def _sum_known(values: Iterable[float | None]) -> float | None:
    """The sum, or None when any replica did not say (a partial sum would look like a restarted counter)."""
    known = list(values)
    return None if any(v is None for v in known) else sum(v for v in known if v is not None)


_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def kv_capacity_tokens(labels: Mapping[str, str]) -> int | None:
    """KV cache size in tokens from `vllm:cache_config_info`'s labels: `kv_cache_size_tokens` (vLLM 0.32),
    else `num_gpu_blocks` x `block_size` (reference/vllm.md); None when neither is a positive whole number."""
    size = labels.get("kv_cache_size_tokens", "")
    if size.isdigit() and int(size) > 0:
        return int(size)
    blocks, block = labels.get("num_gpu_blocks", ""), labels.get("block_size", "")
    if blocks.isdigit() and block.isdigit() and int(blocks) * int(block) > 0:
        return int(blocks) * int(block)
    return None
