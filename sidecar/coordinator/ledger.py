"""Per-agent usage and cost, so a team can charge GPU work back to the agents (and tasks) that caused it.

For every answered call the ledger adds the answer's token usage to its agent's account, per model alias, and
prices it with the dashboard's cost model (`dashboard.gpu_seconds`: uncached prompt tokens at the model's
prefill cost, output tokens at its decode cost, prefix-cached tokens free; the aliases in `small_aliases` at
the 7B's costs, every other at the 32B's), then GPU seconds at `coordinator.dashboard_gpu_hour_usd`. These are estimates
of GPU occupancy, not measurements, and say so (`basis`).

`/status` shows each agent's account (`agents[].usage`); with `coordinator.usage_log` set, each call is also
appended to that file as one JSON line (`ts, agent_id, model, tier, prompt_tokens, cached_prompt_tokens,
completion_tokens, usage_reported, gpu_s, usd`), opened and closed per line so log rotation needs no signal.
Each agent's account lives in its `AgentEntry` (agents.py), so the `AgentBook`'s bound is the accounts' bound;
the log keeps everything.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sidecar.coordinator.dashboard import COST_BASIS, LARGE_COST, SMALL_COST, ModelUsage, TokenCost, gpu_seconds
from sidecar.core.usage import Usage
from sidecar.obs import get_logger

log = get_logger(__name__)


class UsageLedger:
    def __init__(
        self,
        gpu_hour_usd: float,
        small_aliases: frozenset[str] = frozenset(),
        log_path: Path | None = None,
    ) -> None:
        self.gpu_hour_usd = gpu_hour_usd
        self.small_aliases = small_aliases
        self.log_path = log_path
        self.log_errors = 0

    def cost(self, alias: str) -> TokenCost:
        return SMALL_COST if alias in self.small_aliases else LARGE_COST

    def usd(self, gpu_s: float) -> float:
        return gpu_s / 3600 * self.gpu_hour_usd

    def record(
        self,
        account: dict[str, ModelUsage],
        agent_id: str,
        alias: str,
        tier: str,
        usage: Usage | None,
        now: dt.datetime | None = None,
    ) -> None:
        """Charge one answered call to `agent_id`, whose account (usage per model alias) is `account`, and append
        it to the usage log when one is set."""
        total = account.get(alias)
        if total is None:
            total = account[alias] = ModelUsage()
        total.calls += 1
        if usage is None:
            total.calls_without_usage += 1
        else:
            total.prompt_tokens += usage.prompt_tokens
            total.cached_prompt_tokens += usage.cached_prompt_tokens
            total.completion_tokens += usage.completion_tokens
        if self.log_path is not None:
            call = ModelUsage(calls=1, calls_without_usage=int(usage is None))
            if usage is not None:
                call.prompt_tokens = usage.prompt_tokens
                call.cached_prompt_tokens = usage.cached_prompt_tokens
                call.completion_tokens = usage.completion_tokens
            gpu_s = gpu_seconds(call, self.cost(alias))
            line = {
                "ts": (now or dt.datetime.now(dt.UTC)).isoformat(timespec="milliseconds"),
                "agent_id": agent_id,
                "model": alias,
                "tier": tier,
                "prompt_tokens": call.prompt_tokens,
                "cached_prompt_tokens": call.cached_prompt_tokens,
                "completion_tokens": call.completion_tokens,
                "usage_reported": usage is not None,
                "gpu_s": round(gpu_s, 6),
                "usd": round(self.usd(gpu_s), 8),
            }
            try:
                with self.log_path.open("a", encoding="utf-8") as f:
                    f.write(json.dumps(line) + "\n")
            except OSError as exc:  # accounting must never fail a call; it is counted and logged instead
                self.log_errors += 1
                log.warning("usage_log_failed", path=str(self.log_path), error=str(exc))

    def account(self, by_model: Mapping[str, ModelUsage]) -> dict[str, Any]:
        """One agent's account (usage per model alias) with its estimated GPU seconds and their price."""
        gpu_s = sum(gpu_seconds(u, self.cost(alias)) for alias, u in by_model.items())
        return {
            "by_model": {alias: u.as_dict() for alias, u in by_model.items()},
            "gpu_s": round(gpu_s, 3),
            "usd": round(self.usd(gpu_s), 6),
        }

    def summary(self) -> dict[str, Any]:
        """How the accounts are priced, for /status."""
        return {"gpu_hour_usd": self.gpu_hour_usd, "basis": COST_BASIS, "log": str(self.log_path or "") or None}
