"""`python -m sidecar.bench.load`: how many concurrent streaming agents the coordinator carries on this
machine with p99 added latency under a limit (10 ms), its memory per agent, the faults it survives, and the fuzz
case counts of the reliability suite.

Load: N agents, each a loop of one streaming chat call (a paced upstream: `--chunks` SSE frames `--interval-ms`
apart, one frame per token as vLLM streams; 25 ms is a 40 tok/s decode, between the 7B's 15-25 ms and the 32B's
30-45 ms inter-token times in docs/reference calibration) and a think time (`--think-ms`, uniform 0.5x-1.5x: the
agent running its tools). Each level runs in blocks that alternate between the same N agents calling the upstream
directly and through the coordinator, so both see the same upstream load and drift hits both alike. Added latency
= proxied minus direct, per percentile, of (a) the first byte of the body after the request was sent (TTFT: the
coordinator's whole request pipeline) and (b) every frame's delivery delay (received by the agent minus sent by the
upstream, which stamps each frame with the machine's monotonic clock: what relaying adds to every token).
Per level it also reports the added maxima, the calls whose first byte took more than 1 s (1 s and 3 s are
Linux's SYN retransmission times: a connection attempt dropped from a full accept queue shows there), the
coordinator's CPU per relayed frame and per call (its user+system time from /proc over the measured blocks, over
the frames and calls it relayed meanwhile), RSS per agent and the kernel's TcpExtListenOverflows/ListenDrops
(/proc/net/netstat, machine-wide) over the level; a call with no end within `--call-timeout` is counted as lost.
`--burst N` first measures a fleet starting at once: N agents, each on its own new connection, send one streaming
call at the same moment, direct and through the coordinator in turn (`--burst-rounds`), first byte timed from
before the connection was opened.
A level passes when both added p99s are under `--limit-ms` and no call failed. The ramp (25, 50, 100, ...) stops
after a call failed, the coordinator's core saturated, or two levels in a row did not pass (one noisy level on a
shared machine does not end it); the answer is the highest level that passed. Each level measures at least
`--min-calls` calls per mode, so its p99 rests on a few hundred calls.

Accounting for 2 cores: the coordinator (one asyncio process, so one core at most) is pinned to CPU 0 with
taskset; the upstream and this load generator share CPU 1, so the coordinator never competes with the load it is
measured under. Its CPU use per level is read from /proc. On a machine shared with other work, `--nice -10` (needs
the privilege) lets the three processes of the benchmark preempt it, so the numbers measure the coordinator.
Memory per agent: the coordinator's RSS at the end of a level minus its RSS after start-up and warm-up, over N.
The coordinator runs with its defaults except `scheduling.max_window` and its upstream connection limits raised to
4096 (FLEET_ENV): against an upstream without vLLM metrics the window is static at `max_window` (64), and calls
beyond it, or beyond 1,024 upstream connections, would wait in the coordinator by design (`--default-window`
keeps the defaults). `--keep-going` runs every level, past failures and saturation.

Faults (`--faults N`): N streaming calls per injected fault against the simulator (`X-Sim-Fault`), an unreachable
upstream, a replica that answers 503 (a Modal cold start) beside a healthy one, a stall past the read timeout and
clients that leave mid-stream; each outcome counted, then the coordinator's in-flight count must be 0 and the next
plain call must complete. Fuzz (`--fuzz`): runs the reliability suite's fuzz tests and prints their case counts.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import re
import resource
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sidecar.bench.proxy import _children, _free_port, _pin, _sse_body, _wait_ready, serve_lifespan, stop_processes
from sidecar.serving import event_loop_factory

ROOT = Path(__file__).resolve().parents[2]
LEVELS = (25, 50, 100, 200, 500, 1000, 2000)
SLOW_FIRST_BYTE_S = 1.0  # 1 s and 3 s are Linux's SYN retransmission times: a dropped connection attempt

# --- the paced upstream -----------------------------------------------------------------------------------------


def paced_upstream_app(chunks: int, interval_s: float) -> Callable[..., Any]:
    """vLLM-framed streams, one frame per `interval_s` (raw ASGI: the upstream's own cost stays small). Each frame
    is preceded by an SSE comment `: t=<monotonic ns>` with the moment it was sent (the coordinator relays bytes
    unchanged; the monotonic clock is shared by every process), so a client measures each frame's delivery delay."""
    frames = [f + b"\n\n" for f in _sse_body(chunks).split(b"\n\n") if f]
    models = json.dumps({"object": "list", "data": [{"id": "bench-model", "object": "model"}]}).encode()

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await serve_lifespan(receive, send)
            return
        more = True
        while more:
            more = (await receive()).get("more_body", False)
        if scope["path"].endswith("/chat/completions"):
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", b"text/event-stream")]})  # fmt: skip
            for frame in frames:
                stamp = b": t=%d\n" % time.monotonic_ns()
                await send({"type": "http.response.body", "body": stamp + frame, "more_body": True})
                await asyncio.sleep(interval_s)
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            return
        body = models if scope["path"].endswith("/models") else b""
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": body})

    return app


# --- processes --------------------------------------------------------------------------------------------------


@dataclass
class Proc:
    process: subprocess.Popen[bytes]

    def cpu_seconds(self) -> float:
        ticks = os.sysconf("SC_CLK_TCK")
        total = 0.0
        for pid in [self.process.pid, *_children(self.process.pid)]:
            with contextlib.suppress(OSError):
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                total += (int(fields[11]) + int(fields[12])) / ticks
        return total

    def rss_bytes(self) -> int:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        return 0


@contextlib.contextmanager
def processes() -> Any:
    started: list[subprocess.Popen[bytes]] = []

    def start(cmd: list[str], env: dict[str, str] | None = None, log: str | None = None) -> Proc:
        with open(log or os.devnull, "ab") as stderr:  # the child keeps its own descriptor
            proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=stderr, env=env)
        with contextlib.suppress(OSError):  # inherit this process's niceness (set by --nice)
            os.setpriority(os.PRIO_PROCESS, proc.pid, os.getpriority(os.PRIO_PROCESS, 0))
        started.append(proc)
        return Proc(proc)

    try:
        yield start
    finally:
        stop_processes(started)


