"""Sample projects for fleet agents: a small Python package with a pytest suite and planted bugs.

`generate_project(seed)` is pure and deterministic: the same seed gives byte-identical files. It picks module
themes from `snippets.THEMES`, shuffles their functions, and plants `bugs` bugs, each a one-line change marked
with the simulator's fix marker (`# sim-fix: <correct line>`, see `sidecar/sim/agent.py`), so the tests of
those functions fail until the agent restores the line. `write_project(project, root)` writes the files and
makes the first git commit (so `git_status` and `git_diff` have a base). One copy per agent.
"""

from __future__ import annotations

import random
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from sidecar.fleet.snippets import THEMES, Snippet, Theme

MARKER = "# sim-fix:"
PACKAGES = ("ledgerkit", "toolbelt", "pantry", "almanac", "stockroom", "tidyutils", "workbench", "notebook")
TASK = (
    "Some tests of this project fail. Find the bugs in the package, fix them, run the test suite until every "
    "test passes, then commit your change with a short message."
)
GIT_IDENTITY = ("-c", "user.name=Fleet Agent", "-c", "user.email=agent@fleet.invalid")


@dataclass(frozen=True, slots=True)
class PlantedBug:
    path: str
    correct: str
    broken: str
    tests: tuple[str, ...]  # the tests of the broken function (those that fail are among them)


@dataclass(frozen=True)
class Project:
    seed: int
    package: str
    files: dict[str, str] = field(default_factory=dict)
    bugs: tuple[PlantedBug, ...] = ()
    test_count: int = 0
    task: str = TASK

    @property
    def source_files(self) -> list[str]:
        return sorted(p for p in self.files if p.startswith(self.package + "/") and p.endswith(".py"))


def generate_project(seed: int, *, modules: int = 4, bugs: int = 2, test_delay_s: float = 0.0) -> Project:
    """The sample project for `seed`: `modules` module themes (1-6) and `bugs` planted bugs (0 or more).

    `test_delay_s` > 0 makes a full test run take that many real seconds longer (`tests/conftest.py` sleeps
    before each test, spread evenly): a real repository's slower, I/O-bound suite, without burning the CPU
    the benchmark machine needs for everything else."""
    if not 1 <= modules <= len(THEMES):
        raise ValueError(f"modules must be 1-{len(THEMES)}, got {modules}")
    rng = random.Random(f"fleet-project:{seed}")
    package = rng.choice(PACKAGES)
    themes = sorted(rng.sample(THEMES, modules), key=lambda t: t.module)
    candidates = [(t, s) for t in themes for s in t.snippets]
    planted = {(t.module, s.name) for t, s in rng.sample(candidates, min(bugs, len(candidates)))}
    files: dict[str, str] = {}
    found: list[PlantedBug] = []
    tests = 0
    for theme in themes:
        snippets = list(theme.snippets)
        rng.shuffle(snippets)
        broken = [s for s in snippets if (theme.module, s.name) in planted]
        path = f"{package}/{theme.module}.py"
        files[path] = render_module(theme, snippets, broken)
        test_text = render_tests(package, theme, snippets)
        files[f"tests/test_{theme.module}.py"] = test_text
        tests += test_text.count("\ndef test_")
        for snippet in broken:
            names = tuple(_test_names(snippet.tests))
            found.append(PlantedBug(path, snippet.bug[0], snippet.bug[1], names))
    files[f"{package}/__init__.py"] = _init(package, themes)
    files["tests/__init__.py"] = ""
    if test_delay_s > 0:
        files["tests/conftest.py"] = _slow_conftest(test_delay_s / max(tests, 1))
    files["pyproject.toml"] = _pyproject(package)
    files["README.md"] = _readme(package, themes)
    files[".gitignore"] = "__pycache__/\n*.pyc\n.pytest_cache/\n"
    return Project(seed, package, dict(sorted(files.items())), tuple(found), tests)


# Words that make the seed's keyword classifier call a request debugging or test work (code_edit/test_analyze);
# writer prompts avoid them so they stay the simple work they are (docs, commit messages).
_NOT_SIMPLE = re.compile(r"\b(?:fix|bug|edit|debug|test)", re.IGNORECASE)


