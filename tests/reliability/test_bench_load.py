"""The load benchmark's own pieces: its paced upstream and stream reader on loopback, its verdicts and outcomes."""

from __future__ import annotations

import json
from urllib.parse import urlsplit

import pytest

from sidecar.bench.load import Level, Sample, Stream, outcome_of, paced_upstream_app, request_bytes
from sidecar.serving import serve_app


async def test_a_paced_stream_is_read_to_its_end() -> None:
    async with serve_app(paced_upstream_app(chunks=5, interval_s=0.01)) as url:
        port = urlsplit(url).port
        assert port is not None
        stream, delays = Stream(port), list[float]()
        try:
            ttft, worst = await stream.call(request_bytes(port, "bench-0"), delays)
            again = await stream.call(request_bytes(port, "bench-0"))  # the same keep-alive connection
        finally:
            stream.close()
    assert ttft > 0 and again[0] > 0
    assert 5 <= len(delays) <= 7  # 5 frames, the usage frame and [DONE], each stamped (one may straddle reads)
    assert all(0 <= d <= worst for d in delays) and worst < 5


def level(direct: list[float], proxied: list[float], errors: int = 0) -> Level:
    lv = Level(10, [Sample(False, t, t) for t in direct] + [Sample(True, t, t) for t in proxied])
    lv.frames = {False: direct, True: proxied}
    if errors:
        lv.errors["proxied: boom"] = errors
    return lv


@pytest.mark.parametrize(
    ("direct", "proxied", "errors", "passed"),
    [
        ([0.100] * 100, [0.105] * 100, 0, True),  # +5 ms
        ([0.100] * 100, [0.105] * 98 + [0.2, 0.2], 0, False),  # p99 +100 ms
        ([0.100] * 100, [0.101] * 100, 1, False),  # a failed call fails the level
    ],
)
def test_a_level_passes_on_p99_added_latency_and_no_failures(
    direct: list[float], proxied: list[float], errors: int, passed: bool
) -> None:
    assert level(direct, proxied, errors).passed(10.0) is passed


SSE = "text/event-stream"


@pytest.mark.parametrize(
    ("status", "content_type", "body", "expected"),
    [
        (200, SSE, b'data: {"choices": []}\n\ndata: [DONE]\n\n', "complete"),
        (200, SSE, b'data: {"choices": []}\n\ndata: {"error": {"message": "x"}}\n\ndata: [DONE]\n\n',
         "in-band error frame + [DONE]"),
        (200, SSE, b'data: {"choices": []}\n\n', "cut stream (no [DONE])"),
        (502, "application/json", json.dumps({"error": {"message": "down"}}).encode(), "HTTP 502 + error body"),
        (500, "text/plain", b"Internal Server Error", "HTTP 500 without an error body"),
    ],
)  # fmt: skip
def test_fault_outcomes(status: int, content_type: str, body: bytes, expected: str) -> None:
    assert outcome_of(status, content_type, body) == expected
