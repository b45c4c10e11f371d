from __future__ import annotations

import pytest

from sidecar.core.identity import Identity, IdentityConflict, IdentitySource, resolve_identity, valid_agent_id

S = IdentitySource


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({}, Identity("anonymous", S.ANONYMOUS)),
        ({"session_id": "20251124_1"}, Identity("20251124_1", S.SESSION, "20251124_1")),
        ({"session_id": "  "}, Identity("anonymous", S.ANONYMOUS)),
        ({"session_id": "bad id with spaces"}, Identity("anonymous", S.ANONYMOUS, "bad id with spaces")),
        ({"path_agent_id": "p", "session_id": "s"}, Identity("p", S.PATH, "s")),
        ({"header_agent_id": "h", "path_agent_id": "p"}, Identity("h", S.HEADER)),
        ({"body_agent_id": "b", "header_agent_id": "h", "path_agent_id": "p"}, Identity("b", S.BODY)),
        ({"body_agent_id": " b ", "session_id": "s"}, Identity("b", S.BODY, "s")),
        ({"body_agent_id": "", "header_agent_id": "h"}, Identity("h", S.HEADER)),
        ({"key_agent_id": "k"}, Identity("k", S.KEY)),
        ({"key_agent_id": "k", "header_agent_id": "k", "session_id": "s"}, Identity("k", S.KEY, "s")),
    ],
)
def test_precedence(kwargs: dict[str, str], expected: Identity) -> None:
    assert resolve_identity(**kwargs) == expected


@pytest.mark.parametrize(
    "kwargs",
    [
        {"key_agent_id": "k", "body_agent_id": "other"},
        {"key_agent_id": "k", "header_agent_id": "other"},
        {"key_agent_id": "k", "path_agent_id": "other"},
        {"header_agent_id": "../etc"},
        {"body_agent_id": "a\nb"},
        {"path_agent_id": "x" * 129},
    ],
)
def test_conflicts_and_malformed_ids_are_refused(kwargs: dict[str, str]) -> None:
    with pytest.raises(IdentityConflict):
        resolve_identity(**kwargs)


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        ("agent-7", True),
        ("a", True),
        ("team/a@b:c.d_e", True),
        ("", False),
        ("-x", False),
        ("a b", False),
        ("é", False),
        ("x" * 128, True),
        ("x" * 129, False),
    ],
)
def test_valid_agent_id(value: str, ok: bool) -> None:
    assert valid_agent_id(value) is ok
