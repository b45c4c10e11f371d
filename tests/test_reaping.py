"""tests/reaping.py, the way tests/vllm/servers.py starts vLLM: the started tree dies with the test process, even when
that is SIGKILLed. A small real tree stands in for vLLM (a server that starts an engine child, as vLLM's API
server starts its EngineCore), so nothing heavy runs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from sidecar.testing import wait_until
from tests import reaping

ROOT = Path(__file__).resolve().parents[1]

# The "server": starts its "engine" child plainly (as vLLM does: same process group, no watch of its own on the
# parent here), prints both pids, then sleeps.
SERVER = (
    "import json, subprocess, sys, time\n"
    "engine = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'])\n"
    "print(json.dumps([__import__('os').getpid(), engine.pid]), flush=True)\n"
    "time.sleep(600)\n"
)
# The "test process": starts the server with `popen_reaped` (or plainly, to see the test fail), prints what the
# server printed, then sleeps until it is killed.
TEST_PROCESS = (
    "import subprocess, sys, time\n"
    "from tests.reaping import popen_reaped\n"
    "argv = [sys.executable, '-c', sys.argv[1]]\n"
    "if sys.argv[2] == 'reaped':\n"
    "    process = popen_reaped(argv, stdout=subprocess.PIPE).process\n"
    "else:\n"
    "    process = subprocess.Popen(argv, stdout=subprocess.PIPE)\n"
    "print(process.stdout.readline().decode().strip(), flush=True)\n"
    "time.sleep(600)\n"
)

pytestmark = pytest.mark.skipif(not reaping.supported(), reason="process groups and killpg are POSIX only")


def alive(pid: int) -> bool:
    """The process exists and is not a zombie (a container's init may be slow to reap one)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    except OSError:  # no /proc (not Linux): whether a signal could reach it
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def start_tree(how: str) -> tuple[subprocess.Popen[bytes], int, int]:
    """The test process, and the pids of the server and the engine it started."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    parent = subprocess.Popen(
        [sys.executable, "-c", TEST_PROCESS, SERVER, how], stdout=subprocess.PIPE, cwd=ROOT, env=env
    )
    assert parent.stdout is not None
    server, engine = json.loads(parent.stdout.readline())
    return parent, server, engine


async def test_the_server_and_its_engine_die_when_the_test_process_is_sigkilled() -> None:
    parent, server, engine = start_tree("reaped")
    try:
        assert alive(server) and alive(engine)
        parent.send_signal(signal.SIGKILL)
        parent.wait(timeout=30)
        await wait_until(lambda: not alive(server) and not alive(engine), "the server and its engine to die")
    finally:
        assert parent.stdout is not None
        parent.stdout.close()
        for pid in (server, engine):
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


async def test_close_reaps_what_a_graceful_stop_left() -> None:
    reaped = reaping.popen_reaped([sys.executable, "-c", SERVER], stdout=subprocess.PIPE)
    assert reaped.process.stdout is not None
    server, engine = json.loads(reaped.process.stdout.readline())
    reaped.process.terminate()  # the server goes; its engine, in its group, stays until the group is reaped
    reaped.process.wait(timeout=30)
    try:
        assert alive(engine)
        reaped.close()
        await wait_until(lambda: not alive(engine), "the engine to die")
    finally:
        reaped.process.stdout.close()
        if alive(engine):
            os.kill(engine, signal.SIGKILL)


def test_popen_reaped_refuses_to_be_given_a_process_group() -> None:
    with pytest.raises(ValueError, match="process group"):
        reaping.popen_reaped([sys.executable, "-c", "pass"], start_new_session=False)
