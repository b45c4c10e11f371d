"""Tool calls -> stage: tool events from the sidecar (and Goose hooks)."""

from __future__ import annotations

import pytest

from sidecar.core.stages import (
    Stage,
)
from sidecar.core.toolactions import (
    ToolAction,
    is_docs_path,
    normalize_tool_name,
    stage_from_tool_event,
    stage_of_action,
)
from tests.core.messages import PYTEST_FAIL, PYTEST_PASS

# ---------------------------------------------------------------------------------------------------------------
# Tool events from the sidecar (and Goose hooks)


@pytest.mark.parametrize(
    ("tool", "ok", "exit_code", "paths", "command", "expected"),
    [
        # the sidecar's tools
        ("read_file", True, None, ["src/app.py"], None, Stage.EXPLORE),
        ("list_dir", True, None, ["."], None, Stage.EXPLORE),
        ("search", True, None, [], None, Stage.EXPLORE),
        ("write_file", True, None, ["src/app.py"], None, Stage.CODE_EDIT),
        ("edit_file", True, None, ["src/app.py"], None, Stage.CODE_EDIT),
        ("edit_file", False, None, ["src/app.py"], None, Stage.CODE_EDIT),  # a failed edit is retried: still editing
        ("write_file", True, None, ["README.md"], None, Stage.DOCS),
        ("write_file", True, None, ["docs/guide.txt"], None, Stage.DOCS),
        ("edit_file", True, None, ["docs/api.rst", "docs/index.md"], None, Stage.DOCS),
        ("edit_file", True, None, ["README.md", "src/app.py"], None, Stage.CODE_EDIT),
        ("write_file", True, None, [], None, Stage.CODE_EDIT),
        ("run_tests", True, 1, [], None, Stage.TEST_ANALYZE),
        ("run_tests", False, None, [], None, Stage.TEST_ANALYZE),
        ("run_tests", True, 0, [], None, Stage.CODE_EDIT),  # passed: back in the edit-test loop
        ("run_tests", True, 5, [], None, Stage.TEST_ANALYZE),  # pytest: no tests collected
        ("git_commit", True, 0, [], None, Stage.COMMIT_MSG),
        ("git_add", True, 0, ["src/app.py"], None, Stage.COMMIT_MSG),
        ("git_diff", True, 0, [], None, Stage.EXPLORE),
        ("git_log", True, 0, [], None, Stage.EXPLORE),
        ("run_command", True, 0, [], "git commit -m 'fix parser'", Stage.COMMIT_MSG),
        ("run_command", True, 1, [], "python -m pytest -x", Stage.TEST_ANALYZE),
        ("run_command", True, 0, [], "python -m pytest -x", Stage.CODE_EDIT),
        ("run_command", True, 0, [], "ruff check .", None),  # a command that succeeded says nothing
        ("run_command", True, 2, [], "ruff check .", Stage.TEST_ANALYZE),  # a failing command: analysis
        ("run_command", True, 1, [], "grep -rn needle src", Stage.EXPLORE),  # grep's 1 means "no match"
        ("run_command", True, 0, [], None, None),
        # the sidecar's events carry a run_command's first two words only
        ("run_command", True, 0, [], "git commit", Stage.COMMIT_MSG),
        ("run_command", True, 0, [], "pytest -q", Stage.CODE_EDIT),
        ("run_command", True, 1, [], "python -m", Stage.TEST_ANALYZE),
        ("run_command", True, 0, [], "python -m", None),
        # extension prefixes, Goose's developer tools
        ("sidecar__read_file", True, None, ["a.py"], None, Stage.EXPLORE),
        ("ext__edit_file", True, None, ["a.py"], None, Stage.CODE_EDIT),
        ("developer__shell", True, 0, [], "rg -n 'def parse' src", Stage.EXPLORE),
        ("shell", True, 1, [], "cd pkg && pytest -q tests/test_parse.py", Stage.TEST_ANALYZE),
        ("shell", True, 0, [], "cat > CHANGELOG.md <<'EOF'\n- fix\nEOF", Stage.DOCS),
        ("shell", True, 0, [], "sed -i 's/a/b/' src/app.py", Stage.CODE_EDIT),
        ("write", True, None, ["src/app.py"], None, Stage.CODE_EDIT),
        ("edit", True, None, ["docs/usage.md"], None, Stage.DOCS),
        ("tree", True, None, ["."], None, Stage.EXPLORE),
        ("developer__text_editor", True, None, ["a.py"], "view", Stage.EXPLORE),
        ("developer__text_editor", True, None, ["a.py"], "str_replace", Stage.CODE_EDIT),
        ("developer__text_editor", True, None, ["a.py"], "undo_edit", Stage.CODE_EDIT),
        ("developer__text_editor", True, None, ["a.py"], None, None),
        ("SIDECAR__READ_FILE", True, None, [], None, Stage.EXPLORE),
        ("computercontroller__web_search", True, None, [], None, None),
        ("read_image", True, None, ["x.png"], None, None),
    ],
)
def test_stage_from_tool_event(
    tool: str, ok: bool, exit_code: int | None, paths: list[str], command: str | None, expected: Stage | None
) -> None:
    assert stage_from_tool_event(tool, ok, exit_code, paths, command) is expected


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        ("cat src/app.py", Stage.EXPLORE),
        ("sed -n '1,40p' src/app.py", Stage.EXPLORE),
        ("rg -n parse src | head -20", Stage.EXPLORE),
        ("ls -la && find . -name '*.py' | wc -l", Stage.EXPLORE),
        ("grep -r pytest .", Stage.EXPLORE),  # mentions pytest, runs nothing
        ("git status && git log --oneline -5", Stage.EXPLORE),
        ("git diff src/", Stage.EXPLORE),
        ("ls 2>/dev/null", Stage.EXPLORE),
        ("git diff --staged", Stage.COMMIT_MSG),
        ("git add -A && git commit -m 'wip'", Stage.COMMIT_MSG),
        ("git -C repo commit --amend --no-edit", Stage.COMMIT_MSG),
        ("git --no-pager log", Stage.EXPLORE),
        ("pytest -q 2>&1 | tail -30", Stage.TEST_ANALYZE),
        ("FOO=1 python -m pytest", Stage.TEST_ANALYZE),
        ("npm test", Stage.TEST_ANALYZE),
        ("npm run test -- --watch=false", Stage.TEST_ANALYZE),
        ("cargo test", Stage.TEST_ANALYZE),
        ("go test ./...", Stage.TEST_ANALYZE),
        ("make test", Stage.TEST_ANALYZE),
        ("python -m unittest discover", Stage.TEST_ANALYZE),
        ("uv run --with pytest-cov pytest -q", Stage.TEST_ANALYZE),  # the runner behind a script runner
        ("timeout 300 make test-unit", Stage.TEST_ANALYZE),
        ("bash -c 'cd pkg && pytest'", Stage.TEST_ANALYZE),
        ("echo 'now run pytest' && python scripts/gen.py", None),  # mentions pytest, runs no runner
        ("pip install pytest", None),
        ("pytest --version", None),
        ("echo 'x = 1' >> src/config.py", Stage.CODE_EDIT),
        ("patch -p1 < fix.diff", Stage.CODE_EDIT),
        ("git apply fix.diff", Stage.CODE_EDIT),
        ("echo hello", None),
        ("cd src", None),
        ("python scripts/gen.py", None),
        ("latest_version --check", None),
    ],
)
def test_shell_commands_whose_outcome_is_unknown(command: str, expected: Stage | None) -> None:
    found = stage_of_action(ToolAction("developer__shell", command=command))
    assert (found[0] if found else None) is expected


