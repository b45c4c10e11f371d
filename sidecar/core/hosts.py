"""Which `Host` (and `Origin`) a server accepts: pure matching, shared by the sidecar and the coordinator.

A pattern is `name` (that exact Host header), `name:port`, or `name:*` (that name with any port, or none);
`*` alone accepts everything. A page on another site reaches a server on loopback or a private network through
the visitor's browser (DNS rebinding gives it a name that resolves there): its requests carry that site's name
in `Host` and `Origin`, so a server that answers only the names it is reached by is not readable from the web.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from urllib.parse import urlsplit

LOOPBACK = ("127.0.0.1:*", "localhost:*", "[::1]:*")


def host_patterns(extra: Iterable[str], *, bound: str | None = None) -> list[str]:
    """Loopback, the bound address when it is a specific one, then each extra host (a bare name allows any port)."""
    patterns = list(LOOPBACK)
    names = list(extra)
    if bound and bound not in ("0.0.0.0", "::", "", "[::]"):
        names.append(f"[{bound}]" if ":" in bound and not bound.startswith("[") else bound)
    for host in names:
        if host == "*":
            return ["*"]
        has_port = ":" in host.lstrip("[").split("]")[-1]
        patterns += [host] if has_port else [host, f"{host}:*"]
    return patterns


def host_name(host: str) -> str:
    """`name:port` -> `name`; `[v6]:port` -> `[v6]`; a name without a port is itself."""
    if host.startswith("["):
        return host[: host.find("]") + 1] if "]" in host else host
    return host.rsplit(":", 1)[0]


def host_allowed(host: str | None, allowed: Sequence[str]) -> bool:
    """Whether a `Host` header value matches one of `allowed`; '*' allows any, a missing Host none."""
    if "*" in allowed:
        return True
    if not host:
        return False
    host = host.strip().lower()
    name = host_name(host)
    for pattern in allowed:
        pattern = pattern.lower()
        if pattern == host or (pattern.endswith(":*") and pattern[:-2] == name):
            return True
    return False


def origin_allowed(origin: str | None, allowed: Sequence[str]) -> bool:
    """A browser's `Origin`: absent (not a browser, or same-origin GET) is allowed; `null` (sandboxed frames,
    file: pages) never; otherwise its host must be allowed like a Host header."""
    if origin is None:
        return True
    if "*" in allowed:
        return True
    try:
        parts = urlsplit(origin.strip())
    except ValueError:
        return False
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return False
    return host_allowed(parts.netloc, allowed)
