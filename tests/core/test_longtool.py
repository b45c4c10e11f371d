"""Does an answer run a long tool (a test run)? The classifier behind `kv_long_tool_keep_s` (core/longtool.py)."""

from __future__ import annotations

import json

import pytest

from sidecar.core.longtool import (
    MAX_BODY_BYTES,
    AnswerToolCalls,
    answer_runs_long_tool,
    body_runs_long_tool,
    call_runs_long_tool,
)
from sidecar.core.testcommands import command_runs_tests


def shell(command: object) -> str:
    return json.dumps({"command": command})


@pytest.mark.parametrize(
    ("name", "arguments", "long"),
    [
        # the sidecar's test tool, whatever its arguments and extension prefix
        ("sidecar__run_tests", "{}", True),
        ("sidecar__run_tests", '{"target": "tests/test_app.py"}', True),
        ("run_tests", "", True),
        ("my_sidecar__run_tests", "not json", True),  # the name alone says it: arguments are not read
        ("a__b__run_tests", "{}", True),  # nested prefixes: the tool's own name is after the last `__`
        ("sidecar__run_tests_later", "{}", False),
        ("sidecar__not_run_tests", "{}", False),
        ("run_tests__read_file", "{}", False),  # an extension named run_tests: its tool is read_file
        # other tools of the sidecar and of Goose
        ("sidecar__read_file", '{"path": "tests/test_app.py"}', False),
        ("sidecar__search", '{"pattern": "pytest"}', False),
        ("developer__text_editor", '{"command": "view", "path": "test_x.py"}', False),
        ("sidecar__write_file", '{"path": "run_tests.sh", "content": "pytest"}', False),
        # command tools: read the command
        ("developer__shell", shell("pytest -x"), True),
        ("sidecar__run_command", shell("python -m pytest tests/"), True),
        ("bash", shell("cargo test"), True),
        ("developer__shell", shell("ls tests"), False),
        ("developer__shell", shell("echo pytest"), False),
        ("developer__shell", shell("cat test_x.py"), False),
        # arguments a command tool cannot run: not long, never an error
        ("developer__shell", "not json", False),
        ("developer__shell", '{"command": "pytest"', False),  # cut short
        ("developer__shell", "", False),
        ("developer__shell", None, False),
        ("developer__shell", '["pytest"]', False),
        ("developer__shell", '{"cmd": "pytest"}', False),  # not the argument the tool reads
        ("developer__shell", shell(["pytest"]), False),
        ("developer__shell", shell(None), False),
        ("developer__shell", "[" * 100_000, False),  # too deep for the JSON parser
    ],
)
def test_a_tool_call_is_long_when_it_is_a_test_run(name: str, arguments: str | None, long: bool) -> None:
    assert call_runs_long_tool(name, arguments) is long


@pytest.mark.parametrize(
    "command",
    [
        "pytest",
        "pytest -x -q tests/test_app.py",
        "py.test",
        "python -m pytest",
        "python3.12 -m pytest -x",
        "python -mpytest",
        "python -W error -m pytest",
        "python -X dev -m pytest",
        "/work/main/.venv/bin/python -m pytest",
        ".venv/bin/pytest",
        "python -m unittest discover",
        "python manage.py test",
        "./manage.py test app",
        "tox -e py312",
        "nox -s tests",
        "PYTHONPATH=. pytest",
        "env -i PATH=/bin pytest",
        "timeout 300 pytest",
        "timeout -s KILL 5m python -m pytest",
        "time pytest",
        "uv run pytest",
        "uv run --with pytest pytest",
        "poetry run pytest -x",
        "hatch run pytest",
        "hatch test",
        "cd tests && pytest",
        "cd x&&pytest",
        "git stash; pytest; git stash pop",
        "ruff check . || pytest",
        "pytest 2>&1 | tail -20",
        "(cd pkg; pytest)",
        "{ pytest; }",
        "for t in a b; do pytest $t; done",
        "ls tests/*.py | xargs -n 1 pytest",
        "ruff check .\npytest",
        "pytest \\\n  -x",
        "bash -c 'cd app && pytest'",
        'bash -lc "npm test"',
        "sh -c \"sh -c 'pytest'\"",
        "npm test",
        "npm t",
        "npm run test",
        "npm run test:unit",
        "npm run-script test",
        "pnpm test",
        "pnpm run test",
        "pnpm exec vitest run",
        "yarn test",
        "yarn test:e2e",
        "bun test",
        "npx jest",
        "npx vitest run",
        "jest --watchAll=false",
        "mocha",
        "deno test",
        "cargo test",
        "cargo +nightly test --workspace",
        "cargo nextest run",
        "go test ./...",
        "go test -run TestX ./pkg",
        "dotnet test",
        "swift test",
        "mix test",
        "make test",
        "make tests",
        "make test-unit",
        "make -j4 check",
        "make -C sub test",
        "mvn test",
        "mvn -q clean test",
        "mvn verify",
        "./mvnw test",
        "gradle test",
        "./gradlew clean test",
        "ctest --output-on-failure",
        "rspec spec/",
        "vendor/bin/phpunit",
    ],
)
def test_commands_that_run_a_test_runner(command: str) -> None:
    assert command_runs_tests(command)


