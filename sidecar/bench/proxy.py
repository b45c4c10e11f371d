"""`scripts/bench proxy`: what the coordinator adds on the path of a call, measured side by side in one run.

Targets (each a separate process): the same fast upstream reached directly, through the coordinator, and
(with --litellm) through LiteLLM's proxy installed in its own virtualenv under .cache/ (never a project
dependency). The load generator is a minimal keep-alive HTTP/1.1 client in this process, so the client's own
cost stays small and equal for every target.

Accounting for 2 cores: the proxy under test is pinned to CPU 0 (taskset), the upstream and the load generator
share CPU 1, so the proxy never competes with the load it is measured under. Added latency at concurrency 1 is
the proxy's median minus the direct median, from interleaved blocks (drift hits every target alike).
Throughput is completed streams per second at 16 and 64 concurrent streams; CPU per request is the proxy
process's user+system time (from /proc) divided by the requests it served in the throughput runs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MODEL = "bench-model"
ROOT = Path(__file__).resolve().parents[2]
LITELLM_VENV = ROOT / ".cache" / "litellm-venv"
LITELLM_KEY = "sk-bench-0123456789abcdef"  # LiteLLM refuses to start without a master key


# --- the fast upstream: raw ASGI, vLLM framing, no framework cost -------------------------------------------


def _sse_body(chunks: int) -> bytes:
    frames = []
    for i in range(chunks):
        delta = {"role": "assistant", "content": ""} if i == 0 else {"content": f"tok{i} "}
        obj = {"id": "chatcmpl-b", "object": "chat.completion.chunk", "created": 1, "model": MODEL,
               "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": None}]}  # fmt: skip
        frames.append(b"data: " + json.dumps(obj).encode() + b"\n\n")
    usage = {"id": "chatcmpl-b", "object": "chat.completion.chunk", "created": 1, "model": MODEL, "choices": [],
             "usage": {"prompt_tokens": 50, "completion_tokens": chunks, "total_tokens": 50 + chunks}}  # fmt: skip
    frames.append(b"data: " + json.dumps(usage).encode() + b"\n\n")
    frames.append(b"data: [DONE]\n\n")
    return b"".join(frames)


async def serve_lifespan(receive: Any, send: Any) -> None:
    """The ASGI lifespan protocol for a benchmark upstream with nothing to start or stop."""
    while (await receive())["type"] != "lifespan.shutdown":
        await send({"type": "lifespan.startup.complete"})
    await send({"type": "lifespan.shutdown.complete"})


def upstream_app(chunks: int = 20) -> Callable[..., Any]:
    sse = [f for f in _sse_body(chunks).split(b"\n\n") if f]
    completion = json.dumps(
        {"id": "chatcmpl-b", "object": "chat.completion", "created": 1, "model": MODEL,
         "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok " * chunks},
                      "logprobs": None, "finish_reason": "stop"}],
         "usage": {"prompt_tokens": 50, "completion_tokens": chunks, "total_tokens": 50 + chunks}}
    ).encode()  # fmt: skip
    models = json.dumps({"object": "list", "data": [{"id": MODEL, "object": "model", "owned_by": "bench"}]}).encode()

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await serve_lifespan(receive, send)
            return
        body = b""
        more = True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        path = scope["path"]
        if path.endswith("/chat/completions") and (b'"stream": true' in body or b'"stream":true' in body):
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", b"text/event-stream")]})  # fmt: skip
            for frame in sse:
                await send({"type": "http.response.body", "body": frame + b"\n\n", "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            return
        payload = models if path.endswith("/models") else b"" if path == "/health" else completion
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": payload})

    return app


# --- a minimal keep-alive HTTP/1.1 client ------------------------------------------------------------------


class Connection:
    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(self, raw: bytes, timeout_s: float = 30.0) -> int:
        """Send one prepared request, read the whole response; returns the body size."""
        try:
            return await asyncio.wait_for(self._request(raw), timeout_s)
        except TimeoutError:
            self.close()
            self.writer = None
            raise RuntimeError(f"no complete answer within {timeout_s} s") from None

    async def _request(self, raw: bytes) -> int:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        self.writer.write(raw)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        if status != 200:
            raise RuntimeError(f"HTTP {status}: {head[:200]!r}")
        headers = dict(line.split(b":", 1) for line in head.lower().split(b"\r\n")[1:] if b":" in line)
        headers = {k.strip(): v.strip() for k, v in headers.items()}
        size = 0
        if headers.get(b"transfer-encoding") == b"chunked":
            while True:
                line = await self.reader.readuntil(b"\r\n")
                n = int(line.strip().split(b";")[0], 16)
                await self.reader.readexactly(n + 2)
                size += n
                if n == 0:
                    break
        else:
            size = int(headers[b"content-length"])
            await self.reader.readexactly(size)
        if headers.get(b"connection") == b"close":
            self.writer.close()
            self.writer = None
        return size

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def prepare(port: int, path: str, stream: bool, bearer: str | None = None) -> bytes:
    body = json.dumps({"model": MODEL, "messages": [{"role": "user", "content": "benchmark " * 40}],
                       "stream": stream, "max_tokens": 20}).encode()  # fmt: skip
    auth = f"Authorization: Bearer {bearer}\r\n" if bearer else ""
    return (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n{auth}"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


# --- targets -----------------------------------------------------------------------------------------------


@dataclass
class Target:
    name: str
    port: int
    process: subprocess.Popen[bytes] | None = None
    bearer: str | None = None
    latencies: dict[bool, list[float]] = field(default_factory=lambda: {True: [], False: []})
    rps: dict[int, list[float]] = field(default_factory=dict)
    cpu_per_request_ms: list[float] = field(default_factory=list)
    errors: int = 0

    def cpu_seconds(self) -> float:
        if self.process is None:
            return 0.0
        ticks = os.sysconf("SC_CLK_TCK")
        total = 0.0
        for pid in [self.process.pid, *_children(self.process.pid)]:
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            total += (int(fields[11]) + int(fields[12])) / ticks
        return total


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    kids = [int(p) for p in text.split()]
    return kids + [g for k in kids for g in _children(k)]


def _pin(cpu: int) -> list[str]:
    return ["taskset", "-c", str(cpu)] if shutil.which("taskset") and (os.cpu_count() or 1) > 1 else []


def _free_port() -> int:
    from sidecar.serving import free_port

    return free_port()


async def _wait_ready(port: int, path: str, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n".encode())
            status = await reader.readline()
            writer.close()
            if b" 200 " in status:
                return
        except OSError:
            pass
        await asyncio.sleep(0.2)
    raise RuntimeError(f"nothing ready on port {port}{path} after {timeout_s} s")


def start_upstream(port: int, chunks: int) -> subprocess.Popen[bytes]:
    cmd = [*_pin(1), sys.executable, "-m", "sidecar.bench.proxy", "--serve-upstream", str(port),
           "--chunks", str(chunks)]  # fmt: skip
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def start_coordinator(port: int, upstream_port: int) -> subprocess.Popen[bytes]:
    cmd = [*_pin(0), sys.executable, "-m", "sidecar.cli", "up", "--port", str(port),
           "--upstream", f"http://127.0.0.1:{upstream_port}", "--log-level", "warning"]  # fmt: skip
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def start_litellm(port: int, upstream_port: int, workdir: Path) -> subprocess.Popen[bytes]:
    config = workdir / "litellm.yaml"
    config.write_text(
        "model_list:\n"
        f"  - model_name: {MODEL}\n"
        "    litellm_params:\n"
        f"      model: openai/{MODEL}\n"
        f"      api_base: http://127.0.0.1:{upstream_port}/v1\n"
        "      api_key: dummy\n"
        "litellm_settings:\n  telemetry: false\n  drop_params: true\n"
        f"general_settings:\n  master_key: {LITELLM_KEY}\n"
    )
    env = dict(os.environ, LITELLM_LOG="ERROR", LITELLM_TELEMETRY="False")
    cmd = [*_pin(0), str(LITELLM_VENV / "bin" / "litellm"), "--config", str(config), "--port", str(port),
           "--num_workers", "1"]  # fmt: skip
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, cwd=workdir)


def install_litellm() -> None:
    if (LITELLM_VENV / "bin" / "litellm").exists():
        return
    print("installing LiteLLM's proxy into .cache/litellm-venv (its own virtualenv) ...", file=sys.stderr)
    subprocess.run([sys.executable, "-m", "venv", str(LITELLM_VENV)], check=True)
    subprocess.run([str(LITELLM_VENV / "bin" / "pip"), "install", "-q", "litellm[proxy]"], check=True)


# --- measurements ------------------------------------------------------------------------------------------


async def measure_latency(targets: list[Target], requests: int, block: int) -> None:
    for stream in (False, True):
        conns = {t.name: Connection("127.0.0.1", t.port) for t in targets}
        raws = {t.name: prepare(t.port, "/v1/chat/completions", stream, t.bearer) for t in targets}
        for t in targets:  # warm up each connection and code path
            for _ in range(20):
                await _timed(t, conns, raws[t.name])
        for _ in range(max(1, requests // block)):
            for t in targets:
                for _ in range(block):
                    elapsed = await _timed(t, conns, raws[t.name])
                    if elapsed is not None:
                        t.latencies[stream].append(elapsed)
        for conn in conns.values():
            conn.close()


async def _timed(target: Target, conns: dict[str, Connection], raw: bytes) -> float | None:
    """One request on the target's connection; a failure is counted and the connection replaced."""
    start = time.perf_counter()
    try:
        await conns[target.name].request(raw)
    except (OSError, RuntimeError, asyncio.IncompleteReadError):
        target.errors += 1
        conns[target.name].close()
        conns[target.name] = Connection("127.0.0.1", target.port)
        return None
    return time.perf_counter() - start


