"""A hostile workspace for the sidecar's end-to-end security tests, and a fingerprint of everything outside it.

Layout under a temporary directory `base`:

    base/secret.txt                 SENTINEL text, outside the workspace
    base/ws-evil/secret.txt         a sibling whose name starts with the workspace's (`/w` vs `/w-evil`)
    base/ws/                        the workspace (a git repository with one commit)
        README.md  pkg/calc.py  tests/test_calc.py  big.txt  blob.bin
        link_out   -> base/secret.txt      (file symlink out)
        dir_out    -> base/ws-evil          (directory symlink out)
        link_in    -> pkg/calc.py          (symlink inside: allowed)

`outside_state(base, ws)` fingerprints every path outside the workspace (names, types, sizes, contents, modes),
so a test can prove nothing outside changed, and `SENTINEL` must never appear in any tool's output.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

SENTINEL = "SENTINEL-OUTSIDE-7f3a"
SECRET_NAME = "secret.txt"

FILES = {
    "README.md": "# sample\n",
    "pkg/__init__.py": "",
    "pkg/calc.py": "def add(a, b):\n    return a + b\n",
    "tests/test_calc.py": "def test_ok():\n    assert True\n",
}


def make_workspace(base: Path) -> Path:
    (base / SECRET_NAME).write_text(f"{SENTINEL}\n")
    (base / "ws-evil").mkdir()
    (base / "ws-evil" / SECRET_NAME).write_text(f"{SENTINEL} in ws-evil\n")
    ws = base / "ws"
    ws.mkdir()
    for rel, text in FILES.items():
        path = ws / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    (ws / "blob.bin").write_bytes(bytes(range(256)) * 64)
    (ws / "link_out").symlink_to(base / SECRET_NAME)
    (ws / "dir_out").symlink_to(base / "ws-evil", target_is_directory=True)
    (ws / "link_in").symlink_to("pkg/calc.py")
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.com", "-c", "commit.gpgsign=false"]
    subprocess.run(["git", "init", "-q"], cwd=ws, check=True)
    subprocess.run([*git, "add", "-A"], cwd=ws, check=True)
    subprocess.run([*git, "commit", "-qm", "init"], cwd=ws, check=True)
    return ws


def outside_state(base: Path, ws: Path) -> dict[str, str]:
    """Every entry under `base` except the workspace itself, with what it is."""
    state: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(base, followlinks=False):
        here = Path(dirpath)
        if here == ws or ws in here.parents:
            dirnames[:] = []
            continue
        dirnames[:] = [d for d in dirnames if here / d != ws]
        for name in dirnames + filenames:
            path = here / name
            st = path.lstat()
            if path.is_symlink():
                state[str(path)] = f"link {os.readlink(path)}"
            elif path.is_file():
                state[str(path)] = f"file {st.st_mode:o} {hashlib.sha256(path.read_bytes()).hexdigest()}"
            else:
                state[str(path)] = f"dir {st.st_mode:o}"
    return state
