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


DOCS = [
    README,
    *sorted((ROOT / "docs").rglob("*.md")),
    ROOT / "scenarios" / "README.md",
    ROOT / "goose_config" / "README.md",
]


def test_every_relative_link_in_the_docs_resolves() -> None:
    for doc in DOCS:
        for target in re.findall(r"\]\(([^)\s]+)\)", doc.read_text(encoding="utf-8")):
            if target.startswith(("http://", "https://", "#", "mailto:")):
                continue
            path = (doc.parent / target.split("#", 1)[0]).resolve()
            assert path.exists(), f"{doc.relative_to(ROOT)} links to {target}, which does not exist"


def test_the_readme_speaks_to_users() -> None:
    """No development-workspace words; the report it grows out of named; status, versions and simulated figures
    stated; the benchmark tables live in docs/benchmarks.md."""
    text = README.read_text(encoding="utf-8")
    for doc in (README, ROOT / "docs" / "benchmarks.md", ROOT / "docs" / "how-it-works.md"):
        internal = re.search(r"\bthe seed\b|\bseed's\b|the issue's|seed report|DESIGN\.md", doc.read_text())
        assert internal is None, f"{doc.name}: {internal.group(0)!r}"
    assert "silly-goose" in text and "Background Agent Optimizations" in text and "Siddharth Ramakrishnan" in text
    status = text[text.index("\n## Status\n") : text.index("\n## Quickstart\n")]
    assert all(word in status for word in ("Goose", "vLLM", "Modal", "goose-sdk"))
    bench = text[text.index("\n## Benchmarks\n") :]
    assert "simulated seconds" in bench and "docs/benchmarks.md" in bench and "| condition |" not in text
    assert "simulated seconds" in (ROOT / "docs" / "benchmarks.md").read_text()


def development_tree() -> str:
    """The code block under `## Development`."""
    text = README.read_text(encoding="utf-8")
    start = text.index("\n## Development\n")
    match = re.compile(r"```\n(.*?)```", re.S).search(text, start)
    assert match is not None, "no tree under Development"
    return match.group(1)


def test_the_development_tree_names_every_package_and_module() -> None:
    """Each package of `sidecar/` has its line, each line's package exists, and the `sidecar/*.py` entry names
    every top-level module, so the tree a newcomer reads first is the code's."""
    tree = development_tree()
    listed = set(re.findall(r"^sidecar/(\w+)/", tree, re.M))
    packages = {p.parent.name for p in (ROOT / "sidecar").glob("*/__init__.py")}
    assert listed == packages, f"in the code, not the tree: {packages - listed}; gone: {listed - packages}"
    entry = re.search(r"^sidecar/\*\.py(.*?)(?=^\S)", tree, re.M | re.S)
    assert entry is not None, "no sidecar/*.py entry"
    named = set(re.findall(r"\w+", entry.group(1)))
    modules = {p.stem for p in (ROOT / "sidecar").glob("*.py")} - {"__init__"}
    assert modules <= named, f"top-level modules the tree does not name: {sorted(modules - named)}"
