"""What the coordinator sends upstream on its own authority, and where it may go.

- `merge_headers(client, ours)`: the client's forwarded headers, then the coordinator's (the upstream's
  configured headers such as `Modal-Key`/`Modal-Secret`, and `Modal-Session-ID`). A client header with the same
  name in any case is dropped first: httpx sends both spellings, and the upstream took the client's, so an agent
  could pick its own Modal session (another agent's replica and prefix cache) or its own credentials.
- `redirect_guard(origins, secret_names)`: an httpx request hook. The client follows redirects (Modal answers
  long calls with 303 to a result URL); httpx drops `Authorization` on a cross-origin redirect but keeps every
  other header, so an upstream (or whoever controls its redirect) learnt the Modal secrets by redirecting
  elsewhere. The hook strips the configured upstream headers from any request to an origin that is not a
  configured replica's.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping
from urllib.parse import urlsplit

import httpx

ALWAYS_OURS = ("modal-session-id",)


def merge_headers(client: Mapping[str, str], ours: Mapping[str, str]) -> dict[str, str]:
    """`client` without any name `ours` (or `ALWAYS_OURS`) has in any case, then `ours`."""
    taken = {name.lower() for name in ours} | set(ALWAYS_OURS)
    merged = {name: value for name, value in client.items() if name.lower() not in taken}
    merged.update(ours)
    return merged


def origin_of(url: str | httpx.URL) -> tuple[str, str, int | None]:
    parts = urlsplit(str(url))
    default = {"http": 80, "https": 443}.get(parts.scheme)
    return parts.scheme, (parts.hostname or "").lower(), parts.port or default


def redirect_guard(
    replica_urls: Iterable[str], secret_names: Iterable[str]
) -> Callable[[httpx.Request], Awaitable[None]]:
    """A request hook: secrets (by header name, any case) go only to the configured replicas' origins."""
    origins = {origin_of(url) for url in replica_urls}
    names = {name.lower() for name in secret_names} | {"authorization"}

    async def strip(request: httpx.Request) -> None:
        if origin_of(request.url) in origins:
            return
        for name in list(request.headers):
            if name.lower() in names:
                del request.headers[name]

    return strip
