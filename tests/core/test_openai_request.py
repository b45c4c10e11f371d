from __future__ import annotations

import json

import pytest

from sidecar.core.openai_request import Endpoint, RequestError, encode_body, parse_request

BASE = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


def raw(obj: object) -> bytes:
    return json.dumps(obj).encode()


def test_untouched_body_keeps_its_bytes() -> None:
    body = b'{"model": "m",  "messages": [{"role": "user", "content": "\\u00e9"}], "stream": true}'
    parsed = parse_request(body, Endpoint.CHAT)
    assert parsed.forward_body is body
    assert parsed.stream is True and parsed.agent_id is None and parsed.tier_word is None


def test_coordinator_fields_are_taken_out() -> None:
    body = {**BASE, "agent_id": "a-1", "priority": "hot", "latency_tolerance": "relaxed", "temperature": 0}
    parsed = parse_request(raw(body), Endpoint.CHAT)
    assert (parsed.agent_id, parsed.tier_word, parsed.latency_tolerance) == ("a-1", "hot", "relaxed")
    assert json.loads(parsed.forward_body) == {**BASE, "temperature": 0}


def test_integer_priority_is_vllms_and_stays() -> None:
    parsed = parse_request(raw({**BASE, "priority": -2}), Endpoint.CHAT)
    assert parsed.native_priority == -2 and parsed.tier_word is None
    assert json.loads(parsed.forward_body)["priority"] == -2


def test_completions_need_prompt_not_messages() -> None:
    assert parse_request(raw({"model": "m", "prompt": "x"}), Endpoint.COMPLETIONS).model == "m"
    with pytest.raises(RequestError, match="'prompt'"):
        parse_request(raw({"model": "m"}), Endpoint.COMPLETIONS)


@pytest.mark.parametrize(
    ("body", "param", "message"),
    [
        (b"", None, "not valid JSON"),
        (b"null", None, "must be a JSON object, got NoneType"),
        (raw({"messages": []}), "model", "missing required field 'model'"),
        (raw({"model": 3, "messages": []}), "model", "non-empty string"),
        (raw({"model": "", "messages": []}), "model", "non-empty string"),
        (raw({"model": "m"}), "messages", "missing required field 'messages'"),
        (raw({"model": "m", "messages": [1]}), "messages", "messages[0] must be an object"),
        (raw({"model": "m", "messages": [{"content": "x"}]}), "messages", "string 'role'"),
        (raw({**BASE, "stream": "yes"}), "stream", "'stream' must be true or false"),
        (raw({**BASE, "agent_id": 5}), "agent_id", "non-empty string"),
        (raw({**BASE, "priority": "urgent"}), "priority", "one of hot, warm, cold"),
        (raw({**BASE, "priority": 1.5}), "priority", "or an integer"),
        (raw({**BASE, "priority": True}), "priority", "or an integer"),
        (raw({**BASE, "latency_tolerance": "none"}), "latency_tolerance", "strict, relaxed"),
        (b"\xff", None, "not UTF-8"),
    ],
)
def test_errors_say_what_is_wrong(body: bytes, param: str | None, message: str) -> None:
    with pytest.raises(RequestError) as info:
        parse_request(body, Endpoint.CHAT)
    assert message in info.value.message
    assert info.value.param == param


def test_encode_body_is_compact_and_keeps_unicode() -> None:
    assert encode_body({"a": "é", "b": [1, 2]}) == '{"a":"é","b":[1,2]}'.encode()
