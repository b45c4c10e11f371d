"""Errors the coordinator answers itself, in vLLM's shape, and the one place upstream failures are translated.

    ProxyError                      an answer the coordinator gives instead of the upstream's
      ├── status 400 BadRequestError          malformed JSON, missing model/messages (never sent upstream)
      ├── status 403 PermissionDeniedError     an API key acting as another agent
      ├── status 401 AuthenticationError       API keys on and none / an unknown one given
      ├── status 404 NotFoundError             a model no upstream serves
      ├── status 413 RequestTooLargeError      body over the configured limit
      ├── status 431 RequestHeaderFieldsTooLarge  headers over the configured limit
      ├── status 429 RateLimitError            queue full (with Retry-After)
      ├── status 502 BadGatewayError           upstream unreachable, or the connection broke
      ├── status 503 ServiceUnavailableError   no healthy upstream
      └── status 504 GatewayTimeoutError       upstream timed out

An upstream that answers with its own error status is not a ProxyError: its status and body are relayed unchanged.
`ErrorKind` names outcomes for the errors metric; it is separate from the exception tree.
"""

from __future__ import annotations

import json
from enum import StrEnum

import httpx


class ErrorKind(StrEnum):
    BAD_REQUEST = "bad_request"
    UNAUTHORIZED = "unauthorized"
    FORBIDDEN = "forbidden"
    UNKNOWN_MODEL = "unknown_model"
    TOO_LARGE = "too_large"
    QUEUE_FULL = "queue_full"
    UNREACHABLE = "unreachable"
    TIMEOUT = "timeout"
    STREAM_BROKEN = "stream_broken"
    NO_UPSTREAM = "no_upstream"
    UPSTREAM_STATUS = "upstream_status"
    CLIENT_DISCONNECT = "client_disconnect"


_TYPES = {
    400: "BadRequestError",
    401: "AuthenticationError",
    403: "PermissionDeniedError",
    404: "NotFoundError",
    413: "RequestTooLargeError",
    429: "RateLimitError",
    431: "RequestHeaderFieldsTooLargeError",
    500: "InternalServerError",
    502: "BadGatewayError",
    503: "ServiceUnavailableError",
    504: "GatewayTimeoutError",
}


class ProxyError(Exception):
    def __init__(
        self,
        status: int,
        kind: ErrorKind,
        message: str,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.kind = kind
        self.message = message
        self.param = param
        self.headers = headers or {}

    def body(self) -> bytes:
        return error_body(self.status, self.message, self.param)


def error_body(status: int, message: str, param: str | None = None) -> bytes:
    """vLLM's (>= 0.10.1) error object: {"error": {"message", "type", "param", "code": <HTTP status>}}."""
    payload = {"error": {"message": message, "type": _TYPES.get(status, "Error"), "param": param, "code": status}}
    return json.dumps(payload).encode()


def sse_error_frame(status: int, message: str) -> bytes:
    """The in-band error vLLM sends when a stream fails after HTTP 200 went out, followed by [DONE]."""
    return b"data: " + error_body(status, message) + b"\n\ndata: [DONE]\n\n"


def translate_upstream_exception(exc: httpx.HTTPError, url: str) -> ProxyError:
    """Map an httpx failure talking to `url` to the answer the client gets (the only place this is decided)."""
    if isinstance(exc, httpx.TimeoutException):
        phase = {
            httpx.ConnectTimeout: "connecting to",
            httpx.ReadTimeout: "waiting for data from",
            httpx.WriteTimeout: "sending the request to",
            httpx.PoolTimeout: "waiting for a free connection to",
        }.get(type(exc), "talking to")
        return ProxyError(504, ErrorKind.TIMEOUT, f"upstream timed out {phase} {url}")
    if isinstance(exc, httpx.ConnectError):
        return ProxyError(502, ErrorKind.UNREACHABLE, f"upstream {url} is unreachable: {exc or type(exc).__name__}")
    return ProxyError(502, ErrorKind.STREAM_BROKEN, f"upstream {url} failed: {type(exc).__name__}: {exc}")
