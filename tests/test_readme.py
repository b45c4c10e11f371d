"""The README's commands run as written: its Goose lines are executed by bash against what `goose-config` writes."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from .conftest import ROOT

README = ROOT / "README.md"


def shell_block(section: str) -> str:
    """The first ```bash block under the `## {section}` heading."""
    text = README.read_text(encoding="utf-8")
    start = text.index(f"\n## {section}\n")
    match = re.compile(r"```bash\n(.*?)```", re.S).search(text, start)
    assert match is not None, f"no bash block under {section!r}"
    return match.group(1)


FAKE_GOOSE = """#!{python}
# Stands in for the `goose` binary: records what a real Goose would read (its argv and environment).
import json, os, sys
keys = ("GOOSE_PATH_ROOT", "GOOSE_DISABLE_KEYRING", "GOOSE_PROVIDER", "OPENAI_HOST", "OPENAI_CUSTOM_HEADERS")
with open(os.environ["FAKE_GOOSE_LOG"], "w") as f:
    json.dump({{"argv": sys.argv[1:], "env": {{k: os.environ.get(k) for k in keys}}}}, f)
"""


def test_readme_goose_lines_run_against_what_goose_config_writes(tmp_path: Path) -> None:
    home = tmp_path / "home"
    (home / "src" / "myrepo").mkdir(parents=True)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    goose = bin_dir / "goose"
    goose.write_text(FAKE_GOOSE.format(python=sys.executable))
    goose.chmod(0o755)
    log = tmp_path / "goose.json"
    block = shell_block("Use it with Goose")
    env = {
        "HOME": str(home),
        "PATH": os.pathsep.join([str(bin_dir), str(Path(sys.executable).parent), os.environ["PATH"]]),
        "FAKE_GOOSE_LOG": str(log),
    }
    done = subprocess.run(
        ["bash", "-euc", block], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    seen = json.loads(log.read_text())
    root = home / ".goose-agent-1"
    recipe = Path(seen["argv"][seen["argv"].index("--recipe") + 1])
    assert recipe.is_file() and recipe.is_relative_to(root)
    assert seen["env"] == {
        "GOOSE_PATH_ROOT": str(root),
        "GOOSE_DISABLE_KEYRING": "1",  # else Goose looks for OPENAI_API_KEY in the system keyring
        "GOOSE_PROVIDER": "openai",
        "OPENAI_HOST": "http://127.0.0.1:8080",
        "OPENAI_CUSTOM_HEADERS": "X-Agent-Id=agent-1",
    }
    # The README's lines after the command are exactly the ones the command prints (with ~ for $HOME).
    printed = done.stdout.split("headless run:\n", 1)[1].splitlines()
    printed = [line.strip().replace(str(home), "~") for line in printed if line.strip()]
    readme_lines = [line for line in block.splitlines() if line and not line.startswith(("goose-sidecar", " "))]
    assert readme_lines == printed