async def measure_throughput(target: Target, concurrency: int, seconds: float) -> tuple[float, int]:
    raw = prepare(target.port, "/v1/chat/completions", True, target.bearer)
    done = 0
    errors = 0
    stop = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal done, errors
        conn = Connection("127.0.0.1", target.port)
        while time.perf_counter() < stop:
            try:
                await conn.request(raw)
                done += 1
            except (OSError, RuntimeError, asyncio.IncompleteReadError):
                errors += 1
                conn.close()
                conn = Connection("127.0.0.1", target.port)
        conn.close()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return done / (time.perf_counter() - started), errors


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p / 100))]


async def run(args: argparse.Namespace) -> int:
    up_port = _free_port()
    processes: list[subprocess.Popen[bytes]] = [start_upstream(up_port, args.chunks)]
    targets = [Target("direct (upstream)", up_port)]
    try:
        await _wait_ready(up_port, "/v1/models")
        coord = Target("goose-sidecar", _free_port())
        coord.process = start_coordinator(coord.port, up_port)
        processes.append(coord.process)
        targets.append(coord)
        if args.litellm:
            install_litellm()
            lite = Target("litellm proxy", _free_port(), bearer=LITELLM_KEY)
            workdir = Path(tempfile.mkdtemp(prefix="bench-litellm-"))
            lite.process = start_litellm(lite.port, up_port, workdir)
            processes.append(lite.process)
            targets.append(lite)
        for t in targets[1:]:
            await _wait_ready(t.port, "/v1/models" if t.name != "litellm proxy" else "/health/liveliness", 120)
        print(f"upstream pinned to CPU 1 with the load generator; proxies pinned to CPU 0 ({args.chunks} SSE "
              f"chunks per stream)", file=sys.stderr)  # fmt: skip
        print("latency at concurrency 1 ...", file=sys.stderr)
        if (os.cpu_count() or 1) > 1:
            os.sched_setaffinity(0, {1})
        await measure_latency(targets, args.requests, args.block)
        for concurrency in (16, 64):
            for repeat in range(args.repeats):
                for t in targets:
                    print(f"throughput: {t.name} at {concurrency} streams (run {repeat + 1}) ...", file=sys.stderr)
                    cpu0 = t.cpu_seconds()
                    rate, errors = await measure_throughput(t, concurrency, args.seconds)
                    if t.process is not None and rate > 0:
                        served = rate * args.seconds
                        t.cpu_per_request_ms.append((t.cpu_seconds() - cpu0) / served * 1000)
                    t.rps.setdefault(concurrency, []).append(rate)
                    t.errors += errors
        print(report(targets))
        return 0
    finally:
        stop_processes(processes)


