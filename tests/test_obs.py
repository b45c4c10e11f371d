"""Logging: level filtering before anything is built, request fields per task, the caller's file and line."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import Iterator

import pytest

from sidecar.obs import bind_request, clear_request, configure_logging, get_logger


@pytest.fixture
def stream() -> Iterator[io.StringIO]:
    out = io.StringIO()
    configure_logging("warning", "json", stream=out)
    try:
        yield out
    finally:
        configure_logging("info", "console")  # the suite's setting (tests/conftest.py)


def lines(out: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in out.getvalue().splitlines()]


def test_lines_below_the_level_are_dropped_and_the_rest_carry_the_request(stream: io.StringIO) -> None:
    log = get_logger("tests.obs")
    clear_request()
    bind_request(request_id="r1", agent_id=None)
    bind_request(tier="hot")
    log.info("request", status="200")
    log.warning("stream_broken", bytes=3)
    clear_request()
    log.error("after", request_id="own")
    first, second = lines(stream)
    assert first["event"] == "stream_broken" and first["request_id"] == "r1" and first["tier"] == "hot"
    assert "agent_id" not in first  # None is not bound
    assert second == {**second, "event": "after", "request_id": "own"} and "tier" not in second
    configure_logging("info", "json", stream=stream)  # a later configuration applies to loggers made before
    log.info("request", status="200")
    assert lines(stream)[-1]["event"] == "request"


async def test_each_task_has_its_own_request_fields(stream: io.StringIO) -> None:
    log = get_logger("tests.obs")

    async def call(request_id: str) -> None:
        clear_request()
        bind_request(request_id=request_id)
        await asyncio.sleep(0)
        log.warning("done")

    await asyncio.gather(call("a"), call("b"))
    assert sorted(str(line["request_id"]) for line in lines(stream)) == ["a", "b"]


def test_records_name_the_callers_file_and_line(stream: io.StringIO) -> None:
    seen: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record)

    handler = Keep()
    logging.getLogger().addHandler(handler)
    try:
        get_logger("tests.obs").warning("here")
    finally:
        logging.getLogger().removeHandler(handler)
    assert (
        seen and seen[0].filename == "test_obs.py" and seen[0].funcName == "test_records_name_the_callers_file_and_line"
    )
