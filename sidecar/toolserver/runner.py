"""Running commands for the sidecar: no shell, a timeout that kills the whole process group, capped output.

Output (stdout and stderr interleaved as they arrive) is kept in full up to a bound while it streams, then
rendered with `cap_head_tail`, so a chatty test run cannot exhaust memory or the model's context.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from sidecar.core.toolformat import cap_head_tail

KEEP_BYTES = 4 * 1024 * 1024  # bytes kept per stream end while streaming (head and tail)


# The sidecar's own secrets, which the repository's code (run_tests, run_command) must not read from its
# environment: its bearer token, the coordinator's API key, Goose's keys, Modal's tokens.
SECRET_PREFIXES = ("GOOSE_SIDECAR_", "SIDECAR_MODAL_", "MODAL_TOKEN_")
SECRET_NAMES = frozenset({"OPENAI_API_KEY", "GOOSE_SIDECAR_TOKEN", "ANTHROPIC_API_KEY", "OPENAI_CUSTOM_HEADERS"})


def child_env(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """`base` (default: this process's environment) without the sidecar's secrets (`SECRET_*`)."""
    base = os.environ if base is None else base
    return {k: v for k, v in base.items() if k not in SECRET_NAMES and not k.startswith(SECRET_PREFIXES)}


@dataclass(frozen=True)
class RunResult:
    argv: tuple[str, ...]
    exit_code: int | None  # None when it timed out
    output: str  # capped
    duration_s: float
    started_at: float  # wall-clock epoch seconds
    timed_out: bool


async def run(
    argv: Sequence[str],
    *,
    cwd: str,
    timeout_s: float,
    max_chars: int,
    env: Mapping[str, str] | None = None,
) -> RunResult:
    """Run `argv` in `cwd` with `env` (default: the sidecar's environment), minus the sidecar's secrets
    (`child_env`); never raises for a failing command (a missing program is exit code 127)."""
    started_at = time.time()
    t0 = time.perf_counter()
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            cwd=cwd,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env=child_env(env),
            start_new_session=True,
        )
    except (FileNotFoundError, PermissionError) as exc:
        return RunResult(tuple(argv), 127, f"{argv[0]}: {exc.strerror}\n", time.perf_counter() - t0, started_at, False)
    assert proc.stdout is not None
    head = bytearray()
    tail = bytearray()
    dropped = 0

    async def pump() -> None:
        nonlocal dropped
        assert proc.stdout is not None
        while chunk := await proc.stdout.read(65536):
            if len(head) < KEEP_BYTES:
                take = KEEP_BYTES - len(head)
                head.extend(chunk[:take])
                chunk = chunk[take:]
            tail.extend(chunk)
            if len(tail) > KEEP_BYTES:
                dropped += len(tail) - KEEP_BYTES
                del tail[: len(tail) - KEEP_BYTES]

    timed_out = False
    try:
        await asyncio.wait_for(asyncio.gather(pump(), proc.wait()), timeout_s)
    except TimeoutError:
        timed_out = True
    finally:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()
        else:
            # The command exited; children it left in its group would otherwise outlive the sidecar's call.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
    middle = f"\n[... {dropped} bytes omitted ...]\n".encode() if dropped else b""
    text = (bytes(head) + middle + bytes(tail)).decode("utf-8", errors="replace")
    output = cap_head_tail(text, max_chars)
    if timed_out:
        output += f"\n[timed out after {timeout_s:g} s; the process group was killed]\n"
    return RunResult(
        tuple(argv), None if timed_out else proc.returncode, output, time.perf_counter() - t0, started_at, timed_out
    )