def writer_prompts(seed: int, count: int) -> list[str]:
    """`count` simple requests, alternating a docstring for a function and a commit message for a change.

    These are the seed's "simple tasks" (docstrings and commit messages, `seed/000_bc7af0ed774b52c4.txt`,
    "Model Routing"), asked by a documentation agent in one growing conversation.
    """
    rng = random.Random(f"fleet-writer:{seed}")
    snippets = [s for theme in THEMES for s in theme.snippets if not _NOT_SIMPLE.search(s.source + s.bug[0])]
    rng.shuffle(snippets)
    prompts = []
    for n in range(count):
        snippet = snippets[n % len(snippets)]
        if n % 2 == 0:
            prompts.append(
                "Write a Google-style docstring for the function below. Reply with the docstring only.\n\n"
                f"```python\n{snippet.source}```"
            )
        else:
            broken, correct = snippet.bug[1], snippet.bug[0]
            prompts.append(
                "Write a one-line commit message for this change. Reply with the message only.\n\n"
                f"```diff\n@@ def {snippet.name}\n-    {broken}\n+    {correct}\n```"
            )
    return prompts


def render_module(theme: Theme, snippets: list[Snippet], broken: list[Snippet]) -> str:
    names = ", ".join(f'"{s.name}"' for s in snippets)
    head = [f'"""{theme.doc}"""', "", "from __future__ import annotations", ""]
    if theme.imports:
        head += [*theme.imports, ""]
    head.append(f"__all__ = [{names}]")
    body = []
    for snippet in snippets:
        source = plant(snippet.source, *snippet.bug) if snippet in broken else snippet.source
        body.append("\n\n" + source)
    return "\n".join(head) + "\n" + "".join(body)


def plant(source: str, correct: str, broken: str) -> str:
    """Replace the one line whose stripped text is `correct` by `broken` plus the fix marker."""
    lines = source.split("\n")
    hits = [i for i, line in enumerate(lines) if line.strip() == correct]
    if len(hits) != 1:
        raise ValueError(f"bug line {correct!r} occurs {len(hits)} times")
    line = lines[hits[0]]
    indent = line[: len(line) - len(line.lstrip())]
    lines[hits[0]] = f"{indent}{broken}  {MARKER} {correct}"
    return "\n".join(lines)


def render_tests(package: str, theme: Theme, snippets: list[Snippet]) -> str:
    imports: list[str] = []
    bodies: list[str] = []
    for snippet in snippets:
        kept = []
        for line in snippet.tests.split("\n"):
            if line.startswith("import "):
                if line not in imports:
                    imports.append(line)
            else:
                kept.append(line)
        bodies.append("\n".join(kept).strip("\n"))
    names = ", ".join(sorted(s.name for s in snippets))
    head = [f'"""Tests of {package}.{theme.module}."""', "", *imports]
    head += ["", f"from {package}.{theme.module} import {names}"]
    return "\n".join(head) + "\n\n\n" + "\n\n\n".join(bodies) + "\n"


def write_project(project: Project, root: Path) -> Path:
    """Write the files under `root` (created) and commit them as the repository's first commit."""
    root.mkdir(parents=True, exist_ok=True)
    for rel, text in project.files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    for args in (
        ["init", "-q", "-b", "main"],
        ["config", "user.name", "Fleet Agent"],
        ["config", "user.email", "agent@fleet.invalid"],
        ["add", "-A"],
        [*GIT_IDENTITY, "commit", "-q", "-m", "Initial import"],
    ):
        subprocess.run(["git", *args], cwd=root, check=True, capture_output=True)
    return root


def _test_names(tests: str) -> list[str]:
    return [line[4:].split("(", 1)[0] for line in tests.split("\n") if line.startswith("def test_")]


def _slow_conftest(per_test_s: float) -> str:
    return (
        '"""Shared fixtures: each test waits on a slow service, as the real suite does."""\n\n'
        "import time\n\nimport pytest\n\n\n"
        "@pytest.fixture(autouse=True)\n"
        "def slow_service():\n"
        f"    time.sleep({per_test_s:.6f})\n"
        "    yield\n"
    )


def _init(package: str, themes: list[Theme]) -> str:
    modules = ", ".join(t.module for t in themes)
    return f'"""{package}: small utilities ({modules})."""\n\n__version__ = "0.3.1"\n'


def _pyproject(package: str) -> str:
    return (
        "[project]\n"
        f'name = "{package}"\n'
        'version = "0.3.1"\n'
        'requires-python = ">=3.10"\n\n'
        "[tool.pytest.ini_options]\n"
        'testpaths = ["tests"]\n'
        'pythonpath = ["."]\n'
        'addopts = "-p no:cacheprovider"\n'
    )


def _readme(package: str, themes: list[Theme]) -> str:
    lines = [f"# {package}", "", "Small, dependency-free utilities.", "", "## Modules", ""]
    lines += [f"- `{package}.{t.module}`: {t.doc}" for t in themes]
    lines += ["", "## Development", "", "Run the tests with `python -m pytest -q`.", ""]
    return "\n".join(lines)
