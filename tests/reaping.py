"""Subprocess trees that die with the test process, even when that is SIGKILLed (POSIX only).

`popen_reaped(argv, ...)` starts `argv` in a process group of its own, and beside it a watchdog: a small python
that reads a pipe whose only writer is the process that called `popen_reaped`. Whenever that process ends, how
ever it ends (SIGKILL included: the kernel closes its descriptors), the watchdog reads end-of-file and SIGKILLs
the whole group: the started process and every descendant that did not leave its group (vLLM's API server and its
EngineCore child, which a `PR_SET_PDEATHSIG` on the server alone would not reach). `Reaped.close()` does the
same at once (call it after a graceful stop, to reap what is left).
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from typing import Any

# Reads stdin to its end (its writer is gone), then kills the group named in argv[1]; a group already gone is fine.
WATCHDOG = (
    "import os, signal, sys\n"
    "sys.stdin.buffer.read()\n"
    "try:\n"
    "    os.killpg(int(sys.argv[1]), signal.SIGKILL)\n"
    "except ProcessLookupError:\n"
    "    pass\n"
)


def supported() -> bool:
    """Process groups and killpg: POSIX (the real-vLLM tier runs on Linux)."""
    return os.name == "posix"


@dataclass
class Reaped:
    """A started process (its own process group leader) and the watchdog that kills its group."""

    process: subprocess.Popen[bytes]
    watchdog: subprocess.Popen[bytes]
    _pipe: int  # the write end: held open by this process only, for as long as the group may live

    def close(self) -> None:
        """Kill what is left of the group now (the watchdog's EOF) and wait for the watchdog."""
        if self._pipe >= 0:
            os.close(self._pipe)
            self._pipe = -1
        self.watchdog.wait(timeout=30)


def popen_reaped(argv: list[str], **popen: Any) -> Reaped:
    """`subprocess.Popen(argv, **popen)` in a new process group, killed whole when this process ends or on
    `Reaped.close()`. Raises OSError where process groups are not supported (not POSIX)."""
    if not supported():
        raise OSError("popen_reaped needs POSIX process groups")
    if "start_new_session" in popen or "process_group" in popen or "preexec_fn" in popen:
        raise ValueError("popen_reaped sets the process group itself")
    process = subprocess.Popen(argv, start_new_session=True, **popen)  # close_fds: the pipe is not inherited
    read, write = os.pipe()
    try:
        watchdog = subprocess.Popen(
            [sys.executable, "-c", WATCHDOG, str(process.pid)],
            stdin=read,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # not in the test's group: a Ctrl-C there must not kill it before its work
        )
    except BaseException:
        os.close(write)
        process.kill()
        raise
    finally:
        os.close(read)
    os.set_inheritable(write, False)
    return Reaped(process, watchdog, write)
