"""Who may talk to an HTTP sidecar: a bearer token on every route but `/healthz`, and the Host check on all.

Anyone who reaches `/mcp` can `write_file` and `run_tests`, i.e. run code in the agent's workspace, and on a
shared container network every neighbour reaches it. So `SidecarGuard` (pure ASGI middleware, in front of the
whole app) answers:

- `403` when a browser says the request comes from another site's page (`Origin`);
- `421` when the `Host` header is not one the sidecar was told it is reached by (loopback, `--allowed-hosts`),
  on every route: the MCP SDK checks it on `/mcp` only, and a DNS-rebinding page could otherwise read `/stats`;
- `401` with `WWW-Authenticate: Bearer` when a token is configured and the request does not carry
  `Authorization: Bearer TOKEN` (compared in constant time), on every route except `/healthz` (container health
  checks carry no secret; it says only "up" and a generation counter) and `/peek` and `/early` (they take the
  sidecar's peek key, which travels only in the sidecar's events to its coordinator).

`resolve_token` is how `goose-sidecar mcp --http` finds its token: the setting (from the environment), else
the first line of `auth_token_file`; no token is a start-up error unless `insecure_no_auth` is set.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Sequence
from pathlib import Path

from starlette.types import ASGIApp, Receive, Scope, Send

from sidecar.core.hosts import host_allowed, origin_allowed

__all__ = ["MIN_TOKEN_CHARS", "SidecarGuard", "TokenError", "host_allowed", "resolve_token"]

MIN_TOKEN_CHARS = 16
OPEN_PATHS = frozenset({"/healthz"})  # no token needed
KEYED_PATHS = frozenset({"/peek", "/early"})  # the peek key in the query string


class TokenError(ValueError):
    """No usable token for an HTTP sidecar; the message says how to provide one."""


def resolve_token(token: str | None, token_file: Path | None, *, insecure_no_auth: bool) -> str | None:
    """The bearer token to require, or None only when the operator explicitly turned authentication off."""
    if token is not None and token.strip():
        value = token.strip()
    elif token_file is not None:
        try:
            lines = token_file.read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            raise TokenError(f"cannot read the sidecar's auth token file {token_file}: {exc.strerror}") from None
        value = lines[0].strip() if lines else ""
    elif insecure_no_auth:
        return None
    else:
        raise TokenError(
            "an HTTP sidecar needs a bearer token: anyone who reaches it can write files and run the tests. Set "
            "GOOSE_SIDECAR_SIDECAR_AUTH_TOKEN (or --auth-token-file FILE); `goose-sidecar deploy secrets` "
            "generates one per agent. --insecure-no-auth turns the check off (loopback-only setups)"
        )
    if len(value) < MIN_TOKEN_CHARS or not value.isprintable() or " " in value:
        raise TokenError(f"the sidecar's auth token must be at least {MIN_TOKEN_CHARS} printable characters, no spaces")
    return value


class SidecarGuard:
    """ASGI middleware: the Host check on every HTTP route, then the bearer token (see the module docstring)."""

    def __init__(self, app: ASGIApp, *, allowed_hosts: Sequence[str], token: str | None) -> None:
        self.app = app
        self.allowed_hosts = list(allowed_hosts)
        self.token = None if token is None else token.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = _headers(scope)
        path = scope.get("path", "")
        if not host_allowed(headers.get(b"host", b"").decode("latin-1"), self.allowed_hosts):
            await _answer(send, 421, "this Host header is not one the sidecar is reached by (--allowed-hosts)")
            return
        origin = headers.get(b"origin")
        if not origin_allowed(None if origin is None else origin.decode("latin-1"), self.allowed_hosts):
            await _answer(send, 403, "requests from another site's pages are refused (Origin)")
            return
        if self.token is not None and path not in OPEN_PATHS and path not in KEYED_PATHS:
            given = _bearer(headers.get(b"authorization", b""))
            if given is None or not secrets.compare_digest(given, self.token):
                await _answer(
                    send,
                    401,
                    "this sidecar requires its bearer token (Authorization: Bearer TOKEN)",
                    [(b"www-authenticate", b'Bearer realm="goose-sidecar"')],
                )
                return
        await self.app(scope, receive, send)


def _headers(scope: Scope) -> dict[bytes, bytes]:
    """The request's headers by lower-case name; a repeated Host or Authorization is refused as empty."""
    found: dict[bytes, bytes] = {}
    for name, value in scope.get("headers", []):
        key = bytes(name).lower()
        found[key] = b"" if key in found and key in (b"host", b"authorization") else bytes(value)
    return found


def _bearer(value: bytes) -> bytes | None:
    scheme, _, token = value.partition(b" ")
    token = token.strip()
    return token if scheme.lower() == b"bearer" and token else None


async def _answer(send: Send, status: int, message: str, extra: list[tuple[bytes, bytes]] | None = None) -> None:
    body = json.dumps({"error": message}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *(extra or [])]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
