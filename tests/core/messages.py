"""Builders for OpenAI chat messages, for the classifier tests."""

from __future__ import annotations

import json
from typing import Any


def user(text: str | list[dict[str, Any]]) -> dict[str, Any]:
    return {"role": "user", "content": text}


def call(name: str, call_id: str = "", **arguments: Any) -> dict[str, Any]:
    return {
        "id": call_id or f"call_{name}",
        "type": "function",
        "function": {"name": name, "arguments": json.dumps(arguments)},
    }


def assistant(*calls: dict[str, Any], content: str | None = None) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if calls:
        message["tool_calls"] = list(calls)
    return message


def result(call_id: str, text: str | list[dict[str, Any]]) -> dict[str, Any]:
    return {"role": "tool", "tool_call_id": call_id, "content": text}


def turn(name: str, output: str, **arguments: Any) -> list[dict[str, Any]]:
    """One assistant tool call and its result."""
    return [assistant(call(name, **arguments)), result(f"call_{name}", output)]


PYTEST_FAIL = "tests/test_x.py::test_a FAILED\n===== 1 failed, 4 passed in 0.2s ====="
PYTEST_PASS = "===== 5 passed in 0.2s ====="
TASK = "Implement the feature described in ISSUE.md"
