"""`goose-sidecar status [--watch | --json]`: the coordinator's `/status` as terminal tables (for SSH sessions),
or as JSON for scripts (per-agent usage and cost for charge-back: `agents[].usage`).

The same essentials as `/dashboard`: agents (the dashboard's order: queued longest-waiting first, then running,
then idle) with each one's estimated resident KV and the gate its waiting call waits on, queues and latency per
model and tier, the KV view per model (`/status`'s `kv`: the working set and the active agents' demand against the
KV capacity, whether the `kv` policy's gates are engaged, what the first waiting call needs), upstream health and
saturation, savings and cache rates.
Reads `/status` over HTTP; exits 1 with a clear message when the coordinator cannot be reached or refuses the
admin token. `--watch` redraws every `--interval` seconds until Ctrl-C and keeps trying through outages.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import signal
import threading
import time
from typing import TYPE_CHECKING, Any

from sidecar.config import Config

if TYPE_CHECKING:
    import httpx
    from rich.console import Console, RenderableType

HELP = "Show the coordinator's agents, queues, latency and upstream health as a table (--watch to follow)."
TIERS = ("hot", "warm", "cold")
DASH = "-"


class StatusError(Exception):
    """/status could not be read; the message says why and what to do."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--url", metavar="URL", help="the coordinator's base URL (default http://HOST:PORT from [coordinator])"
    )
    parser.add_argument(
        "--admin-token",
        dest="coordinator.admin_token",
        default=argparse.SUPPRESS,
        help="the coordinator's admin token, if it has one",
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--watch", action="store_true", help="redraw every --interval seconds until Ctrl-C")
    mode.add_argument(
        "--json",
        action="store_true",
        help="print /status as JSON instead (each agent's tokens, GPU seconds and cost under agents[].usage)",
    )
    parser.add_argument("--interval", type=float, default=2.0, metavar="S", help="seconds between redraws (2)")
    parser.add_argument("--agents", type=int, default=25, metavar="N", help="show at most N agents (25)")
    parser.add_argument("--timeout", type=float, default=5.0, metavar="S", help="HTTP timeout in seconds (5)")


def run(args: argparse.Namespace, config: Config) -> int:
    import httpx
    from rich.console import Console

    url = (args.url or default_url(config)).rstrip("/")
    token = config.coordinator.admin_token
    console = Console()
    with httpx.Client(timeout=args.timeout, trust_env=False) as client:
        if not args.watch:
            try:
                status = fetch_status(client, url, token)
            except StatusError as exc:
                Console(stderr=True).print(f"[red]goose-sidecar status:[/] {exc}", highlight=False)
                return 1
            if args.json:
                print(json.dumps(status, indent=1))
            else:
                console.print(render(status, url, args.agents))
            return 0
        with contextlib.suppress(KeyboardInterrupt):
            _watch(console, client, url, token, args, _stop_on_signals())
    return 0


def _stop_on_signals() -> threading.Event:
    """An event set by the first Ctrl-C or SIGTERM, so `--watch` stops between frames (never inside a fetch or a
    half-written frame, which could leave the terminal or a lock in a bad state); a second Ctrl-C interrupts at once."""
    stop = threading.Event()

    def handle(signum: int, frame: object) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, handle)
    return stop


def default_url(config: Config) -> str:
    host = config.coordinator.host
    if host in ("0.0.0.0", "::", ""):  # bound to every interface: reach it on loopback
        host = "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{config.coordinator.port}"


def fetch_status(client: httpx.Client, url: str, token: str | None) -> dict[str, Any]:
    import httpx

    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        response = client.get(f"{url}/status", headers=headers)
    except httpx.HTTPError as exc:
        raise StatusError(
            f"cannot reach the coordinator at {url} ({type(exc).__name__}: {exc or 'no answer'}). "
            "Is `goose-sidecar up` running there? Pass --url to point elsewhere."
        ) from None
    if response.status_code == 401:
        raise StatusError(
            f"the coordinator at {url} requires its admin token: pass --admin-token TOKEN "
            "(or set GOOSE_SIDECAR_COORDINATOR_ADMIN_TOKEN)"
        )
    if response.status_code != 200:
        raise StatusError(f"{url}/status answered HTTP {response.status_code}: {response.text[:200]}")
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict) or "agents" not in body or "scheduling" not in body:
        raise StatusError(f"{url}/status did not answer with the coordinator's status (is it a goose-sidecar?)")
    return body


