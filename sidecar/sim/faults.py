"""Fault injection: which fault (if any) a request suffers, from its `X-Sim-Fault` header or the configured rates.

Faults: `500` and `503` answer at once with vLLM's error shape; `error_frame` sends an in-band
`data: {"error": ...}` frame then `[DONE]` halfway through a stream (after HTTP 200); `drop` closes the
connection halfway; `stall` stops sending halfway for `fault_stall_s` seconds, then carries on.
The rates are checked in that order against one uniform draw per request, so they must sum to at most 1.
"""

from __future__ import annotations

from enum import StrEnum

from sidecar.sim.settings import SimSettings

HEADER = "x-sim-fault"


class Fault(StrEnum):
    NONE = "none"
    HTTP_500 = "500"
    HTTP_503 = "503"
    ERROR_FRAME = "error_frame"
    DROP = "drop"
    STALL = "stall"


class UnknownFault(ValueError):
    def __init__(self, value: str) -> None:
        known = ", ".join(f.value for f in Fault if f is not Fault.NONE)
        super().__init__(f"unknown X-Sim-Fault {value!r} (one of: {known})")


def pick_fault(header: str | None, settings: SimSettings, draw: float) -> Fault:
    """The header's fault when given (raises UnknownFault for a bad value), else one drawn from the rates."""
    if header is not None and header.strip():
        try:
            return Fault(header.strip().lower())
        except ValueError:
            raise UnknownFault(header) from None
    edge = 0.0
    for fault, rate in (
        (Fault.HTTP_500, settings.fault_500_rate),
        (Fault.HTTP_503, settings.fault_503_rate),
        (Fault.ERROR_FRAME, settings.fault_error_frame_rate),
        (Fault.DROP, settings.fault_drop_rate),
        (Fault.STALL, settings.fault_stall_rate),
    ):
        edge += rate
        if draw < edge:
            return fault
    return Fault.NONE


def fault_point(total_tokens: int) -> int:
    """After how many streamed tokens a mid-stream fault strikes: halfway, at least one."""
    return max(1, total_tokens // 2)
