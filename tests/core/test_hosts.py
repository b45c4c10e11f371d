"""Adversarial table for Host and Origin matching (sidecar/core/hosts.py)."""

from __future__ import annotations

import pytest

from sidecar.core.hosts import LOOPBACK, host_allowed, host_patterns, origin_allowed

PATTERNS = host_patterns(["coordinator", "box:9000"], bound="10.0.0.5")


@pytest.mark.parametrize(
    ("host", "allowed"),
    [
        ("127.0.0.1:8080", True),
        ("127.0.0.1", True),
        ("LOCALHOST:1", True),
        ("[::1]:8080", True),
        ("coordinator", True),
        ("coordinator:8080", True),
        ("box:9000", True),
        ("10.0.0.5:8080", True),
        ("box:9001", False),
        ("box", False),
        ("coordinator.evil.example", False),
        ("evil-coordinator", False),
        ("127.0.0.1.nip.io:80", False),
        ("127.0.0.2", False),
        ("[::1", False),
        ("::1:80", False),
        ("10.0.0.50", False),
        ("", False),
        (None, False),
        ("coordinator\x00:80", False),
    ],
)
def test_host_allowed(host: str | None, allowed: bool) -> None:
    assert host_allowed(host, PATTERNS) is allowed


def test_a_wildcard_bind_adds_nothing_and_star_allows_all() -> None:
    assert host_patterns([], bound="0.0.0.0") == list(LOOPBACK)
    assert host_patterns([], bound="::") == list(LOOPBACK)
    assert host_patterns(["a", "*"]) == ["*"]
    assert host_allowed("anything", ["*"])
    assert "[fe80::1]:*" in host_patterns([], bound="fe80::1")


@pytest.mark.parametrize(
    ("origin", "allowed"),
    [
        (None, True),
        ("http://127.0.0.1:8080", True),
        ("https://coordinator", True),
        ("null", False),
        ("file://", False),
        ("https://evil.example", False),
        ("http://coordinator.evil.example", False),
        ("ftp://coordinator", False),
        ("coordinator", False),
        ("http://[::1", False),
        ("", False),
    ],
)
def test_origin_allowed(origin: str | None, allowed: bool) -> None:
    assert origin_allowed(origin, PATTERNS) is allowed