# A fleet's coordinator: calls beyond the window or the upstream connection pool would wait in the coordinator by
# design (its defaults protect one vLLM); this upstream has no vLLM metrics, so the window is static at max_window.
FLEET_ENV = {
    "GOOSE_SIDECAR_SCHEDULING_MAX_WINDOW": "4096",
    "GOOSE_SIDECAR_COORDINATOR_MAX_CONNECTIONS": "4096",
    "GOOSE_SIDECAR_COORDINATOR_MAX_KEEPALIVE_CONNECTIONS": "4096",
}


def coordinator_cmd(port: int, *upstreams: str) -> list[str]:
    cmd = [*_pin(0), sys.executable, "-m", "sidecar.cli", "up", "--port", str(port), "--log-level", "warning"]
    for url in upstreams:
        cmd += ["--upstream", url]
    return cmd


# --- the load generator -----------------------------------------------------------------------------------------


@dataclass
class Sample:
    proxied: bool
    ttft: float  # request sent -> first body byte, seconds
    frame_delay: float  # the worst frame of the call: received minus sent by the upstream, seconds


STAMP = re.compile(rb": t=(\d+)\n")
IDLE_RECONNECT_S = 2.0  # below uvicorn's 5 s keep-alive, so a reused connection is never one being closed


class Stream:
    """One keep-alive HTTP/1.1 connection; `call` sends a prepared request and reads the chunked answer."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.last_used = 0.0
        self.frames = 0  # stamped frames received over this stream's life

    async def call(self, raw: bytes, frame_delays: list[float] | None = None) -> tuple[float, float]:
        """(seconds to the first body byte, the largest frame delivery delay in seconds); each frame's delay is
        appended to `frame_delays`. Raises on anything but a complete 200 stream ending in [DONE]."""
        if self.writer is not None and time.monotonic() - self.last_used > IDLE_RECONNECT_S:
            self.close()
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        assert self.reader is not None
        start = time.perf_counter()
        self.writer.write(raw)
        buffer = await self.reader.readuntil(b"\r\n\r\n")
        if not buffer.startswith(b"HTTP/1.1 200"):
            raise RuntimeError(buffer.split(b"\r\n", 1)[0].decode(errors="replace"))
        first: float | None = None
        worst = 0.0
        tail = b""
        while not tail.endswith(b"\r\n0\r\n\r\n"):
            data = await self.reader.read(65536)
            now = time.monotonic_ns()
            if not data:
                raise RuntimeError("connection closed mid-stream")
            if first is None:
                first = time.perf_counter() - start
            tail = (tail + data)[-64:]
            for sent in STAMP.findall(data):  # a stamp cut between two reads is skipped (rare, unbiased)
                self.frames += 1
                delay = (now - int(sent)) / 1e9
                worst = max(worst, delay)
                if frame_delays is not None:
                    frame_delays.append(delay)
        if b"[DONE]" not in tail:
            raise RuntimeError("stream ended without [DONE]")
        self.last_used = time.monotonic()
        return first or 0.0, worst

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def request_bytes(port: int, agent: str) -> bytes:
    body = json.dumps({"model": "bench-model", "stream": True, "max_tokens": 100,
                       "messages": [{"role": "user", "content": "benchmark " * 40}]}).encode()  # fmt: skip
    return (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
        f"X-Agent-Id: {agent}\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body


@dataclass
class Level:
    agents: int
    samples: list[Sample] = field(default_factory=list)
    frames: dict[bool, list[float]] = field(default_factory=lambda: {False: [], True: []})
    errors: Counter[str] = field(default_factory=Counter)
    cpu_percent: float = 0.0
    rss: int = 0  # the coordinator's, at the end of the level
    rss_per_agent: float = 0.0
    in_flight_mean: float = 0.0
    cpu_seconds: float = 0.0  # the coordinator's, over the measured blocks
    relayed_calls: int = 0  # proxied calls that ended while the level was measured (any mode block)
    relayed_frames: int = 0  # ...and the frames they delivered
    listen: tuple[int, int] = (0, 0)  # TcpExtListenOverflows, TcpExtListenDrops during the level (machine-wide)

    def slow(self, proxied: bool) -> int:
        """Calls whose first byte came later than SLOW_FIRST_BYTE_S."""
        return sum(s.proxied is proxied and s.ttft > SLOW_FIRST_BYTE_S for s in self.samples)

    def cpu_per_frame_us(self) -> float:
        return self.cpu_seconds / self.relayed_frames * 1e6 if self.relayed_frames else float("nan")

    def cpu_per_call_ms(self) -> float:
        return self.cpu_seconds / self.relayed_calls * 1e3 if self.relayed_calls else float("nan")

    def calls(self, proxied: bool) -> int:
        return sum(s.proxied is proxied for s in self.samples)

    def pct(self, proxied: bool, attr: str, p: float) -> float:
        """Milliseconds: `attr` is "ttft" (per call) or "frame" (per frame delivered); p = 100 is the maximum."""
        if attr == "frame":
            values = sorted(self.frames[proxied])
        else:
            values = sorted(getattr(s, attr) for s in self.samples if s.proxied is proxied)
        return values[min(len(values) - 1, int(len(values) * p / 100))] * 1000 if values else float("nan")

    def added(self, attr: str, p: float) -> float:
        return self.pct(True, attr, p) - self.pct(False, attr, p)

    def passed(self, limit_ms: float) -> bool:
        worst = max(self.added("ttft", 99), self.added("frame", 99))
        return not self.errors and worst < limit_ms  # NaN (no samples) compares False: not passed


async def run_level(
    args: argparse.Namespace, n: int, up_port: int, coord_port: int, coordinator: Proc, blocks: int | None = None
) -> Level:
    """N agents; after `args.warmup` s, `blocks` direct/proxied block pairs of `args.block_s` s are measured."""
    level = Level(n)
    proxied = False
    measuring = False
    stop = False
    streaming = 0
    think = args.think_ms / 1000

    async def agent(i: int) -> None:
        nonlocal streaming
        rng = random.Random(i)
        direct, via = Stream(up_port), Stream(coord_port)
        raws = {False: request_bytes(up_port, f"bench-{i}"), True: request_bytes(coord_port, f"bench-{i}")}
        await asyncio.sleep(rng.uniform(0, think + args.chunks * args.interval_ms / 1000))
        try:
            while not stop:
                mode, counted = proxied, measuring
                streaming += 1
                frames_before = via.frames
                try:
                    delays = level.frames[mode] if counted else None
                    call = (via if mode else direct).call(raws[mode], delays)
                    ttft, worst = await asyncio.wait_for(call, args.call_timeout)
                    if counted:
                        level.samples.append(Sample(mode, ttft, worst))
                    if mode and measuring:
                        level.relayed_calls += 1
                        level.relayed_frames += via.frames - frames_before
                except TimeoutError:
                    level.errors[f"{'proxied' if mode else 'direct'}: lost (no end in {args.call_timeout:g} s)"] += 1
                    (via if mode else direct).close()
                except (OSError, RuntimeError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
                    level.errors[f"{'proxied' if mode else 'direct'}: {exc}"[:80]] += 1
                    (via if mode else direct).close()
                finally:
                    streaming -= 1
                await asyncio.sleep(rng.uniform(0.5, 1.5) * think)
        finally:
            direct.close()
            via.close()

    tasks = [asyncio.create_task(agent(i)) for i in range(n)]
    await asyncio.sleep(args.warmup)  # every agent has made its connections and its first calls
    cpu0, t0, listen0 = coordinator.cpu_seconds(), time.perf_counter(), listen_counters()
    occupancy: list[int] = []
    measuring = True
    block = 0
    pairs = args.blocks if blocks is None else blocks
    min_calls = args.min_calls if blocks is None else 0
    # Alternate blocks until each mode has `min_calls` calls (a p99 needs a few hundred) and `pairs` pairs ran.
    while block < 2 * pairs or min(level.calls(False), level.calls(True)) < min_calls:
        proxied = block % 2 == 1
        end = time.perf_counter() + args.block_s
        while time.perf_counter() < end:
            await asyncio.sleep(0.1)
            occupancy.append(streaming)
        block += 1
    level.cpu_seconds = coordinator.cpu_seconds() - cpu0
    level.cpu_percent = level.cpu_seconds / (time.perf_counter() - t0) * 100
    level.listen = tuple(b - a for a, b in zip(listen0, listen_counters(), strict=True))  # type: ignore[assignment]
    level.rss = coordinator.rss_bytes()
    level.in_flight_mean = sum(occupancy) / max(1, len(occupancy))
    measuring = False
    stop = True
    await asyncio.gather(*tasks)
    return level


async def load(args: argparse.Namespace) -> list[Level]:
    levels: list[Level] = []
    up_port, coord_port = _free_port(), _free_port()
    env = dict(os.environ)
    if not args.default_window:
        env.update(FLEET_ENV)
    with processes() as start:
        start([*_pin(1), sys.executable, "-m", "sidecar.bench.load", "--serve-upstream", str(up_port),
               "--chunks", str(args.chunks), "--interval-ms", str(args.interval_ms)])  # fmt: skip
        await _wait_ready(up_port, "/v1/models")
        coordinator = start(coordinator_cmd(coord_port, f"http://127.0.0.1:{up_port}"), env, args.coordinator_log)
        await _wait_ready(coord_port, "/v1/models")
        if (os.cpu_count() or 1) > 1:
            os.sched_setaffinity(0, {1})
        await asyncio.sleep(4)  # the coordinator decides the upstream has no vLLM metrics (3 scrapes) first
        await run_level(args, 10, up_port, coord_port, coordinator, blocks=1)  # warm-up: code paths, pools
        idle = coordinator.rss_bytes()
        print(f"coordinator pinned to CPU 0, upstream and load generator to CPU 1; idle RSS {idle / 2**20:.1f} MiB; "
              f"{args.chunks} frames x {args.interval_ms:g} ms per stream, think {args.think_ms:g} ms",
              file=sys.stderr)  # fmt: skip
        if args.burst:
            print(burst_table(await burst(args, up_port, coord_port)), flush=True)
        for n in args.levels:
            print(f"level {n} agents ...", file=sys.stderr, flush=True)
            level = await run_level(args, n, up_port, coord_port, coordinator)
            level.rss_per_agent = (level.rss - idle) / n
            levels.append(level)
            print(load_table([level], args.limit_ms).splitlines()[-1], file=sys.stderr, flush=True)
            over = not any(lv.passed(args.limit_ms) for lv in levels[-2:])
            if not args.keep_going and (level.errors or level.cpu_percent > 95 or over):
                break  # failures, a saturated core, or two levels in a row over the limit (--keep-going: on)
    return levels


def load_table(levels: list[Level], limit_ms: float) -> str:
    """One row per level. Added = proxied minus direct at the same percentile (max: the largest of each)."""
    lines = [
        "| agents | streams open (mean) | calls direct / proxied | direct p50 / p99 TTFT (ms) | added p50 / p99 / max "
        "TTFT (ms) | direct p50 / p99 frame delay (ms) | added p50 / p99 / max frame delay (ms) | first byte > 1 s "
        "direct / proxied | coordinator CPU % | CPU us / frame | CPU ms / call | RSS KiB / agent | listen overflows "
        "/ drops | failed | verdict |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for lv in levels:
        verdict = "ok" if lv.passed(limit_ms) else "over limit" if not lv.errors else "errors"
        lines.append(
            f"| {lv.agents} | {lv.in_flight_mean:.0f} | {lv.calls(False)} / {lv.calls(True)} | "
            f"{lv.pct(False, 'ttft', 50):.2f} / {lv.pct(False, 'ttft', 99):.2f} | {lv.added('ttft', 50):+.2f} / "
            f"{lv.added('ttft', 99):+.2f} / {lv.added('ttft', 100):+.1f} | {lv.pct(False, 'frame', 50):.2f} / "
            f"{lv.pct(False, 'frame', 99):.2f} | {lv.added('frame', 50):+.2f} / {lv.added('frame', 99):+.2f} / "
            f"{lv.added('frame', 100):+.1f} | {lv.slow(False)} / {lv.slow(True)} | {lv.cpu_percent:.0f} | "
            f"{lv.cpu_per_frame_us():.1f} | {lv.cpu_per_call_ms():.2f} | {lv.rss_per_agent / 1024:.1f} | "
            f"{lv.listen[0]} / {lv.listen[1]} | {sum(lv.errors.values())} | {verdict} |"
        )
    return "\n".join(lines)


def listen_counters() -> tuple[int, int]:
    """The kernel's TcpExtListenOverflows and TcpExtListenDrops (machine-wide: a full accept backlog drops SYNs,
    and the client retries after 1 s, 3 s, ...); (0, 0) where /proc/net/netstat cannot be read."""
    try:
        lines = [
            line.split() for line in Path("/proc/net/netstat").read_text().splitlines() if line.startswith("TcpExt:")
        ]
        values = dict(zip(lines[0][1:], (int(v) for v in lines[1][1:]), strict=True))
    except (OSError, IndexError, ValueError):
        return 0, 0
    return values.get("ListenOverflows", 0), values.get("ListenDrops", 0)


# --- a fleet that starts at once ------------------------------------------------------------------------------


@dataclass
class Burst:
    agents: int
    first_bytes: dict[bool, list[float]] = field(default_factory=lambda: {False: [], True: []})
    errors: Counter[str] = field(default_factory=Counter)
    listen: tuple[int, int] = (0, 0)

    def pct(self, proxied: bool, p: float) -> float:
        values = sorted(self.first_bytes[proxied])
        return values[min(len(values) - 1, int(len(values) * p / 100))] * 1000 if values else float("nan")


async def burst_round(n: int, port: int, into: Burst, proxied: bool) -> None:
    """`n` agents, each with its own new connection (as separate Goose processes have), send one streaming call
    at the same moment; each one's first byte is timed from before its connection was opened."""
    go = asyncio.Event()

    async def agent(i: int) -> None:
        await go.wait()
        stream, start = Stream(port), time.perf_counter()
        try:
            await stream.call(request_bytes(port, f"burst-{i}"))
            into.first_bytes[proxied].append(time.perf_counter() - start)
        except (OSError, RuntimeError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
            into.errors[f"{'proxied' if proxied else 'direct'}: {exc}"[:80]] += 1
        finally:
            stream.close()

    tasks = [asyncio.create_task(agent(i)) for i in range(n)]
    await asyncio.sleep(0.2)
    go.set()
    await asyncio.gather(*tasks)


async def burst(args: argparse.Namespace, up_port: int, coord_port: int) -> list[Burst]:
    """For each size in `--burst`: `--burst-rounds` rounds of direct then proxied, a pause between rounds."""
    results = []
    for n in args.burst:
        print(f"fleet of {n} starting at once ...", file=sys.stderr, flush=True)
        result, listen0 = Burst(n), listen_counters()
        for _ in range(args.burst_rounds):
            for proxied in (False, True):
                await burst_round(n, coord_port if proxied else up_port, result, proxied)
                await asyncio.sleep(1.0)
        result.listen = tuple(b - a for a, b in zip(listen0, listen_counters(), strict=True))  # type: ignore[assignment]
        results.append(result)
    return results


def burst_table(results: list[Burst]) -> str:
    lines = [
        "| agents at once | rounds x calls | direct first byte p50 / p99 / max (ms) | through the coordinator p50 / "
        "p99 / max (ms) | p99 ratio | listen overflows / drops | failed |",
        "|---|---|---|---|---|---|---|",
    ]
    for b in results:
        ratio = b.pct(True, 99) / b.pct(False, 99) if b.first_bytes[False] else float("nan")
        lines.append(
            f"| {b.agents} | {len(b.first_bytes[True])} | {b.pct(False, 50):.1f} / {b.pct(False, 99):.1f} / "
            f"{b.pct(False, 100):.1f} | {b.pct(True, 50):.1f} / {b.pct(True, 99):.1f} / {b.pct(True, 100):.1f} | "
            f"{ratio:.2f}x | {b.listen[0]} / {b.listen[1]} | {sum(b.errors.values())} |"
        )
    return "\n".join(lines)


# --- faults -----------------------------------------------------------------------------------------------------


@dataclass
class FaultRow:
    fault: str
    injected: int
    outcomes: Counter[str]
    in_flight_after: int | None = None
    next_call: str = "-"
    retries: float = 0.0


BODY: dict[str, Any] = {
    "model": "",
    "stream": True,
    "max_tokens": 16,
    "messages": [{"role": "user", "content": "fix the test"}],
}


def outcome_of(status: int, content_type: str, body: bytes) -> str:
    if status == 200 and content_type.startswith("text/event-stream"):
        frames = [f.removeprefix(b"data: ") for f in body.split(b"\n\n") if f.startswith(b"data: ")]
        if not frames or frames[-1] != b"[DONE]":
            return "cut stream (no [DONE])"
        return "in-band error frame + [DONE]" if any(b'"error"' in f[:12] for f in frames[:-1]) else "complete"
    try:
        json.loads(body)["error"]["message"]
    except (ValueError, KeyError, TypeError):
        return f"HTTP {status} without an error body"
    return f"HTTP {status} + error body"


async def fault_calls(url: str, n: int, headers: dict[str, str], leave_early: bool = False) -> Counter[str]:
    import httpx

    outcomes: Counter[str] = Counter()
    async with httpx.AsyncClient(base_url=url, timeout=60) as client:

        async def one(i: int) -> None:
            try:
                async with client.stream("POST", "/v1/chat/completions", json=BODY,
                                         headers={"x-agent-id": f"fault-{i}", **headers}) as r:  # fmt: skip
                    if leave_early:
                        async for _ in r.aiter_raw():
                            break
                        outcomes["client left after the first chunk"] += 1
                        return
                    body = await r.aread()
                outcomes[outcome_of(r.status_code, r.headers.get("content-type", ""), body)] += 1
            except httpx.HTTPError as exc:
                outcomes[f"no answer: {type(exc).__name__}"] += 1

        await asyncio.gather(*(one(i) for i in range(n)))
    return outcomes


async def retries(url: str) -> float:
    """The coordinator's goose_sidecar_upstream_retries_total, summed over models."""
    import httpx

    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        text = (await client.get("/metrics")).text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("goose_sidecar_upstream_retries_total")
    )


