"""Logging: structlog to stderr, JSON lines when not on a terminal, a readable console otherwise.

Stdout is never written to: the MCP stdio transport owns it. Per-request fields (request id, agent id,
session id, tier) are bound with `bind_request(...)` (one context variable, so each request task has its own)
and appear on every line logged while that request is handled, including lines from the standard `logging`
module (uvicorn, httpx, mcp).

Cheap when off: the coordinator logs and binds on every call, so a `get_logger` logger compares the level with
the configured one before anything else (a line below it costs one comparison, no structlog logger is built),
and binding is one `ContextVar.set` per call site.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping, MutableMapping
from contextvars import ContextVar
from types import MappingProxyType
from typing import Any, Literal

import structlog

LogFormat = Literal["auto", "json", "console"]

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}
# The level `configure_logging` set: `Logger` drops lines below it before building anything.
_threshold = logging.NOTSET  # structlog's own default before any configuration: everything
# The fields `bind_request` bound for the current request (its task's context).
_NO_FIELDS: Mapping[str, Any] = MappingProxyType({})
_REQUEST_FIELDS: ContextVar[Mapping[str, Any]] = ContextVar("sidecar_request_fields", default=_NO_FIELDS)


def merge_request_fields(_logger: Any, _method: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor: the request's bound fields, under what the line itself says (as structlog's
    `merge_contextvars`)."""
    for key, value in _REQUEST_FIELDS.get().items():
        event_dict.setdefault(key, value)
    return event_dict


def configure_logging(level: str = "info", fmt: LogFormat = "auto", stream: Any = None) -> None:
    """Route structlog and stdlib logging to `stream` (default stderr). Safe to call more than once."""
    stream = sys.stderr if stream is None else stream
    console = fmt == "console" or (fmt == "auto" and hasattr(stream, "isatty") and stream.isatty())
    global _threshold
    _threshold = _LEVELS.get(level, logging.INFO)
    shared: list[Any] = [
        merge_request_fields,
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: Any = (
        structlog.dev.ConsoleRenderer(colors=False) if console else structlog.processors.JSONRenderer(sort_keys=False)
    )
    handler = logging.StreamHandler(stream)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[*shared, structlog.stdlib.ExtraAdder()],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                renderer,
            ],
        )
    )
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(_LEVELS.get(level, logging.INFO))
    # Third-party chatter that would drown request logs at info level.
    for noisy in ("httpx", "httpcore", "uvicorn.access", "mcp", "watchdog"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        # Drops calls below the level before any processor runs (the request path logs on every call).
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS.get(level, logging.INFO)),
        cache_logger_on_first_use=False,
    )


_METHOD_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "exception": logging.ERROR,
}


def _dropped(*_args: Any, **_fields: Any) -> None:
    return None


class Logger:
    """A structlog logger whose methods below the configured level (`configure_logging`) are a no-op: the check
    is made when the method is looked up, so an enabled line is the structlog call itself, made from the caller's
    frame (the records' file and line stay the caller's)."""

    __slots__ = ("_logger",)

    def __init__(self, name: str) -> None:
        self._logger: Any = structlog.stdlib.get_logger(name)

    def __getattr__(self, method: str) -> Any:
        level = _METHOD_LEVELS.get(method)
        if level is not None and level < _threshold:
            return _dropped
        return getattr(self._logger, method)


def get_logger(name: str) -> Logger:
    return Logger(name)


def logging_enabled(level: int) -> bool:
    """Whether a line at `level` (a `logging` level) would be written: callers skip building costly fields."""
    return _threshold <= level


def bind_request(**fields: Any) -> None:
    """Bind fields (request_id, agent_id, session_id, tier, ...) to every log line of the current task (None
    values are not bound)."""
    _REQUEST_FIELDS.set({**_REQUEST_FIELDS.get(), **{k: v for k, v in fields.items() if v is not None}})


def clear_request() -> None:
    """Forget what `bind_request` bound in the current task."""
    _REQUEST_FIELDS.set(_NO_FIELDS)
