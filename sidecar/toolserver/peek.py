"""`POST /peek?key=KEY`: which tool results are already known, for the coordinator's LLM-level speculation.

The body is a list of `{name, arguments}`; the answer is a list of texts or nulls. Each text is exactly what
that call would return now (`Tools.peek`: cached and still valid), never computed. The key is random per
sidecar and travels only inside the `peek_url` of the sidecar's events, so only the coordinator it reports to
can ask; without it the answer is 404 (nothing to find here).
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from sidecar.obs import get_logger
from sidecar.toolserver.tools import Tools

log = get_logger(__name__)

PEEK_MAX_CALLS = 64  # one answer's tool calls; more is refused
PEEK_MAX_BYTES = 1024 * 1024


async def peek_calls(tools: Tools, calls: object) -> list[str | None]:
    """Per `{name, arguments}` call, the exact text it would return now if already known, else None.

    Raises ValueError for anything but a list of at most `PEEK_MAX_CALLS` items; a malformed item, or one
    whose arguments make the tool fail, is None (not known), never an error."""
    if not isinstance(calls, list) or len(calls) > PEEK_MAX_CALLS:
        raise ValueError(f"expected a list of at most {PEEK_MAX_CALLS} {{name, arguments}} objects")
    out: list[str | None] = []
    for call in calls:
        text = None
        if isinstance(call, dict) and isinstance(call.get("name"), str) and isinstance(call.get("arguments"), dict):
            try:
                text = await tools.peek(call["name"], call["arguments"])
            except Exception as exc:  # a malformed argument is "not known", never an error
                log.debug("peek failed", tool=call["name"], error=str(exc))
        out.append(text)
    return out


def peek_route(peek: Callable[[object], Awaitable[list[str | None]]], key: str) -> Route:
    """`POST /peek?key=KEY` answered by `peek(calls)`: 404 without the right key, 413 over
    `PEEK_MAX_BYTES` (counted while the body arrives, never buffered whole first), 400 for a malformed body."""

    async def endpoint(request: Request) -> Response:
        given = request.query_params.get("key", "")
        if not secrets.compare_digest(given.encode(), key.encode()):
            return JSONResponse({"error": "not found"}, status_code=404)
        raw = bytearray()
        async for chunk in request.stream():
            raw += chunk
            if len(raw) > PEEK_MAX_BYTES:
                return JSONResponse({"error": f"a peek is at most {PEEK_MAX_BYTES} bytes"}, status_code=413)
        try:
            return JSONResponse(await peek(json.loads(bytes(raw))))
        except ValueError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)

    return Route("/peek", endpoint, methods=["POST"])
