"""The one way to the upstreams: every call the coordinator sends a model (real and speculative, chat calls,
model lists, health checks, metrics scrapes) goes through `UpstreamClient`.

It owns, in one place:
- the header rules (`forward_headers`, `headers`): the client's headers that go upstream, then the upstream's
  configured ones and the coordinator's own (`outbound.merge_headers`): `x-request-id`, Modal's session header
  and vLLM's session id;
- native priority (`body`): vLLM's integer `priority` added to the body only where the upstream orders by it,
  never over the client's own;
- replica accounting and breaker feedback (`open` picks a replica and counts the call in flight there; `close`
  gives it back and tells the breaker how it went), with retries before any byte reached the client;
- the translation of transport errors into the project's (`upstream_errors`): nothing outside this module
  catches an httpx error from an upstream.

Completions (`open` / `chunks` / `close`, real and speculative) go through `relay`, the lean HTTP/1.1 client
(`h1client.H1Pool`: asyncio protocols and httptools' parser, its errors httpx's classes so they translate the
same). A redirect answer (Modal answers long calls with 303 to a result URL) is followed by the replica's httpx
client, whose request hook keeps the upstream's secrets from other origins (`outbound.redirect_guard`). The small
requests (health, model lists, metrics) use httpx: each replica can have its own client (`replica_clients`, by
replica URL; build each with `app.make_client(config)`), replicas without one share `http`.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import anyio
import httpx

from sidecar.coordinator.errors import ErrorKind, ProxyError, translate_upstream_exception
from sidecar.coordinator.h1client import H1Pool
from sidecar.coordinator.h1client import Response as H1Response
from sidecar.coordinator.outbound import merge_headers
from sidecar.coordinator.upstream import Replica, Upstream, UpstreamPool, parse_vllm_metrics
from sidecar.core.admission import UpstreamMetrics
from sidecar.core.breaker import backoff_s
from sidecar.core.engine_admission import ScrapeFailure
from sidecar.core.openai_request import encode_body
from sidecar.core.wire import (
    AGENT_HEADER,
    MODAL_SESSION_HEADER,
    PRIORITY_HEADER,
    REQUEST_ID_HEADER,
    VLLM_SESSION_HEADER,
)
from sidecar.obs import get_logger

log = get_logger("sidecar.coordinator.upstream_client")

# Request headers that stay here: hop-by-hop ones, those httpx sets itself, and the coordinator's own.
# Everything else reaches the upstream as the client sent it. (`authorization` is decided per call.)
_DROP_HEADERS = frozenset(
    {
        "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "proxy-connection", "te",
        "trailer", "transfer-encoding", "upgrade", "host", "content-length", "accept-encoding", "authorization",
        AGENT_HEADER, PRIORITY_HEADER, REQUEST_ID_HEADER,
    }
)  # fmt: skip
RETRY_STATUSES = frozenset({502, 503})
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
RETRY_KINDS = frozenset({ErrorKind.UNREACHABLE, ErrorKind.STREAM_BROKEN})


@contextlib.contextmanager
def upstream_errors(url: str) -> Iterator[None]:
    """Inside, an httpx failure talking to `url` is raised as the ProxyError the client gets."""
    try:
        yield
    except httpx.HTTPError as exc:
        raise translate_upstream_exception(exc, url) from exc


def forward_headers(client_headers: Mapping[str, str], keys_on: bool) -> dict[str, str]:
    """The client's request headers that go upstream with its call (and with a speculative call made for it).
    The client's key is for the coordinator when keys are on; otherwise it is passed through (plain proxy)."""
    headers = {name: value for name, value in client_headers.items() if name not in _DROP_HEADERS}
    authorization = client_headers.get("authorization")
    if authorization and not keys_on:
        headers["authorization"] = authorization
    return headers


@dataclass(frozen=True)
class UpstreamCall:
    """One POST to send: `path` under the replica's `/v1/`, its body bytes and headers, the agent (replica
    affinity) and how many times to re-send it before any byte reached the client (None: the configured)."""

    upstream: Upstream
    path: str
    body: bytes
    headers: httpx.Headers
    agent: str
    retries: int | None = None


