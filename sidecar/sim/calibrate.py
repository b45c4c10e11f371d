"""Calibration: run each profile's published scenarios on the virtual clock and compare with the figures.

For every `Target` of a profile: `batch` requests arrive together, each with its own `prompt` tokens (no shared
prefix) and generating exactly `output` tokens (`ignore_eos`), on a fresh engine. Aggregate tok/s is all output
tokens over the time from arrival to the last finish (the Qwen speed benchmark's single-stream figure is the
same measure at batch 1); TTFT is arrival to first token, the API server's `frontend_s` included.
A figure given as a range counts as met when the simulated value is within 10% of the range.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sidecar.sim.engine import Engine, Request
from sidecar.sim.offline import run_offline
from sidecar.sim.profiles import Profile, Target

TOLERANCE = 0.10


@dataclass(frozen=True, slots=True)
class Row:
    profile: str
    target: Target
    simulated: float

    @property
    def ratio(self) -> float:
        """Simulated over published (the range's midpoint for a range)."""
        mid = (self.target.low + self.target.high) / 2
        return self.simulated / mid if mid else float("inf")

    @property
    def ok(self) -> bool:
        low, high = self.target.low * (1 - TOLERANCE), self.target.high * (1 + TOLERANCE)
        return low <= self.simulated <= high


def measure(profile: Profile, target: Target) -> float:
    """The simulated value of one target's metric."""
    engine = Engine(profile, "fcfs")
    requests = [
        Request(
            request_id=f"cal-{i}",
            prompt=tuple(10_000 + i * 1_000_000 + j for j in range(target.prompt)),
            output=tuple(range(5_000, 5_000 + target.output)),
            finish_reason="length",
        )
        for i in range(target.batch)
    ]
    run_offline(engine, requests)
    if target.metric == "ttft_s":
        return max((r.first_token or 0.0) - r.arrival for r in requests)
    span = max(r.finished or 0.0 for r in requests) - min(r.arrival for r in requests)
    return target.batch * target.output / span


def calibrate(profiles: list[Profile], progress: Callable[[str], None] | None = None) -> list[Row]:
    rows = []
    for profile in profiles:
        for target in profile.targets:
            if progress is not None:
                progress(f"{profile.name}: {target.label}")
            rows.append(Row(profile.name, target, measure(profile, target)))
    return rows


def format_table(rows: list[Row]) -> str:
    """A plain-text table: profile, figure, simulated, published, ratio, within 10%, source."""
    lines = [f"{'profile':<24} {'figure':<38} {'simulated':>10} {'published':>13} {'ratio':>6}  ok   source"]
    for row in rows:
        t = row.target
        published = _number(t.low) if t.low == t.high else f"{_number(t.low)}-{_number(t.high)}"
        lines.append(
            f"{row.profile:<24} {t.label:<38} {_number(row.simulated):>10} {published:>13} {row.ratio:>6.2f}  "
            f"{'yes' if row.ok else 'NO ':<4} {t.source}"
        )
    lines.append("ratio: simulated / published (a range's midpoint); ok: within 10% of the figure or range.")
    return "\n".join(lines)


def _number(value: float) -> str:
    if value >= 100:
        return f"{value:.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.3f}"
