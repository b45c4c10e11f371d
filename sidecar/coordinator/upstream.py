"""Upstreams: the models the coordinator can reach, their replicas, health and served names.

One `UpstreamPool` per app. Each configured alias (`[models.<alias>]`) is an `Upstream` with one or more
`Replica`s. Served model names come from config or are discovered from each replica's `/v1/models`; health and
metrics are fetched by `upstream_client.UpstreamClient` (the one way to the upstreams), which records them here.
"""

from __future__ import annotations

import re
import time
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field

from sidecar.coordinator.settings import ModelUpstream
from sidecar.core.admission import UpstreamMetrics
from sidecar.core.breaker import Breaker
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
    def __init__(self, models: Mapping[str, ModelUpstream], *, native_priority: bool = False) -> None:
        """`native_priority`: the default for models whose `[models.<alias>] native_priority` is not set."""
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
