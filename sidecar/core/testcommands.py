"""Does a shell command line run tests? (pure: `shlex` splitting and a table, no execution.)

Used by the stage rules (`toolactions`: a command tool's call that runs tests is a test run) and by the `kv`
policy's long-tool hold (`longtool`: an answer whose command runs tests frees its KV place sooner).

A command line is read the way a shell would split it (`shlex`, quotes kept together): it is cut into commands at
`&&`, `||`, `;`, `|`, `&`, parentheses and newlines, and each command's program is found past environment
assignments (`PYTHONPATH=. pytest`), shell keywords (`do pytest`), transparent wrappers (`WRAPPERS`: `timeout 300
pytest`, `env`, `time`, `nice`), script runners (`RUN_WRAPPERS`: `uv run`, `poetry run`, `npx`, `pnpm exec` ...),
Python's `-m` (`python -m pytest`) or script (`python manage.py test`), a path (`.venv/bin/pytest`), and
`bash -c '...'` (read again). Only a program in the table (`TEST_RUNNERS`) counts, so `echo pytest`, `cat
test_x.py`, `grep -rn pytest .`, `pip install pytest` and `git commit -m "run pytest"` are not test runs; nor is
`pytest --version` / `--help`. Not detected: test runs behind another program (`docker run img pytest`, `ssh host
make test`), a script that happens to run tests (`./ci.sh`). Never raises: a line that cannot be split
(unbalanced quotes) runs nothing.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Runner:
    """A test runner's program. `subcommands` empty: the program is a test run by itself (`pytest`). Else it runs
    tests only with one of them (`go test`, `npm run test:unit`): as its first non-option word (`anywhere` False),
    or as any non-option word (`anywhere` True: make targets, Maven goals, Gradle tasks: `mvn clean test`).
    `prefix`: a word that starts with it also counts (`make test-unit`, `npm run test:e2e`). `script`:
    the word `run` / `run-script` before the subcommand is skipped (`npm run test`)."""

    subcommands: frozenset[str] = frozenset()
    anywhere: bool = False
    prefix: str = ""
    script: bool = False

    def runs_tests(self, args: Sequence[str]) -> bool:
        if any(a in _NOT_A_RUN for a in args):
            return False
        if not self.subcommands:
            return True
        words = [a for a in args if not a.startswith(("-", "+"))]  # `cargo +nightly test`, `mvn -q test`
        if self.script and words[:1] in (["run"], ["run-script"]):
            words = words[1:]
        return any(self._names_tests(w) for w in (words if self.anywhere else words[:1]))

    def _names_tests(self, word: str) -> bool:
        return word in self.subcommands or (bool(self.prefix) and word.startswith(self.prefix))


_ALWAYS = Runner()
_TEST = frozenset({"test"})
_PACKAGE_SCRIPT = Runner(frozenset({"test", "t"}), prefix="test", script=True)  # npm t, npm run test:unit
# The table: program (its file name, as run) -> when it runs tests.
TEST_RUNNERS: Mapping[str, Runner] = {
    # Python
    "pytest": _ALWAYS,
    "py.test": _ALWAYS,
    "unittest": _ALWAYS,  # python -m unittest
    "nose2": _ALWAYS,
    "tox": _ALWAYS,
    "nox": _ALWAYS,
    "manage.py": Runner(_TEST),  # python manage.py test (Django)
    "setup.py": Runner(_TEST),
    "hatch": Runner(_TEST),  # hatch test (hatch run ... is a wrapper)
    # JavaScript / TypeScript
    "jest": _ALWAYS,
    "vitest": _ALWAYS,
    "mocha": _ALWAYS,
    "npm": _PACKAGE_SCRIPT,
    "pnpm": _PACKAGE_SCRIPT,
    "yarn": _PACKAGE_SCRIPT,
    "bun": _PACKAGE_SCRIPT,
    "deno": Runner(_TEST),
    # compiled languages and their build tools
    "cargo": Runner(frozenset({"test", "nextest"})),
    "go": Runner(_TEST),
    "dotnet": Runner(_TEST),
    "swift": Runner(_TEST),
    "mix": Runner(_TEST),
    "ctest": _ALWAYS,
    "mvn": Runner(frozenset({"test", "verify"}), anywhere=True),
    "mvnw": Runner(frozenset({"test", "verify"}), anywhere=True),
    "gradle": Runner(frozenset({"test", "check"}), anywhere=True),
    "gradlew": Runner(frozenset({"test", "check"}), anywhere=True),
    "make": Runner(frozenset({"test", "check"}), anywhere=True, prefix="test"),  # make test, make test-unit, make check
    # others
    "rspec": _ALWAYS,
    "phpunit": _ALWAYS,
}
# Arguments that make a runner print something and stop: not a test run.
_NOT_A_RUN = frozenset({"--version", "--help"})


@dataclass(frozen=True, slots=True)
class Wrapper:
    """A program that runs the rest of its command line: past its options (`value_options` take the next word as
    their value: `timeout -s KILL`), environment assignments (`env A=1`) and `positionals` words of its own (the
    duration of `timeout 300`)."""

    value_options: frozenset[str] = frozenset()
    positionals: int = 0

    def command(self, args: Sequence[str]) -> list[str]:
        i, own = 0, self.positionals
        while i < len(args):
            arg = args[i]
            if arg in self.value_options:
                i += 2
            elif arg.startswith("-") or _ENV_ASSIGNMENT.fullmatch(arg):
                i += 1
            elif own > 0:
                own, i = own - 1, i + 1
            else:
                break
        return list(args[i:])


_PLAIN = Wrapper()
# Programs that run the rest of their command line.
WRAPPERS: Mapping[str, Wrapper] = {
    "env": Wrapper(frozenset({"-u", "--unset", "-C", "--chdir"})),
    "time": _PLAIN,
    "timeout": Wrapper(frozenset({"-s", "--signal", "-k", "--kill-after"}), positionals=1),
    "nice": Wrapper(frozenset({"-n", "--adjustment"})),
    "nohup": _PLAIN,
    "exec": Wrapper(frozenset({"-a"})),
    "xvfb-run": Wrapper(frozenset({"-n", "-s", "-f", "-e", "-p", "-w"})),
    "xargs": Wrapper(frozenset({"-n", "-P", "-I", "-L", "-d", "-s", "-E", "-a"})),
    "npx": Wrapper(frozenset({"-p", "--package"})),
    "bunx": _PLAIN,
}
# Programs whose sub-command runs the rest of the command line: `uv run pytest`, `pnpm exec vitest`.
_UV_RUN = Wrapper(frozenset({"--with", "--python", "-p", "--package", "--extra", "--group", "--project"}))
RUN_WRAPPERS: Mapping[str, tuple[frozenset[str], Wrapper]] = {
    "uv": (frozenset({"run"}), _UV_RUN),
    "poetry": (frozenset({"run"}), _PLAIN),
    "pipenv": (frozenset({"run"}), _PLAIN),
    "pdm": (frozenset({"run"}), _PLAIN),
    "rye": (frozenset({"run"}), _PLAIN),
    "hatch": (frozenset({"run"}), _PLAIN),
    "pnpm": (frozenset({"exec", "dlx"}), _PLAIN),
    "yarn": (frozenset({"exec", "dlx"}), _PLAIN),
}
_SHELLS = frozenset({"bash", "sh", "zsh", "dash"})
_SHELL_WORDS = frozenset({"!", "{", "}", "if", "then", "else", "elif", "do", "while", "until", "time"})
_SEPARATOR_CHARS = frozenset("&|;()")  # a token of only these ends a command: &&, ||, ;, |, &, (, ), |&, ;;
_ENV_ASSIGNMENT = re.compile(r"[A-Za-z_]\w*=.*", re.DOTALL)
_PYTHON = re.compile(r"python(?:\d+(?:\.\d+)*)?|pypy\d*")
_MAX_DEPTH = 3  # bash -c 'sh -c "..."' nesting read at most this deep


def command_runs_tests(command: str, _depth: int = 0) -> bool:
    """True when one of the commands of the shell command line `command` runs a test runner (module docstring)."""
    if _depth > _MAX_DEPTH:
        return False
    lines = command.replace("\\\n", " ").splitlines()  # a backslash-newline continues the line
    return any(_runs_tests(words, _depth) for line in lines for words in _commands(line))


def _commands(line: str) -> list[list[str]]:
    """The commands of one shell line, each as its words; [] if the line cannot be split (unbalanced quotes)."""
    try:
        lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        lexer.commenters = "#"
        tokens = list(lexer)
    except ValueError:
        return []
    out: list[list[str]] = [[]]
    for token in tokens:
        if token and set(token) <= _SEPARATOR_CHARS:
            out.append([])
        else:
            out[-1].append(token)
    return [words for words in out if words]


def _runs_tests(words: Sequence[str], depth: int) -> bool:
    """One command (its words): does it run a test runner?"""
    words = list(words)
    while words:
        program = words[0].rsplit("/", 1)[-1]
        rest = words[1:]
        if _ENV_ASSIGNMENT.fullmatch(words[0]) or program in _SHELL_WORDS:
            words = rest
        elif program in WRAPPERS:
            words = WRAPPERS[program].command(rest)
        elif program in RUN_WRAPPERS and rest[:1] and rest[0] in RUN_WRAPPERS[program][0]:
            words = RUN_WRAPPERS[program][1].command(rest[1:])
        elif program in _SHELLS:
            script = _shell_script(rest)
            return script is not None and command_runs_tests(script, depth + 1)
        elif _PYTHON.fullmatch(program):
            words = _python_target(rest)
        else:
            runner = TEST_RUNNERS.get(program)
            return runner is not None and runner.runs_tests(rest)
    return False


def _python_target(args: Sequence[str]) -> list[str]:
    """What `python ARGS` runs, as a command: `-m MODULE rest` -> [MODULE, *rest]; `SCRIPT rest` -> [SCRIPT, *rest];
    `-c CODE` or nothing -> []."""
    for i, arg in enumerate(args):
        if arg == "-m":
            return list(args[i + 1 :])
        if arg.startswith("-m") and len(arg) > 2:  # python -mpytest
            return [arg[2:], *args[i + 1 :]]
        if arg.startswith("-c"):
            return []
        if arg in ("-X", "-W"):  # options with a separate value
            continue
        if not arg.startswith("-") and (i == 0 or args[i - 1] not in ("-X", "-W")):
            return [arg, *args[i + 1 :]]
    return []


def _shell_script(args: Sequence[str]) -> str | None:
    """The script of `bash [-opts] -c SCRIPT`, or None."""
    for i, arg in enumerate(args):
        if arg.startswith("-") and "c" in arg[1:] and not arg.startswith("--"):
            return args[i + 1] if i + 1 < len(args) else None
        if not arg.startswith("-"):
            return None
    return None
