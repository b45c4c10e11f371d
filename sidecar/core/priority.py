"""A call's priority: explicit values (body `priority`, header `X-Priority`) and all sources in precedence.

Sources, in the precedence of the design's "Contracts" (`resolve_priority`):

    body `priority`  >  header `X-Priority`  >  stage reported by the agent's sidecar (fresh within a TTL)
                     >  the conversation: last tool calls and their results, then keywords in the last user text
                     >  default `warm`

The original report classified by keywords on the last user message only; here keywords are the fallback, and the
evidence is what the agent just did (`conversation.classify_messages`) or what its sidecar reported
(`toolactions.stage_from_tool_event`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from sidecar.core.conversation import classify_messages
from sidecar.core.stages import DEFAULT_STAGE_TIERS, DEFAULT_TIER, STAGE_NAMES, TIER_NAMES, TIERS, Source, Stage, Tier


@dataclass(frozen=True)
class ParsedPriority:
    """An explicit priority value: its tier, the stage it named (if it was a stage name), the int to pass to vLLM."""

    tier: Tier
    stage: Stage | None = None
    native: int | None = None


def parse_priority(value: object, stage_tiers: Mapping[Stage, Tier] = DEFAULT_STAGE_TIERS) -> ParsedPriority | None:
    """Read a body `priority` or header `X-Priority` value; None when it is absent or not understood.

    Accepted: a tier word (`hot|warm|cold`), a stage name (its tier under `stage_tiers`), or an integer (a JSON int
    or a string of one), which is vLLM's native priority and is kept in `native` to be passed on as is; its tier is
    the inverse of `native_priority`: <= 0 hot, 1 warm, >= 2 cold. Case and surrounding spaces are ignored.
    Booleans, floats and other words are not understood (None), so the next source decides.
    """
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return ParsedPriority(tier=TIERS[min(max(value, 0), len(TIERS) - 1)], native=value)
    if not isinstance(value, str):
        return None
    word = value.strip().lower()
    if word in TIER_NAMES:
        return ParsedPriority(tier=Tier(word))
    if word in STAGE_NAMES:
        stage = Stage(word)
        return ParsedPriority(tier=stage_tiers.get(stage, DEFAULT_TIER), stage=stage)
    if re.fullmatch(r"[+-]?\d{1,9}", word):
        return parse_priority(int(word), stage_tiers)
    return None


@dataclass(frozen=True)
class ReportedStage:
    """The stage an agent's sidecar last reported, and when the coordinator received it (coordinator clock, s)."""

    stage: Stage
    at: float

    def is_fresh(self, now: float, ttl: float) -> bool:
        """True while `now - at <= ttl` (a report stamped in the future counts as fresh)."""
        return now - self.at <= ttl


@dataclass(frozen=True)
class Priority:
    """A call's tier and stage, each with its source.

    `tier`/`source`: the first source present in DESIGN.md's order. `stage`/`stage_source`: the best stage evidence
    (an explicit stage name, else a fresh report, else the conversation), even when the tier was explicit, so routing
    can use it; None/DEFAULT when there is none. `native`: an explicit integer priority, to pass to vLLM as is.
    """

    tier: Tier
    source: Source
    stage: Stage | None
    stage_source: Source
    reason: str
    native: int | None = None


def resolve_priority(
    explicit_priority: object,
    header_priority: str | None,
    reported: ReportedStage | None,
    now: float,
    ttl: float,
    messages: Sequence[Mapping[str, object]],
    stage_tiers: Mapping[Stage, Tier] = DEFAULT_STAGE_TIERS,
) -> Priority:
    """Tier and stage of one call, first source present: body `priority`, header `X-Priority`, the reported stage
    (fresh within `ttl` seconds), the classifier over `messages`, else warm.

    Values neither source understands (`parse_priority` -> None) count as absent. The classifier runs only when no
    explicit stage name and no fresh report gives the stage. A stage missing from `stage_tiers` maps to warm.
    """
    for value, source in ((explicit_priority, Source.BODY), (header_priority, Source.HEADER)):
        parsed = parse_priority(value, stage_tiers)
        if parsed is None:
            continue
        if parsed.stage is not None:
            return Priority(parsed.tier, source, parsed.stage, source, f"{source} names stage {parsed.stage}")
        stage, stage_source, _ = _stage_evidence(reported, now, ttl, messages)
        return Priority(parsed.tier, source, stage, stage_source, f"{source} priority {value!r}", parsed.native)
    stage, stage_source, reason = _stage_evidence(reported, now, ttl, messages)
    if stage is None:
        return Priority(DEFAULT_TIER, Source.DEFAULT, None, Source.DEFAULT, "no priority, report or conversation")
    return Priority(stage_tiers.get(stage, DEFAULT_TIER), stage_source, stage, stage_source, reason)


def _stage_evidence(
    reported: ReportedStage | None, now: float, ttl: float, messages: Sequence[Mapping[str, object]]
) -> tuple[Stage | None, Source, str]:
    if reported is not None and reported.is_fresh(now, ttl):
        age = max(now - reported.at, 0.0)
        return reported.stage, Source.REPORTED, f"sidecar reported {reported.stage} {age:.1f}s ago"
    found = classify_messages(messages)
    if found is None:
        return None, Source.DEFAULT, "no evidence"
    return found.stage, found.source, found.reason
