"""Tiers and the stage -> tier mapping."""

from __future__ import annotations

import pytest

from sidecar.core.stages import (
    DEFAULT_STAGE_TIERS,
    TIERS,
    Stage,
    Tier,
    native_priority,
    stage_tiers_from,
)

# ---------------------------------------------------------------------------------------------------------------
# Tiers and the stage -> tier mapping


def test_the_seed_mapping() -> None:
    hot = {stage for stage, tier in DEFAULT_STAGE_TIERS.items() if tier is Tier.HOT}
    warm = {stage for stage, tier in DEFAULT_STAGE_TIERS.items() if tier is Tier.WARM}
    cold = {stage for stage, tier in DEFAULT_STAGE_TIERS.items() if tier is Tier.COLD}
    assert (hot, warm, cold) == (
        {Stage.CODE_EDIT, Stage.TEST_ANALYZE},
        {Stage.PLAN, Stage.COMMIT_MSG},
        {Stage.EXPLORE, Stage.DOCS},
    )


@pytest.mark.parametrize(("tier", "rank"), [(Tier.HOT, 0), (Tier.WARM, 1), (Tier.COLD, 2)])
def test_rank_and_native_priority(tier: Tier, rank: int) -> None:
    assert tier.rank == rank == native_priority(tier)
    assert TIERS[rank] is tier


def test_stage_tiers_from_overrides_only_what_it_names() -> None:
    tiers = stage_tiers_from({"docs": "warm", "plan": "hot"})
    assert tiers[Stage.DOCS] is Tier.WARM
    assert tiers[Stage.PLAN] is Tier.HOT
    assert tiers[Stage.EXPLORE] is Tier.COLD


def test_stage_tiers_from_reports_every_error() -> None:
    with pytest.raises(ValueError, match="unknown stage 'deploy'") as caught:
        stage_tiers_from({"deploy": "hot", "docs": "lukewarm"})
    assert "unknown tier 'lukewarm'" in str(caught.value)