def _watch(
    console: Console, client: httpx.Client, url: str, token: str | None, args: argparse.Namespace, stop: threading.Event
) -> None:
    from rich.live import Live
    from rich.text import Text

    def frame() -> RenderableType:
        try:
            return render(fetch_status(client, url, token), url, args.agents)
        except StatusError as exc:
            return Text(f"{time.strftime('%H:%M:%S')}  {exc} (retrying every {args.interval:g} s)", style="red")

    if console.is_terminal:
        with Live(frame(), console=console, auto_refresh=False, screen=False) as live:
            while not stop.wait(args.interval):
                live.update(frame(), refresh=True)
    else:  # piped: one snapshot after another
        while not stop.is_set():
            console.print(frame())
            console.rule(style="dim")
            stop.wait(args.interval)


# --- rendering ------------------------------------------------------------------------------------------------


def render(status: dict[str, Any], url: str, max_agents: int = 25) -> RenderableType:
    from rich.console import Group

    return Group(
        _summary(status, url),
        _tiers_table(status),
        _kv_table(status),
        _upstreams_table(status),
        _agents_table(status, max_agents),
    )


def _summary(status: dict[str, Any], url: str) -> RenderableType:
    from rich.text import Text

    totals = status.get("totals", {})
    agents = status.get("agents", [])
    states = {s: sum(1 for a in agents if a.get("state") == s) for s in ("queued", "running", "idle")}
    queued = sum(d.get("queued", 0) for d in status.get("scheduling", {}).values())
    running = sum(d.get("in_flight", 0) for d in status.get("scheduling", {}).values())
    latency = status.get("latency_ms", {}).get("total", {})
    savings = status.get("savings") or {}
    cache = status.get("tool_cache") or {}
    speculation = status.get("speculation")
    text = Text()
    text.append("goose-sidecar status", style="bold")
    text.append(f"  {url}  v{status.get('version', '?')}  up {fmt_duration(status.get('uptime_s'))}\n", style="dim")
    text.append(
        f"agents {totals.get('agents', len(agents))} ({states['queued']} queued, {states['running']} running, "
        f"{states['idle']} idle)   calls: {totals.get('requests', 0)} done ({totals.get('errors', 0)} errors), "
        f"{running} running, {queued} queued   "
        f"latency p50 {fmt_ms(latency.get('p50'))}, p95 {fmt_ms(latency.get('p95'))}\n"
    )
    if savings.get("routing") is False:
        text.append("GPU time saved: none (no routing: one upstream serves every call)\n")
    elif savings:
        text.append(
            f"GPU time saved (est.) {fmt_duration(savings.get('gpu_s_saved'))} = {fmt_usd(savings.get('usd_saved'))} "
            f"at ${savings.get('gpu_hour_usd', 0):.2f}/GPU-hour ({savings.get('routed', {}).get('calls', 0)} calls "
            "on the small model)\n"
        )
    text.append(f"tool cache {fmt_pct(cache.get('hit_rate'))} of {cache.get('calls', 0)} cacheable calls   ")
    if speculation and speculation.get("enabled"):
        started = speculation.get("started") or 0
        rate = speculation.get("served", 0) / started if started else None
        saved = fmt_duration(speculation.get("time_saved_s"))
        text.append(
            f"speculation {fmt_pct(rate)} served of {started} calls, saved {saved} of agent time, "
            f"{speculation.get('wasted_tokens', 0)} tokens wasted"
        )
    else:
        text.append("speculation not enabled")
    return text


