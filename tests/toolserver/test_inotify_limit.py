"""A sidecar at the kernel's inotify instance limit fails at start-up with the sysctl named, for real: a process of
an otherwise unused uid takes every inotify instance the kernel allows that uid, then starts `goose-sidecar mcp`
and a Watcher (the limit is per uid, so other processes on the machine are not affected)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT, require_tool

NOBODY = 65534
SCRIPT = r"""
import asyncio, ctypes, errno, json, os, sys, tempfile
libc = ctypes.CDLL(None, use_errno=True)
held = []
while len(held) < 100_000:  # the kernel's per-uid limit (fs.inotify.max_user_instances) ends this far sooner
    fd = libc.inotify_init1(os.O_CLOEXEC)
    if fd < 0:
        break
    held.append(fd)
if ctypes.get_errno() != errno.EMFILE:
    sys.exit(f"expected EMFILE, got errno {ctypes.get_errno()}")
workspace = tempfile.mkdtemp()
import contextlib, io
from sidecar.cli import main
stderr = io.StringIO()
with contextlib.redirect_stderr(stderr):
    rc = main(["mcp", "--workspace", workspace])  # in this process: it holds the uid's instances
from sidecar.core.toolcache import Generations
from sidecar.toolserver.watcher import InotifyLimitError, Watcher
try:
    asyncio.run(Watcher(workspace, Generations()).start())
    watcher = "started"
except InotifyLimitError as exc:
    watcher = exc.strerror
print(json.dumps({"held": len(held), "rc": rc, "stderr": stderr.getvalue(), "watcher": watcher}))
"""


def test_the_instance_limit_is_named_at_start_up() -> None:
    setpriv = require_tool("setpriv")
    if os.geteuid() != 0:
        pytest.skip("needs root to run a process as an unused uid")
    as_nobody = [setpriv, f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", sys.executable, "-c"]
    env = {"PATH": os.environ["PATH"], "HOME": "/tmp", "PYTHONPATH": str(ROOT)}
    probe = subprocess.run([*as_nobody, "import sidecar.cli"], capture_output=True, text=True, timeout=60, env=env)
    if probe.returncode != 0:  # e.g. a checkout under a directory only root may enter
        pytest.skip(f"uid {NOBODY} cannot run this checkout: {probe.stderr.strip().splitlines()[-1:]}")
    done = subprocess.run([*as_nobody, SCRIPT], capture_output=True, text=True, timeout=120, check=False, env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["held"] >= 1
    assert seen["rc"] == 1 and "fs.inotify.max_user_instances" in seen["stderr"], seen["stderr"]
    assert "Traceback" not in seen["stderr"]
    assert "fs.inotify.max_user_instances" in seen["watcher"]