class Redirected:
    """The answer at the end of a redirect, read through httpx; the same shape as `h1client.Response`."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self.status = response.status_code
        self.headers: list[tuple[bytes, bytes]] = response.headers.raw

    def header(self, name: bytes) -> bytes | None:
        value = self.response.headers.get(name.decode("latin-1"))
        return None if value is None else value.encode("latin-1")

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self.response.aiter_raw():
            yield chunk

    async def aclose(self) -> None:
        await self.response.aclose()


@dataclass
class Opened:
    """A response being read, and the replica it holds a place on until `UpstreamClient.close`."""

    response: H1Response | Redirected
    replica: Replica
    reader: AsyncGenerator[bytes, None] | None = None  # the body's iterator, once `UpstreamClient.chunks` made it
    closed: bool = False


class UpstreamClient:
    def __init__(
        self,
        pool: UpstreamPool,
        http: httpx.AsyncClient,
        relay: H1Pool,
        *,
        retries: int,
        retry_backoff_s: float,
        replica_clients: Mapping[str, httpx.AsyncClient] | None = None,
        on_retry: Callable[[Upstream], None] | None = None,
    ) -> None:
        self.pool = pool
        self.http = http
        self.relay = relay
        self.retries = retries
        self.retry_backoff_s = retry_backoff_s
        self.replica_clients = dict(replica_clients or {})
        self.on_retry = on_retry

    def http_for(self, url: str) -> httpx.AsyncClient:
        """The httpx client for the replica at `url`: its own where it has one, else the shared one."""
        return self.replica_clients.get(url, self.http)

    # --- what goes out ---------------------------------------------------------------------------------------

    @staticmethod
    def headers(
        upstream: Upstream,
        agent: str,
        forwarded: Mapping[str, str],
        *,
        request_id: str | None = None,
        session: str | None = None,
    ) -> httpx.Headers:
        """The headers of a call for `agent`: `forwarded` (the client's, see `forward_headers`), then
        the coordinator's, which replace a client's of the same name in any case (outbound.py)."""
        headers = {"content-type": "application/json", "accept-encoding": "identity"}
        if request_id is not None:
            headers[REQUEST_ID_HEADER] = request_id
        headers.update(forwarded)
        # Modal routes a session to one replica (best effort), keeping the agent's prefix cache warm there.
        headers = merge_headers(headers, {**upstream.headers, MODAL_SESSION_HEADER: agent})
        if upstream.session_id and session:
            headers[VLLM_SESSION_HEADER] = session  # vLLM 0.33+'s session id (reference/vllm.md)
        # latin-1, as HTTP/1.1 reads header bytes: a client's obs-text value goes on as the bytes it sent.
        return httpx.Headers(headers, encoding="latin-1")

    @staticmethod
    def body(upstream: Upstream, body: Mapping[str, Any], encoded: bytes, priority: int | None) -> bytes:
        """`encoded` (the body's bytes, sent unchanged when nothing is added), with vLLM's `priority` added only
        where the upstream orders by it (vLLM accepts and ignores it otherwise, so sending it would only
        pretend), never over the client's own, and never 0 (vLLM's default)."""
        if not priority or not upstream.native_priority or "priority" in body:
            return encoded
        return encode_body(dict(body, priority=priority))

    # --- a streamed call -------------------------------------------------------------------------------------

    async def open(self, call: UpstreamCall) -> Opened:
        """Send `call` and return its response (any status) holding a place on its replica; give it back with
        `close`. Retried (with backoff, on another replica when there is one) while no byte has reached the
        client: connection failures and 502/503 answers (a Modal replica cold-starting, a vLLM restarting).
        Timeouts are not retried (the upstream may be working on it). Raises ProxyError when it failed."""
        retries = self.retries if call.retries is None else call.retries
        tried: set[str] = set()
        attempt = 0
        while True:
            replica = self.pool.pick_replica(call.upstream, call.agent, exclude=tried)
            outcome = await self._send(call, replica)
            retryable = self._retryable(outcome, replica)
            if not retryable or attempt >= retries:
                if isinstance(outcome, ProxyError):
                    log.warning("upstream_failed", url=replica.url, kind=outcome.kind, reason=outcome.message)
                    raise outcome
                return outcome
            if isinstance(outcome, Opened):
                await self.close(outcome, ok=None)
            attempt += 1
            tried.add(replica.url)
            if self.on_retry is not None:
                self.on_retry(call.upstream)
            delay = backoff_s(attempt, self.retry_backoff_s, jitter=random.random())
            log.info("upstream_retry", url=replica.url, attempt=attempt, delay_s=round(delay, 3))
            await anyio.sleep(delay)

    async def _send(self, call: UpstreamCall, replica: Replica) -> Opened | ProxyError:
        """One attempt; the replica counts it in flight while a response is open."""
        url = f"{replica.url}/v1/{call.path}"
        replica.in_flight += 1
        try:
            with upstream_errors(replica.url):
                response = await self.relay.request("POST", url, call.headers.raw, call.body)
                if response.status in REDIRECT_STATUSES and self.http_for(replica.url).follow_redirects:
                    location = response.header(b"location")
                    if location is not None:
                        response.close()
                        return Opened(await self._follow(call, replica, url, response.status, location), replica)
                return Opened(response, replica)
        except ProxyError as error:
            replica.in_flight -= 1
            return error
        except BaseException:
            replica.in_flight -= 1
            raise

    async def _follow(self, call: UpstreamCall, replica: Replica, url: str, status: int, location: bytes) -> Redirected:
        """Follow a redirect with the replica's httpx client (it follows any further ones, and its request hook
        strips the upstream's secrets from a request to another origin). 303, and 301/302 after a POST, become a
        GET without the body, as browsers and httpx do; 307/308 re-send the POST."""
        client = self.http_for(replica.url)
        target = httpx.URL(url).join(location.decode("latin-1"))
        get = status in (301, 302, 303)
        headers = call.headers.copy()
        if get:
            headers.pop("content-type", None)
        request = client.build_request(
            "GET" if get else "POST", target, content=None if get else call.body, headers=headers
        )
        return Redirected(await client.send(request, stream=True))

    def _retryable(self, outcome: Opened | ProxyError, replica: Replica) -> bool:
        """Breaker feedback for one attempt's outcome, and whether re-sending it may help."""
        if isinstance(outcome, ProxyError):
            self.pool.failed(replica)
            return outcome.kind in RETRY_KINDS
        if outcome.response.status >= 500:
            self.pool.failed(replica)
        return outcome.response.status in RETRY_STATUSES

    def chunks(self, opened: Opened) -> AsyncIterator[bytes]:
        """The response body's bytes as they arrive, unchanged; a broken stream raises ProxyError. `close`
        finishes the iterator too, however its reader stopped."""
        opened.reader = _translated(opened.response, urlsplit(opened.replica.url).hostname or "upstream")
        return opened.reader

    async def close(self, opened: Opened, *, ok: bool | None) -> None:
        """Give back the replica's place (once) and close the response; `ok`: the whole answer arrived (the
        breaker hears success), False: it broke (failure), None: it says nothing (cancelled, or retried)."""
        if opened.closed:
            return
        opened.closed = True
        if ok is True:
            self.pool.succeeded(opened.replica)
        elif ok is False:
            self.pool.failed(opened.replica)
        opened.replica.in_flight -= 1
        with anyio.CancelScope(shield=True):
            if opened.reader is not None:
                await opened.reader.aclose()
            await opened.response.aclose()

    # --- small requests --------------------------------------------------------------------------------------

    async def get(
        self, upstream: Upstream, replica: Replica, path: str, timeout_s: float | None = None
    ) -> httpx.Response:
        """GET `path` of a replica with the upstream's headers (model lists, health, metrics). Raises ProxyError
        when it could not be reached; any status is returned."""
        client = self.http_for(replica.url)
        kwargs: dict[str, Any] = {} if timeout_s is None else {"timeout": timeout_s}
        with upstream_errors(replica.url):
            return await client.get(f"{replica.url}{path}", headers=upstream.headers, **kwargs)

    # --- health and metrics ----------------------------------------------------------------------------------

    async def check(self, check_timeout: float = 5.0, only: Upstream | None = None) -> None:
        """Check every replica (of `only`, when given) once, concurrently: health, and served names where not
        yet known."""
        upstreams = self.pool.upstreams if only is None else [only]
        await asyncio.gather(*(self._check_replica(u, r, check_timeout) for u in upstreams for r in u.replicas))

    async def _check_replica(self, upstream: Upstream, replica: Replica, check_timeout: float) -> None:
        """`/health`, as vLLM and the simulator serve it; an OpenAI-compatible server without it (a hosted API,
        another proxy): a model list that answers is its health."""
        try:
            response = await self.get(upstream, replica, "/health", check_timeout)
            healthy = response.status_code == 200
            error = None if healthy else f"/health answered {response.status_code}"
            models = None
            if response.status_code in (404, 405):
                models = await self.get(upstream, replica, "/v1/models", check_timeout)
                healthy = models.status_code == 200
                error = None if healthy else f"{error}, /v1/models answered {models.status_code}"
            if healthy and not upstream.served_names:
                if models is None:
                    models = await self.get(upstream, replica, "/v1/models", check_timeout)
                if models.status_code == 200:
                    data = models.json().get("data", [])
                    upstream.served_names = [m["id"] for m in data if isinstance(m, dict) and "id" in m]
        except ProxyError as exc:
            healthy, error = False, f"{type(exc.__cause__).__name__}: {exc.__cause__}"
        except ValueError as exc:
            healthy, error = False, f"{type(exc).__name__}: {exc}"
        if healthy != replica.healthy:
            log.info("upstream_health", alias=upstream.alias, url=replica.url, healthy=healthy, error=error)
        replica.healthy, replica.last_error, replica.last_check = healthy, error, time.monotonic()

    async def scrape(self, upstream: Upstream, scrape_timeout: float = 2.0) -> UpstreamMetrics | ScrapeFailure:
        """One /metrics scrape of every replica of `upstream`, merged (sums; KV usage the max). Without a
        snapshot: NOT_VLLM when some replica answered 200 or 404 without vLLM's metrics (another kind of server),
        else UNREACHABLE (no answer, or an error status such as a starting vLLM's or a proxy's 502/503)."""
        snapshots = []
        failure = ScrapeFailure.UNREACHABLE
        for replica in upstream.replicas:
            try:
                response = await self.get(upstream, replica, "/metrics", scrape_timeout)
            except ProxyError:
                continue
            parsed = parse_vllm_metrics(response.text, time.monotonic()) if response.status_code == 200 else None
            if parsed is not None:
                snapshots.append(parsed)
            elif response.status_code in (200, 404):
                failure = ScrapeFailure.NOT_VLLM
        return merge_metrics(snapshots) if snapshots else failure

    async def watch_health(self, interval: float) -> None:
        """Re-check health forever (run as a task; cancel to stop)."""
        while True:
            await asyncio.sleep(interval)
            with contextlib.suppress(Exception):
                await self.check()


async def _translated(response: H1Response | Redirected, url: str) -> AsyncGenerator[bytes, None]:
    with upstream_errors(url):
        async for chunk in response:
            yield chunk


def merge_metrics(snapshots: list[UpstreamMetrics]) -> UpstreamMetrics:
    """Several replicas' snapshots as one upstream's: sums, the highest KV usage, the oldest scrape time."""
    return UpstreamMetrics(
        waiting=sum(s.waiting for s in snapshots),
        running=sum(s.running for s in snapshots),
        kv_usage=max(s.kv_usage for s in snapshots),
        preemptions_total=sum(s.preemptions_total for s in snapshots),
        scraped_at=min(s.scraped_at for s in snapshots),
        kv_capacity_tokens=sum(s.kv_capacity_tokens or 0 for s in snapshots) or None,
        kv_block_tokens=next((s.kv_block_tokens for s in snapshots if s.kv_block_tokens), None),
        prefix_cache_hits_total=_sum_known(s.prefix_cache_hits_total for s in snapshots),
        prefix_cache_queries_total=_sum_known(s.prefix_cache_queries_total for s in snapshots),
    )


def _sum_known(values: Iterable[float | None]) -> float | None:
    """The sum, or None when any replica did not say (a partial sum would look like a restarted counter)."""
    known = list(values)
    return None if any(v is None for v in known) else sum(v for v in known if v is not None)