def _tiers_table(status: dict[str, Any]) -> RenderableType:
    from rich.table import Table

    table = Table(title="Queues and latency per model and tier", title_justify="left", expand=False)
    table.add_column("model")
    table.add_column("tier")
    for name in ("queued", "in flight", "admitted", "rejected", "wait p50", "wait p95", "lat p50", "p95", "p99"):
        table.add_column(name, justify="right")
    for alias, d in status.get("scheduling", {}).items():
        label = alias
        for tier in TIERS:
            c = d.get("tiers", {}).get(tier, {})
            waits, lat = c.get("wait_ms", {}), c.get("latency_ms", {})
            table.add_row(
                label,
                _tier_text(tier),
                str(c.get("queued", 0)),
                str(c.get("in_flight", 0)),
                str(c.get("admitted", 0)),
                str(c.get("rejected", 0)),
                fmt_ms(waits.get("p50")),
                fmt_ms(waits.get("p95")),
                fmt_ms(lat.get("p50")),
                fmt_ms(lat.get("p95")),
                fmt_ms(lat.get("p99")),
            )
            label = ""
    return table


def _kv_table(status: dict[str, Any]) -> RenderableType:
    """Per model: the gate holding calls now; under the `kv` policy whether its gates are engaged (the active
    agents' demand against the capacity, and the thresholds), the capacity and its source, the working set and the
    resident estimate; what the first waiting call waits on."""
    from rich.table import Table

    table = Table(title="KV working set per model", title_justify="left")
    table.add_column("model")
    table.add_column("gate")
    table.add_column("kv gates")
    for name in ("demand", "capacity", "working set", "resident", "places"):
        table.add_column(name, justify="right")
    table.add_column("waiting on")
    for alias, view in (status.get("kv") or {}).items():
        ws = view.get("working_set")
        if ws is None:
            table.add_row(alias, view.get("gate") or DASH, "not kv", DASH, DASH, DASH, DASH, DASH, _waiting_text(view))
            continue
        engaged = ws.get("engaged")
        gates = "engaged" if engaged else "idle" if engaged is False else DASH
        thresholds = f"on >= {ws.get('engage_ratio', 0):g}x, off <= {ws.get('release_ratio', 0):g}x"
        table.add_row(
            alias,
            view.get("gate") or DASH,
            f"{gates} ({thresholds})",
            f"{fmt_tokens(ws.get('demand_tokens'))} = {ws.get('pressure_ratio', 0):.2f}x "
            f"({ws.get('active_agents', 0)} agents)",
            f"{fmt_tokens(ws.get('usable_tokens'))} of {fmt_tokens(ws.get('capacity_tokens'))} "
            f"({ws.get('capacity_source', '?')})",
            fmt_tokens(ws.get("working_set_tokens")),
            f"{fmt_tokens(ws.get('resident_tokens'))} ({ws.get('agents_resident', 0)} agents)",
            str(ws.get("agents_with_place", 0)),
            _waiting_text(view),
        )
    return table


def _waiting_text(view: dict[str, Any]) -> str:
    """The gate the waiting calls wait on, with the room the first one needs under the working set."""
    waiting = view.get("waiting_on")
    if not waiting:
        return "nothing waits"
    text = f"{waiting.get('calls', 0)} on {waiting.get('gate', '?')}"
    if "needs_tokens" in waiting:
        text += (
            f": {waiting.get('agent')} needs {fmt_tokens(waiting['needs_tokens'])}, "
            f"{fmt_tokens(waiting.get('planned_tokens'))} planned of {fmt_tokens(waiting.get('limit_tokens'))}"
        )
    elif "window" in waiting:
        text += f": {waiting.get('in_flight')} in flight, window {waiting.get('window')}"
    return text


def _upstreams_table(status: dict[str, Any]) -> RenderableType:
    from rich.table import Table

    table = Table(title="Upstreams", title_justify="left")
    table.add_column("model")
    table.add_column("replica")
    table.add_column("health")
    for name in ("in flight", "served", "KV cache", "running", "waiting", "window"):
        table.add_column(name, justify="right")
    table.add_column("priority")
    table.add_column("metrics")
    scheduling = status.get("scheduling", {})
    for upstream in status.get("upstreams", []):
        alias = upstream.get("alias", "?")
        d = scheduling.get(alias, {})
        metrics = d.get("upstream_metrics")
        label = alias
        for i, replica in enumerate(upstream.get("replicas", [])):
            health = "[green]healthy[/]" if replica.get("healthy") else "[red]down[/]"
            if replica.get("last_error") and not replica.get("healthy"):
                health += f" [dim]{replica['last_error'][:40]}[/]"
            first = i == 0
            table.add_row(
                label,
                replica.get("url", "?"),
                health,
                str(replica.get("in_flight", 0)),
                str(replica.get("served", 0)),
                fmt_pct(metrics["kv_usage"]) if first and metrics else DASH if first else "",
                str(metrics["running"]) if first and metrics else DASH if first else "",
                str(metrics["waiting"]) if first and metrics else DASH if first else "",
                str(d.get("window")) if first and d.get("window") is not None else DASH if first else "",
                _priority_text(d) if first else "",
                _metrics_text(d) if first else "",
            )
            label = ""
    return table


