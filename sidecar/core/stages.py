"""The vocabulary of prioritisation: workflow stages, priority tiers, task kinds, where a verdict came from.

Stage -> tier is the original report's mapping (hot = code_edit, test_analyze; warm = plan, commit_msg;
cold = explore, docs; `seed/000_bc7af0ed774b52c4.txt`, "Priority Scheduling"), replaceable with `stage_tiers_from`.
Reading a call's stage and tier: `toolactions` (one tool call), `conversation` (an OpenAI chat), `priority`
(every source in order of precedence); simple or complex work for routing: `task_kind`.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from types import MappingProxyType


class Stage(StrEnum):
    """What an agent is doing, as the seed named it."""

    EXPLORE = "explore"
    PLAN = "plan"
    CODE_EDIT = "code_edit"
    TEST_ANALYZE = "test_analyze"
    DOCS = "docs"
    COMMIT_MSG = "commit_msg"


class Tier(StrEnum):
    """Priority tier. `rank` 0 (hot) is served first, as vLLM serves lower `priority` values first."""

    HOT = "hot"
    WARM = "warm"
    COLD = "cold"

    @property
    def rank(self) -> int:
        """0 for hot, 1 for warm, 2 for cold."""
        return TIERS.index(self)


TIERS: tuple[Tier, ...] = (Tier.HOT, Tier.WARM, Tier.COLD)
"""All tiers, best first: `TIERS[rank]` is the tier of that rank."""
TIER_NAMES = frozenset(tier.value for tier in Tier)
STAGE_NAMES = frozenset(stage.value for stage in Stage)


class TaskKind(StrEnum):
    """Work a small model does well (simple) or that needs the large one (complex); used by routing."""

    SIMPLE = "simple"
    COMPLEX = "complex"


class Source(StrEnum):
    """Where a tier or stage came from (a label for logs, /status and metrics)."""

    BODY = "body"
    HEADER = "header"
    REPORTED = "reported"
    TOOLS = "tools"
    KEYWORDS = "keywords"
    DEFAULT = "default"


DEFAULT_STAGE_TIERS: Mapping[Stage, Tier] = MappingProxyType(
    {
        Stage.CODE_EDIT: Tier.HOT,
        Stage.TEST_ANALYZE: Tier.HOT,
        Stage.PLAN: Tier.WARM,
        Stage.COMMIT_MSG: Tier.WARM,
        Stage.EXPLORE: Tier.COLD,
        Stage.DOCS: Tier.COLD,
    }
)
"""The seed's mapping (`seed/000_bc7af0ed774b52c4.txt`, `WorkflowStage::priority`)."""

DEFAULT_TIER = Tier.WARM
"""The tier of a call no source says anything about (DESIGN.md)."""


def stage_tiers_from(raw: Mapping[str, str], base: Mapping[Stage, Tier] = DEFAULT_STAGE_TIERS) -> Mapping[Stage, Tier]:
    """`base` with the overrides in `raw` (stage name -> tier name), e.g. `{"docs": "warm"}`.

    Raises ValueError naming every unknown stage or tier at once. Stages absent from `raw` keep `base`'s tier.
    """
    errors = [f"unknown stage {key!r}" for key in raw if key not in STAGE_NAMES]
    errors += [f"unknown tier {value!r} for {key!r}" for key, value in raw.items() if value not in TIER_NAMES]
    if errors:
        raise ValueError("; ".join(errors) + f" (stages: {', '.join(Stage)}; tiers: {', '.join(Tier)})")
    merged = dict(base)
    merged.update({Stage(key): Tier(value) for key, value in raw.items()})
    return MappingProxyType(merged)


def native_priority(tier: Tier) -> int:
    """vLLM's `priority` body field for a tier: its rank (hot 0, warm 1, cold 2; lower is served earlier)."""
    return tier.rank