@pytest.mark.parametrize(
    ("output", "expected"),
    [
        (PYTEST_FAIL, Stage.TEST_ANALYZE),
        (PYTEST_PASS, Stage.CODE_EDIT),
        ("===== 1 error in 0.1s =====", Stage.TEST_ANALYZE),
        ("===== 0 failed, 3 passed =====", Stage.CODE_EDIT),
        ("Traceback (most recent call last):\n  File ...\nImportError: x", Stage.TEST_ANALYZE),
        ("FAIL src/parse.test.js\n  ● parses", Stage.TEST_ANALYZE),
        ("--- FAIL: TestParse (0.00s)", Stage.TEST_ANALYZE),
        ("ok  \tpkg/parse\t0.01s", Stage.CODE_EDIT),
        ("thread 'main' panicked at src/lib.rs:3:5", Stage.TEST_ANALYZE),
        ("Ran 3 tests in 0.001s\n\nFAILED (failures=1)", Stage.TEST_ANALYZE),
        ("command exited with code 1", Stage.TEST_ANALYZE),
        ("exit code: 0\n3 passed", Stage.CODE_EDIT),
        ('{"exit_code": 2, "output": "..."}', Stage.TEST_ANALYZE),
        ("collected 0 items\n\nno tests ran in 0.01s", Stage.TEST_ANALYZE),
        ("", Stage.CODE_EDIT),
    ],
)
def test_test_outcome_from_output(output: str, expected: Stage) -> None:
    found = stage_of_action(ToolAction("sidecar__run_tests", output=output))
    assert found is not None
    assert found[0] is expected


@pytest.mark.parametrize(
    ("output", "expected"),
    [
        ("PASSED\n" * 50_000 + "===== 1 failed, 9 passed =====", Stage.TEST_ANALYZE),  # the verdict is last
        ("FAILED test_a\n" + "PASSED\n" * 50_000, Stage.TEST_ANALYZE),  # ... or first
        ("PASSED\n" * 20_000 + "FAILED test_a\n" + "PASSED\n" * 20_000 + "=== 9 passed ===", Stage.CODE_EDIT),
    ],
)
def test_long_outputs_are_read_at_their_ends(output: str, expected: Stage) -> None:
    found = stage_of_action(ToolAction("run_tests", output=output))
    assert found is not None and found[0] is expected


def test_a_test_run_with_no_outcome_yet_is_analysis() -> None:
    assert stage_of_action(ToolAction("run_tests")) == (Stage.TEST_ANALYZE, "run_tests: tests ran")


@pytest.mark.parametrize(
    ("tool", "name"),
    [("sidecar__read_file", "read_file"), ("a__b__edit", "edit"), ("Shell", "shell"), ("write", "write")],
)
def test_normalize_tool_name(tool: str, name: str) -> None:
    assert normalize_tool_name(tool) == name


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("README.md", True),
        ("docs/index.html", True),
        ("doc/api.txt", True),
        ("pkg/Documentation/x.py", True),
        ("guide.rst", True),
        ("notes.MDX", True),
        ("book.adoc", True),
        ("src/docs.py", False),  # a module named docs, not a docs folder
        ("docs", False),
        ("src/app.py", False),
        ("requirements.txt", False),
        ("C:\\repo\\docs\\a.txt", True),
    ],
)
def test_is_docs_path(path: str, expected: bool) -> None:
    assert is_docs_path(path) is expected