def _priority_text(d: dict[str, Any]) -> str:
    """Native priority in effect (configured, and the policy sends it): vLLM orders too, or only the coordinator."""
    return "native" if d.get("native_priority") else "coordinator only"


def _metrics_text(d: dict[str, Any]) -> str:
    """The metrics watcher's state and the engine's running capacity when known."""
    state = str(d.get("upstream_state") or DASH)
    slots = d.get("engine_slots")
    return state if slots is None else f"{state}, {slots} slots ({d.get('engine_slots_source')})"


def _agents_table(status: dict[str, Any], max_agents: int) -> RenderableType:
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    from sidecar.coordinator.dashboard import agent_order_key

    agents = sorted(status.get("agents", []), key=agent_order_key)
    shown = agents[: max(max_agents, 0)]
    table = Table(title=f"Agents ({len(agents)})", title_justify="left")
    table.add_column("agent", overflow="ellipsis", max_width=40)
    table.add_column("state")
    table.add_column("stage")
    table.add_column("tier")
    table.add_column("model")
    for name in ("wait", "calls", "errors", "tools", "cache", "KV resident"):
        table.add_column(name, justify="right")
    table.add_column("waits on")
    styles = {"queued": "bold yellow", "running": "green", "idle": "dim"}
    for a in shown:
        state = a.get("state", "?")
        wait = a.get("waiting_s") if state == "queued" else (a.get("last_wait_ms") or 0) / 1000
        table.add_row(
            a.get("agent_id", "?"),
            Text(state, style=styles.get(state, "")),
            a.get("stage") or DASH,
            _tier_text(a.get("tier")),
            a.get("model") or DASH,
            fmt_ms(None if wait is None else wait * 1000),
            str(a.get("requests", 0)),
            str(a.get("errors", 0)),
            str(a.get("tool_calls", 0)),
            fmt_pct(a.get("cache_hit_rate")),
            fmt_tokens(a.get("kv_resident_tokens")),
            a.get("waiting_on") or DASH,
        )
    if len(agents) > len(shown):
        more = Text(f"... and {len(agents) - len(shown)} more agents (--agents N to show more)", style="dim")
        return Group(table, more)
    return table


def _tier_text(tier: str | None) -> Any:
    from rich.text import Text

    colors = {"hot": "bold red", "warm": "yellow", "cold": "blue"}
    return Text(tier or DASH, style=colors.get(tier or "", ""))


# --- formatting (the dashboard's units) ------------------------------------------------------------------------


def fmt_ms(value: float | None) -> str:
    if value is None:
        return DASH
    if value == 0:
        return "0 ms"
    if value < 1:
        return f"{value:.2f} ms"
    if value < 1000:
        return f"{value:.1f} ms" if value < 10 else f"{value:.0f} ms"
    return f"{value / 1000:.2f} s" if value < 10_000 else f"{value / 1000:.1f} s"


def fmt_tokens(value: float | None) -> str:
    if value is None:
        return DASH
    if abs(value) < 1000:
        return f"{value:.0f}"
    if abs(value) < 1_000_000:
        return f"{value / 1000:.1f}K"
    return f"{value / 1_000_000:.2f}M"


def fmt_duration(seconds: float | None) -> str:
    if seconds is None:
        return DASH
    if seconds < 60:
        return f"{seconds:.2f} s" if seconds < 10 else f"{seconds:.1f} s"
    if seconds < 3600:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.2f} h"


def fmt_pct(value: float | None) -> str:
    if value is None:
        return DASH
    return f"{value * 100:.1f} %" if value < 0.1 else f"{value * 100:.0f} %"


def fmt_usd(value: float | None) -> str:
    if value is None:
        return DASH
    return f"${value:.4f}" if value < 1 else f"${value:.2f}"
