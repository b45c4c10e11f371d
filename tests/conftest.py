"""Shared test fixtures. Tools a test needs from the system: skipped locally when absent, required under CI."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from sidecar.obs import configure_logging

configure_logging("info", "console")

# Property tests judge answers, never speed: no per-example deadline and no "too slow" health check, which fail on
# a loaded machine without any bug (seen under CI-like load). A test's own @settings still override the rest.
settings.register_profile("suite", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("suite")

ROOT = Path(__file__).resolve().parent.parent
NPM_TOOLS = ROOT / ".cache" / "npm-tools"

# The real-vLLM tier runs from scripts/test-vllm (which installs vLLM and sets this), never in the normal suite.
collect_ignore = [] if os.environ.get("GOOSE_SIDECAR_VLLM_TIER") else ["vllm"]


def require_tool(name: str, path: str | Path | None = None) -> str:
    """Return the executable for `name`; skip when missing, but fail under CI where .ci/run installs it."""
    found = str(path) if path is not None and Path(path).exists() else shutil.which(name)
    if found:
        return found
    message = f"{name} is not installed (.ci/run installs it; scripts/_npm_tools.sh for npm tools)"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)
    raise AssertionError("unreachable")