async def settle(url: str, row: FaultRow) -> None:
    import httpx

    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        for _ in range(100):
            row.in_flight_after = (await client.get("/status")).json()["totals"]["in_flight"]
            if row.in_flight_after == 0:
                break
            await asyncio.sleep(0.05)
        r = await client.post("/v1/chat/completions", json=BODY)
        row.next_call = outcome_of(r.status_code, r.headers.get("content-type", ""), r.content)


@contextlib.asynccontextmanager
async def serve(app: Any) -> AsyncIterator[str]:
    from sidecar.serving import serve_app

    async with serve_app(app) as url:
        yield url


async def faults(n: int) -> list[FaultRow]:
    import httpx

    from sidecar.sim.app import build_sim_app
    from sidecar.sim.settings import SimSettings

    rows: list[FaultRow] = []
    models = b""

    async def cold(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        path = scope["path"]
        status = 200 if path in ("/health", "/v1/models") else 503  # up for health checks, refusing calls
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json")]})  # fmt: skip
        await send({"type": "http.response.body", "body": models if path == "/v1/models" else b'{"detail": "cold"}'})

    sim = build_sim_app(SimSettings(time_scale=50.0, fault_stall_s=3.0))
    env = dict(
        os.environ, GOOSE_SIDECAR_COORDINATOR_READ_TIMEOUT_S="1", GOOSE_SIDECAR_COORDINATOR_RETRY_BACKOFF_S="0.02"
    )
    async with serve(sim) as sim_url, serve(cold) as cold_url:
        async with httpx.AsyncClient() as client:
            models = (await client.get(f"{sim_url}/v1/models")).content
        BODY["model"] = json.loads(models)["data"][0]["id"]
        with processes() as start:
            port, dead_port, cold_port = _free_port(), _free_port(), _free_port()
            start(coordinator_cmd(port, sim_url), env)
            start(coordinator_cmd(dead_port, f"http://127.0.0.1:{_free_port()}"), env)
            start(coordinator_cmd(cold_port, cold_url, sim_url), env)
            for p in (port, dead_port, cold_port):
                await _wait_ready(p, "/healthz" if p != dead_port else "/status")
            url = f"http://127.0.0.1:{port}"
            cases: list[tuple[str, str, dict[str, str], bool]] = [
                ("none (control)", url, {}, False),
                ("upstream 500", url, {"x-sim-fault": "500"}, False),
                ("upstream 503 (retried, then relayed)", url, {"x-sim-fault": "503"}, False),
                ("in-band error frame mid-stream", url, {"x-sim-fault": "error_frame"}, False),
                ("connection dropped mid-stream", url, {"x-sim-fault": "drop"}, False),
                ("stall past the read timeout (1 s)", url, {"x-sim-fault": "stall"}, False),
                ("client leaves mid-stream", url, {}, True),
                ("upstream unreachable", f"http://127.0.0.1:{dead_port}", {}, False),
                ("one replica cold-starting (503) beside a healthy one", f"http://127.0.0.1:{cold_port}", {}, False),
            ]
            for name, target, headers, leave in cases:
                print(f"fault: {name} x {n} ...", file=sys.stderr, flush=True)
                before = await retries(target)
                row = FaultRow(name, n, await fault_calls(target, n, headers, leave))
                row.retries = await retries(target) - before
                await settle(target, row)
                rows.append(row)
    return rows


def fault_table(rows: list[FaultRow]) -> str:
    lines = [
        "| fault injected | calls | outcomes | upstream retries | in-flight after | next call |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        outcomes = ", ".join(f"{k}: {v}" for k, v in r.outcomes.most_common())
        lines.append(
            f"| {r.fault} | {r.injected} | {outcomes} | {r.retries:.0f} | {r.in_flight_after} | {r.next_call} |"
        )
    return "\n".join(lines)


# --- fuzz counts --------------------------------------------------------------------------------------------------


def fuzz_counts() -> str:
    with tempfile.TemporaryDirectory() as tmp:
        counts = Path(tmp) / "counts.jsonl"
        env = dict(os.environ, RELIABILITY_COUNTS=str(counts))
        cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/reliability",
               "-k", "fuzz or adversarial or symlink or timed_out or catastrophic"]  # fmt: skip
        result = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
        summary = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else "(no output)"
        rows = [json.loads(line) for line in counts.read_text().splitlines()] if counts.exists() else []
    lines = ["| fuzz target | cases | outcomes |", "|---|---|---|"]
    for row in rows:
        outcomes = ", ".join(f"{k} {v}" for k, v in sorted(row["outcomes"].items()))
        lines.append(f"| {row['name']} | {row['cases']} | {outcomes} |")
    total = sum(r["cases"] for r in rows)
    lines.append(f"\n{total} generated cases; pytest: {summary} (a crash or a hang fails its test; xfailed = a known "
                 f"bug pinned with its repro)")  # fmt: skip
    return "\n".join(lines)


# --- entry point --------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sidecar.bench.load", description=__doc__.split("\n\n")[0])
    parser.add_argument("--levels", type=lambda s: [int(x) for x in s.split(",")], default=list(LEVELS))
    parser.add_argument("--limit-ms", type=float, default=10.0, help="p99 added latency a level must stay under")
    parser.add_argument("--chunks", type=int, default=100, help="SSE frames per streamed answer")
    parser.add_argument("--interval-ms", type=float, default=25.0, help="time between frames (inter-token time)")
    parser.add_argument("--think-ms", type=float, default=1000.0, help="mean think time between an agent's calls")
    parser.add_argument("--blocks", type=int, default=2, help="direct/proxied block pairs per level")
    parser.add_argument("--block-s", type=float, default=5.0, help="seconds per block")
    parser.add_argument("--warmup", type=float, default=4.0, help="seconds before measuring each level")
    parser.add_argument("--keep-going", action="store_true", help="run every level (past failures and the limit)")
    parser.add_argument("--min-calls", type=int, default=300, help="calls per mode a level measures at least")
    parser.add_argument("--default-window", action="store_true", help="keep the window and connection limits")
    parser.add_argument("--call-timeout", type=float, default=60.0, help="a call not ended by then is lost (s)")
    parser.add_argument("--burst", type=lambda s: [int(x) for x in s.split(",")], default=[], metavar="N[,N]",
                        help="first measure fleets of N agents that each send one call at the same moment")  # fmt: skip
    parser.add_argument("--burst-rounds", type=int, default=3, help="direct/proxied rounds per --burst size")
    parser.add_argument("--nice", type=int, default=0, help="scheduling niceness of the benchmark's processes")
    parser.add_argument("--coordinator-log", metavar="PATH", help="append the coordinator's stderr (warnings) here")
    parser.add_argument("--faults", type=int, default=50, metavar="N", help="calls per injected fault (0: skip)")
    parser.add_argument("--fuzz", action="store_true", help="also run the fuzz tests and print their case counts")
    parser.add_argument("--no-load", action="store_true", help="skip the load ramp")
    parser.add_argument("--serve-upstream", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve_upstream:
        import uvicorn

        app = paced_upstream_app(args.chunks, args.interval_ms / 1000)
        uvicorn.run(app, host="127.0.0.1", port=args.serve_upstream, log_level="warning", access_log=False)
        return 0
    if args.nice:
        try:
            os.setpriority(os.PRIO_PROCESS, 0, args.nice)
        except PermissionError:
            print(f"--nice {args.nice}: not permitted here, running at normal priority", file=sys.stderr)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 65536)), hard))  # 2 sockets per agent here
    if not args.no_load:
        with asyncio.Runner(loop_factory=event_loop_factory()) as runner:  # uvloop: a cheaper load generator
            levels = runner.run(load(args))
        passing = [lv.agents for lv in levels if lv.passed(args.limit_ms)]
        print(load_table(levels, args.limit_ms))
        print(f"\nhighest level with p99 added latency under {args.limit_ms:g} ms and no failed call: "
              f"{max(passing) if passing else 'none'} concurrent streaming agents")  # fmt: skip
    if args.faults:
        print("\n" + fault_table(asyncio.run(faults(args.faults))))
    if args.fuzz:
        print("\n" + fuzz_counts())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