def stop_processes(processes: list[subprocess.Popen[bytes]], grace_s: float = 10.0) -> None:
    """Terminate every process, give them `grace_s` together to exit, kill and reap the rest."""
    for p in processes:
        p.terminate()
    for p in processes:
        try:
            p.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def report(targets: list[Target]) -> str:
    direct = targets[0]
    lines = [
        "| target | p50 non-stream (ms) | p99 non-stream | p50 stream (ms) | p99 stream | added p50 non-stream / "
        "stream (ms) | req/s @16 streams | req/s @64 streams | CPU ms / request | failed requests |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for t in targets:
        cells = [t.name]
        for stream in (False, True):
            cells += [f"{pct(t.latencies[stream], 50) * 1000:.2f}", f"{pct(t.latencies[stream], 99) * 1000:.2f}"]
        if t is direct:
            cells.append("-")
        else:
            added = [(pct(t.latencies[s], 50) - pct(direct.latencies[s], 50)) * 1000 for s in (False, True)]
            cells.append(f"{added[0]:+.2f} / {added[1]:+.2f}")
        cells += [f"{statistics.median(t.rps[c]):.0f}" for c in (16, 64)]
        cells.append(f"{statistics.median(t.cpu_per_request_ms):.2f}" if t.cpu_per_request_ms else "-")
        cells.append(str(t.errors))
        lines.append("| " + " | ".join(cells) + " |")
    names = [t.name for t in targets]
    if "litellm proxy" in names:
        ours, lite = targets[names.index("goose-sidecar")], targets[names.index("litellm proxy")]
        ratios = [statistics.median(ours.rps[c]) / max(statistics.median(lite.rps[c]), 1e-9) for c in (16, 64)]
        lines.append(f"\ngoose-sidecar / LiteLLM requests per second: {ratios[0]:.1f}x at 16 streams, "
                     f"{ratios[1]:.1f}x at 64 streams")  # fmt: skip
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/bench proxy", description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=1000, help="sequential requests per target and mode")
    parser.add_argument("--block", type=int, default=100, help="interleaving block size")
    parser.add_argument("--seconds", type=float, default=5.0, help="duration of each throughput run")
    parser.add_argument("--repeats", type=int, default=3, help="throughput runs per target (median reported)")
    parser.add_argument("--chunks", type=int, default=20, help="SSE chunks per streamed answer")
    parser.add_argument("--litellm", action="store_true", help="also measure LiteLLM's proxy (installs it in .cache)")
    parser.add_argument("--serve-upstream", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve_upstream:
        import uvicorn

        uvicorn.run(upstream_app(args.chunks), host="127.0.0.1", port=args.serve_upstream, log_level="warning",
                    access_log=False)  # fmt: skip
        return 0
    return asyncio.run(run(args))


if __name__ == "__main__":
    raise SystemExit(main())
