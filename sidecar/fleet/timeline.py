"""A sampler of the GPU batch and the coordinator's queues while a fleet runs (for the report's timeline plot).

Every `interval_s` it scrapes each upstream's `/metrics` (vLLM names: `vllm:num_requests_running`,
`vllm:num_requests_waiting`, `vllm:kv_cache_usage_perc`) and the coordinator's `/status` (calls queued per
tier, wherever the status reports a `tiers` map with `queued` counts). A failed scrape leaves that sample's
fields out; sampling never fails the run.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Mapping
from typing import Any

import httpx

GAUGES = {
    "vllm:num_requests_running": "running",
    "vllm:num_requests_waiting": "waiting",
    "vllm:kv_cache_usage_perc": "kv_usage",
}


def parse_gauges(text: str) -> dict[str, float]:
    """The GAUGES values from a Prometheus text exposition (labels ignored, samples of one name summed)."""
    found: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name = line.split("{", 1)[0].split(" ", 1)[0]
        short = GAUGES.get(name)
        if short is None:
            continue
        try:
            found[short] = found.get(short, 0.0) + float(line.rsplit(" ", 1)[1])
        except (IndexError, ValueError):
            continue
    return found


def queued_by_tier(status: Any) -> dict[str, int]:
    """Calls queued per tier, summed over every `tiers` map found anywhere in a /status document."""
    totals: dict[str, int] = {}

    def walk(node: Any) -> None:
        if isinstance(node, Mapping):
            tiers = node.get("tiers")
            if isinstance(tiers, Mapping):
                for tier, info in tiers.items():
                    if isinstance(info, Mapping) and isinstance(info.get("queued"), int):
                        totals[str(tier)] = totals.get(str(tier), 0) + info["queued"]
            for key, value in node.items():
                if key != "tiers":
                    walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(status)
    return totals


class Sampler:
    def __init__(self, client: httpx.AsyncClient, upstreams: Mapping[str, str], coordinator: str, epoch: float) -> None:
        self.client = client
        self.upstreams = dict(upstreams)
        self.coordinator = coordinator.rstrip("/")
        self.epoch = epoch
        self.samples: list[dict[str, Any]] = []

    async def sample(self) -> None:
        row: dict[str, Any] = {"t": time.monotonic() - self.epoch}
        for alias, url in self.upstreams.items():
            with contextlib.suppress(httpx.HTTPError):
                response = await self.client.get(f"{url}/metrics", timeout=2.0)
                if response.status_code == 200:
                    row[alias] = parse_gauges(response.text)
        with contextlib.suppress(httpx.HTTPError, ValueError):
            response = await self.client.get(f"{self.coordinator}/status", timeout=2.0)
            if response.status_code == 200:
                row["queued"] = queued_by_tier(response.json())
        self.samples.append(row)

    async def run(self, interval_s: float) -> None:
        while True:
            await self.sample()
            await asyncio.sleep(interval_s)