@pytest.mark.parametrize(
    "command",
    [
        "",
        "ls tests",
        "echo pytest",
        "echo 'run pytest next'",
        'printf "%s\\n" pytest',
        "cat test_x.py",
        "cat tests/test_app.py | head -50",
        "grep -rn pytest .",
        "rg 'def test_' tests",
        "pip install pytest",
        "uv pip install pytest",
        "which pytest",
        "command -v pytest",
        "pytest --version",
        "python -m pytest --help",
        "python -c 'import pytest'",
        "python -m pip install -U pytest",
        "python script.py test",
        "git commit -m 'run pytest; fix'",
        "git log --grep pytest",
        'sh -c "echo pytest"',
        "bash run_tests.sh",  # a script that may run tests: not known
        "docker run img pytest",  # behind another program: not detected
        "npm install",
        "npm run build",
        "npm run typecheck",
        "yarn add -D jest",
        "cargo build --tests",
        "cargo check",
        "go vet ./...",
        "go build ./...",
        "make",
        "make build",
        "mvn package -DskipTests",
        "gradle build",
        "ruff check . && mypy sidecar",
        "PYTEST_ADDOPTS=-x",  # an assignment alone runs nothing
        "# pytest",
        "pytest 'unbalanced",  # a line the shell cannot split: not known
        "timeout 300",
        "uv run",
    ],
)
def test_commands_that_do_not_run_tests(command: str) -> None:
    assert not command_runs_tests(command)


def test_an_answer_is_long_when_any_of_its_calls_is() -> None:
    read = ("sidecar__read_file", '{"path": "a.py"}')
    tests = ("developer__shell", shell("pytest -x"))
    assert answer_runs_long_tool([read, tests])
    assert not answer_runs_long_tool([read, read])
    assert not answer_runs_long_tool([])


def chat_body(*calls: tuple[str, str], content: str = "") -> bytes:
    message: dict[str, object] = {"role": "assistant", "content": content}
    if calls:
        message["tool_calls"] = [
            {"id": f"call-{i}", "type": "function", "function": {"name": n, "arguments": a}}
            for i, (n, a) in enumerate(calls)
        ]
    return json.dumps(
        {"id": "x", "choices": [{"index": 0, "message": message, "finish_reason": "tool_calls"}]}
    ).encode()


@pytest.mark.parametrize(
    ("body", "long"),
    [
        (chat_body(("sidecar__run_tests", "{}")), True),
        (chat_body(("sidecar__read_file", '{"path": "a.py"}'), ("developer__shell", shell("make test"))), True),
        (chat_body(("sidecar__read_file", '{"path": "a.py"}')), False),
        (chat_body(content="I would run sidecar__run_tests next."), False),  # text, not a call
        (b'{"choices": [{"message": {"tool_calls": "sidecar__run_tests"}}]}', False),
        (b'{"choices": [{"message": {"tool_calls": [{"function": {"name": 5}}]}}]}', False),
        (b'{"choices": [{"message": {"tool_calls": [{"function": {"name": "run_tests"}}]}}]}', True),
        (b'{"choices": []}', False),
        (b'{"choices": {"0": {}}}', False),
        (b"[]", False),
        (b'{"error": {"message": "boom"}}', False),
        (b'{"choices": [{"message": {"tool_calls": [{"function": {"name": "run_tests"', False),  # cut short
        (b"\xff\xfe not json", False),
    ],
)
def test_a_json_answer_is_read_from_its_first_choice(body: bytes, long: bool) -> None:
    assert body_runs_long_tool(body) is long
    reader = AnswerToolCalls(streamed=False)
    for i in range(0, len(body), 7):  # fed as relayed, in pieces
        reader.feed(body[i : i + 7])
    assert reader.runs_long_tool() is long


