"""Helpers for the tests: wait for a condition, a clock advanced by hand.

Serving an app on a real loopback socket is `sidecar.serving.serve_app`; building a simulator-plus-coordinator
stack is `sidecar.stack`.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass


async def wait_until(
    check: Callable[[], bool | Awaitable[bool]], what: str = "the condition", limit_s: float = 30.0
) -> None:
    """Poll `check` (plain or async) until it is true; fail naming `what` after `limit_s`.

    `limit_s` bounds a failure only, never measures anything: a slow, loaded machine just polls longer.
    """
    deadline = time.monotonic() + limit_s
    while not await _holds(check):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {limit_s:g} s waiting for {what}")
        await asyncio.sleep(0.005)


async def _holds(check: Callable[[], bool | Awaitable[bool]]) -> bool:
    result = check()
    return bool(await result) if inspect.isawaitable(result) else bool(result)


@dataclass
class FakeClock:
    """A clock tests advance by hand; pass `clock.now` wherever a policy or shell takes `now`."""

    t: float = 0.0

    def now(self) -> float:
        return self.t

    def advance(self, seconds: float) -> float:
        self.t += seconds
        return self.t
