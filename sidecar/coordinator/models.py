"""`GET /v1/models`: the upstreams' model lists (one: its entries unchanged; several: their union), then `auto`
and the model aliases the coordinator resolves itself. One upstream's error answer passes through unchanged."""

from __future__ import annotations

from typing import Any

import httpx
from starlette.responses import JSONResponse, Response

from sidecar.coordinator.errors import ErrorKind, ProxyError
from sidecar.coordinator.state import CoordinatorState


async def list_models(state: CoordinatorState) -> Response:
    data: list[dict[str, Any]] = []
    seen: set[str] = set()
    alone = len(state.pool.upstreams) == 1
    for upstream in state.pool.upstreams:
        replica = state.pool.pick_replica(upstream, "models")
        try:
            response = await state.upstreams.get(upstream, replica, "/v1/models")
        except ProxyError as failed:
            state.telemetry.error(failed.kind)
            if alone:
                return Response(failed.body(), status_code=failed.status, media_type="application/json")
            continue
        listed = _model_list(response)
        if listed is None and alone:
            return Response(
                response.content,
                status_code=response.status_code,
                media_type=response.headers.get("content-type", "application/json"),
            )
        for model in listed or []:
            if model.get("id") not in seen:
                seen.add(str(model.get("id")))
                data.append(model)
    if not data:
        error = ProxyError(502, ErrorKind.UNREACHABLE, "no upstream answered /v1/models")
        return Response(error.body(), status_code=502, media_type="application/json")
    data += [m for m in coordinator_models(state) if m["id"] not in seen]
    return JSONResponse({"object": "list", "data": data})


def coordinator_models(state: CoordinatorState) -> list[dict[str, Any]]:
    """The names the coordinator resolves itself: `auto` (routed) and each model alias (`large`, `small`, ...),
    so clients that offer only listed models can offer routing too."""
    entries = [{"id": "auto", "object": "model", "created": 0, "owned_by": "goose-sidecar"}]
    for upstream in state.pool.upstreams:
        entry: dict[str, Any] = {"id": upstream.alias, "object": "model", "created": 0, "owned_by": "goose-sidecar"}
        if upstream.served_names:
            entry["root"] = upstream.served_names[0]
        entries.append(entry)
    return entries


def _model_list(response: httpx.Response) -> list[dict[str, Any]] | None:
    """The entries of a 200 OpenAI model list, or None for anything else."""
    if response.status_code != 200:
        return None
    try:
        body = response.json()
    except ValueError:
        return None
    data = body.get("data") if isinstance(body, dict) else None
    return [m for m in data if isinstance(m, dict)] if isinstance(data, list) else None