def test_a_json_answer_longer_than_the_bound_is_not_read() -> None:
    body = chat_body(("sidecar__run_tests", "{}"), content="x" * MAX_BODY_BYTES)
    reader = AnswerToolCalls(streamed=False)
    reader.feed(body)
    assert not reader.runs_long_tool() and reader.body is None  # nothing kept past the bound


def sse(*frames: object) -> list[bytes]:
    return [b"data: " + json.dumps(f).encode() + b"\n\n" for f in frames] + [b"data: [DONE]\n\n"]


def delta(**fields: object) -> dict[str, object]:
    return {"choices": [{"index": 0, "delta": fields, "finish_reason": None}]}


def finish(reason: str) -> dict[str, object]:
    return {"choices": [{"index": 0, "delta": {}, "finish_reason": reason}]}


def call_delta(index: int, name: str | None = None, arguments: str | None = None) -> dict[str, object]:
    function: dict[str, str] = {}
    if name is not None:
        function["name"] = name
    if arguments is not None:
        function["arguments"] = arguments
    call: dict[str, object] = {"index": index, "function": function}
    if name is not None:
        call.update({"id": f"call-{index}", "type": "function"})
    return delta(tool_calls=[call])


def read(chunks: list[bytes], split: int | None = None) -> bool:
    reader = AnswerToolCalls(streamed=True)
    data = b"".join(chunks)
    pieces = chunks if split is None else [data[i : i + split] for i in range(0, len(data), split)]
    for piece in pieces:
        reader.feed(piece)
    return reader.runs_long_tool()


@pytest.mark.parametrize("split", [None, 1, 5])
def test_a_streamed_answer_is_read_from_its_assembled_tool_calls(split: int | None) -> None:
    command = shell("cd app && python -m pytest -x")
    tests = sse(
        delta(content="Let me run the tests."),
        call_delta(0, "sidecar__read_file", '{"path": '),
        call_delta(0, arguments='"a.py"}'),
        call_delta(1, "developer__shell", command[:9]),
        call_delta(1, arguments=command[9:]),
        finish("tool_calls"),
    )
    assert read(tests, split)
    reads = sse(call_delta(0, "sidecar__read_file", '{"path": "tests/test_a.py"}'), finish("tool_calls"))
    assert not read(reads, split)
    prose = sse(delta(content="I will call sidecar__run_tests."), finish("stop"))
    assert not read(prose, split)


def test_a_streamed_answer_cut_or_broken_before_its_call_completes_is_not_long() -> None:
    cut = sse(call_delta(0, "sidecar__run_tests", "{}"))[:-1]  # no finish, no [DONE]: the call never completed
    assert not read(cut)
    error = [*sse(call_delta(0, "sidecar__run_tests", "{}"))[:-1], b'data: {"error": {"message": "boom"}}\n\n']
    assert not read(error)
    # the first call (the tests) is complete when the second starts, but the answer ends in an error: not long
    after = [*sse(call_delta(0, "sidecar__run_tests", "{}"), call_delta(1, "sidecar__read_file", "{}"))[:-1]]
    assert not read([*after, b'data: {"error": {"message": "boom"}}\n\n', b"data: [DONE]\n\n"])
    assert read([*after, *sse(finish("tool_calls"))])
    odd = [b'data: {"choices": [{"index": 0, "delta": {"tool_calls": 5}}]}\n\n']  # the parser cannot iterate it
    assert not read(odd + sse(call_delta(0, "sidecar__run_tests", "{}"), finish("tool_calls")))
