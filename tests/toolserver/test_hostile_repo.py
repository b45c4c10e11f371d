"""Real hostile repositories: git as the sidecar runs it executes none of the repository's programs and reads
nothing outside the workspace; allowlisted commands cannot write into `.git` or read argument files.

Every hostile configuration is first proven live: plain `git` on the same repository does run the program
(it leaves a marker file outside the workspace), so a test that finds no marker after the sidecar's call
could have failed.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from sidecar.toolserver.settings import SidecarSettings
from sidecar.toolserver.sidecar import Sidecar
from sidecar.toolserver.tools import ToolFailure

from .conftest import settle

PLAIN_ENV = {
    **{k: v for k, v in os.environ.items() if not k.startswith("GIT_")},
    "GIT_CONFIG_NOSYSTEM": "1",
    "HOME": "/nonexistent",
}


def git(workspace: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["git", "-c", "user.email=t@t", "-c", "user.name=t", *args],
        cwd=workspace,
        check=check,
        capture_output=True,
        text=True,
        env=PLAIN_ENV,
        timeout=60,
    )


def make_repo(workspace: Path) -> None:
    git(workspace, "init", "-q", "-b", "main")
    git(workspace, "add", "-A")
    git(workspace, "commit", "-qm", "init")


def append_config(workspace: Path, text: str) -> None:
    with (workspace / ".git" / "config").open("a") as f:
        f.write(text)


def marker_cmd(marker: Path) -> str:
    """A shell command for a git config value: it leaves `marker` and passes its input through."""
    return f"touch {marker}; cat"


def dirty(workspace: Path) -> None:
    """Change a tracked file without changing its size, and give it an old mtime: its stat differs from the index
    but its size does not, so git must hash it, through the clean filter, to know whether it changed."""
    path = workspace / "pkg" / "calc.py"
    text = path.read_text()
    old = next(v for v in ("a + b", "b + a", "a - b") if f"return {v}" in text)
    now = "a - b" if old == "b + a" else "b + a"
    path.write_text(text.replace(f"return {old}", f"return {now}"))
    old_mtime = 1_600_000_000 + next(_AGES)  # a new old mtime each time: never the one the index recorded
    os.utime(path, (old_mtime, old_mtime))


_AGES = itertools.count()


Attack = Callable[[Path, Path], None]  # (workspace, marker) -> plants the hostile configuration


def clean_filter(ws: Path, marker: Path) -> None:
    (ws / ".gitattributes").write_text("*.py filter=evil\n")
    append_config(ws, f'[filter "evil"]\n\tclean = "{marker_cmd(marker)}"\n\tsmudge = cat\n')
    dirty(ws)


def process_filter(ws: Path, marker: Path) -> None:
    (ws / ".gitattributes").write_text("*.py filter=evil2\n")
    append_config(ws, f'[filter "evil2"]\n\tprocess = "touch {marker}"\n')
    dirty(ws)


def fsmonitor(ws: Path, marker: Path) -> None:
    append_config(ws, f'[core]\n\tfsmonitor = "touch {marker}"\n')


def included_filter(ws: Path, marker: Path) -> None:
    """The filter is defined in a file of the working tree, pulled in by include.path."""
    (ws / "evil.cfg").write_text(f'[filter "inc"]\n\tclean = "{marker_cmd(marker)}"\n')
    (ws / ".gitattributes").write_text("*.py filter=inc\n")
    append_config(ws, "[include]\n\tpath = ../evil.cfg\n")
    dirty(ws)


def include_if_fsmonitor(ws: Path, marker: Path) -> None:
    (ws / "cond.cfg").write_text(f'[core]\n\tfsmonitor = "touch {marker}"\n')
    append_config(ws, '[includeIf "onbranch:main"]\n\tpath = ../cond.cfg\n')


STATUS_ATTACKS: dict[str, Attack] = {
    "clean filter": clean_filter,
    "process filter": process_filter,
    "core.fsmonitor": fsmonitor,
    "include.path": included_filter,
    "includeIf onbranch": include_if_fsmonitor,
}


def textconv(ws: Path, marker: Path) -> None:
    (ws / ".gitattributes").write_text("*.py diff=evil\n")
    append_config(ws, f'[diff "evil"]\n\ttextconv = "sh -c \'touch {marker}; cat \\"$1\\"\' -"\n')
    dirty(ws)


def external_diff(ws: Path, marker: Path) -> None:
    append_config(ws, f'[diff]\n\texternal = "touch {marker}"\n')
    dirty(ws)


def driver_command(ws: Path, marker: Path) -> None:
    (ws / ".gitattributes").write_text("*.py diff=cmd\n")
    append_config(ws, f'[diff "cmd"]\n\tcommand = "touch {marker}"\n')
    dirty(ws)


DIFF_ATTACKS: dict[str, Attack] = {
    "textconv": textconv,
    "diff.external": external_diff,
    "diff.X.command": driver_command,
}


@pytest.fixture
def hostile(workspace: Path, make_settings: Callable[..., SidecarSettings]) -> Callable[..., Sidecar]:
    make_repo(workspace)

    def make(**overrides: object) -> Sidecar:
        settle()
        return Sidecar(make_settings(**overrides), env={})

    return make


def prove_live(workspace: Path, marker: Path, *args: str) -> None:
    """Plain git on this repository runs the planted program: the attack is real."""
    git(workspace, *args, check=False)
    assert marker.exists(), f"the hostile configuration did not fire under plain git {args}"
    marker.unlink()


@pytest.mark.parametrize("name", sorted(STATUS_ATTACKS))
async def test_git_status_runs_no_repository_program(
    name: str, hostile: Callable[..., Sidecar], workspace: Path, tmp_path: Path
) -> None:
    marker = tmp_path / f"pwned-{name.replace(' ', '_')}"
    STATUS_ATTACKS[name](workspace, marker)
    prove_live(workspace, marker, "status")
    dirty(workspace)  # plain git refreshed the index; make the file need the filter again
    async with hostile() as sc:
        out = await sc.tools.git_status()
        diff = await sc.tools.git_diff()
    assert not marker.exists()
    assert "pkg/calc.py" in out.text and "-    return a + b" in diff.text


@pytest.mark.parametrize("name", sorted(DIFF_ATTACKS))
async def test_git_diff_and_allowlisted_git_run_no_repository_program(
    name: str, hostile: Callable[..., Sidecar], workspace: Path, tmp_path: Path
) -> None:
    marker = tmp_path / f"pwned-{name.replace(' ', '_')}"
    DIFF_ATTACKS[name](workspace, marker)
    prove_live(workspace, marker, "diff")
    dirty(workspace)
    async with hostile(allow_commands=["git diff *", "git log *", "git show *"]) as sc:
        await sc.tools.git_diff()
        await sc.tools.git_diff("pkg/calc.py")
        for command in ("git diff", "git diff HEAD", "git log -p -1", "git show HEAD"):
            await sc.tools.run_command(command)
    assert not marker.exists()


async def test_hooks_and_hookspath_do_not_run_on_an_allowlisted_commit(
    hostile: Callable[..., Sidecar], workspace: Path, tmp_path: Path
) -> None:
    marker = tmp_path / "pwned-hook"
    for hooks in (workspace / ".git" / "hooks", workspace / "myhooks"):
        hooks.mkdir(exist_ok=True)
        for name in ("pre-commit", "commit-msg", "post-commit", "prepare-commit-msg", "reference-transaction"):
            (hooks / name).write_text(f"#!/bin/sh\ntouch {marker}\n")
            (hooks / name).chmod(0o755)
    append_config(workspace, "[user]\n\temail = t@t\n\tname = t\n")
    dirty(workspace)
    prove_live(workspace, marker, "commit", "-qam", "plain")
    append_config(workspace, "[core]\n\thooksPath = myhooks\n")
    dirty(workspace)
    prove_live(workspace, marker, "commit", "-qam", "plain2")
    dirty(workspace)
    async with hostile(allow_commands=["git commit *", "git add *"]) as sc:
        out = await sc.tools.run_command("git commit -qam agent")
    assert out.exit_code == 0, out.text
    assert not marker.exists()
    assert git(workspace, "log", "-1", "--format=%s").stdout.strip() == "agent"


async def test_aliases_ssh_and_ext_remotes_run_nothing(
    hostile: Callable[..., Sidecar], workspace: Path, tmp_path: Path
) -> None:
    marker = tmp_path / "pwned-remote"
    append_config(
        workspace,
        f'[alias]\n\tpwn = "!touch {marker}"\n\tlog = "!touch {marker}"\n'
        f'[core]\n\tsshCommand = "touch {marker}; false"\n'
        '[remote "origin"]\n\turl = ssh://127.0.0.1:1/x.git\n'
        f'[remote "ext"]\n\turl = "ext::sh -c touch% {marker}"\n'
        "[protocol]\n\tallow = always\n",
    )
    prove_live(workspace, marker, "pwn")
    prove_live(workspace, marker, "fetch", "origin")
    prove_live(workspace, marker, "fetch", "ext")
    async with hostile(allow_commands=["git *"]) as sc:
        for command in ("git pwn", "git fetch origin", "git fetch ext", "git log -1"):
            with contextlib.suppress(ToolFailure):
                await sc.tools.run_command(command)
    assert not marker.exists()


@pytest.mark.parametrize(
    "command",
    [
        "git -c core.fsmonitor=x status",
        "git --exec-path=. status",
        "git --git-dir=/tmp status",
        "git -C / status",
        "git --config-env=core.pager=X log",
        "git fetch --upload-pack=x origin",
        "git fetch -ux origin",
        "git clone -u x src dst",
        "git push --receive-pack=x origin",
        "git archive --exec=x --remote=origin HEAD",
        "git rebase --exec x HEAD~1",
        "git rebase -x x HEAD~1",
        "git grep -O x",
        "git grep --open-files-in-pager=x x",
        "git difftool",
        "git mergetool",
        "git bisect run x",
        "git submodule foreach x",
        "git filter-branch --tree-filter x",
        "git config --global core.pager x",
        "git config --file=x a.b c",
        "git log --ext-diff -p",
        "git diff --textconv",
        "git help -w log",
        "git send-email x",
        "git daemon",
    ],
)
async def test_git_options_that_run_programs_are_refused(
    command: str, hostile: Callable[..., Sidecar], workspace: Path
) -> None:
    async with hostile(allow_commands=["git *"]) as sc:
        with pytest.raises(ToolFailure):
            await sc.tools.run_command(command)


async def test_core_worktree_cannot_point_git_outside(
    hostile: Callable[..., Sidecar], workspace: Path, tmp_path: Path
) -> None:
    outside = tmp_path / "outside"
    (outside / "pkg").mkdir(parents=True)
    (outside / "pkg" / "calc.py").write_text("SECRET = 'outside the workspace'\n")
    append_config(workspace, f"[core]\n\tworktree = {outside}\n")
    assert "SECRET" in git(workspace, "diff").stdout  # plain git reads the outside file
    async with hostile(allow_commands=["git diff *"]) as sc:
        diff = await sc.tools.git_diff()
        status = await sc.tools.git_status()
        command = await sc.tools.run_command("git diff")
    assert "SECRET" not in diff.text + status.text + command.text


def outside_repo(tmp_path: Path) -> Path:
    other = tmp_path / "other-agent"
    (other / "pkg").mkdir(parents=True)
    (other / "pkg" / "calc.py").write_text("OTHER = 'another agent'\n")
    git(other, "init", "-q")
    git(other, "add", "-A")
    git(other, "commit", "-qm", "other")
    (other / "pkg" / "calc.py").write_text("OTHER = 'another agent, uncommitted'\n")
    return other


def gitdir_file(ws: Path, other: Path) -> None:
    subprocess.run(["rm", "-rf", str(ws / ".git")], check=True)
    (ws / ".git").write_text(f"gitdir: {other / '.git'}\n")


def gitdir_symlink(ws: Path, other: Path) -> None:
    subprocess.run(["rm", "-rf", str(ws / ".git")], check=True)
    (ws / ".git").symlink_to(other / ".git")


def objects_symlink(ws: Path, other: Path) -> None:
    subprocess.run(["rm", "-rf", str(ws / ".git" / "objects")], check=True)
    (ws / ".git" / "objects").symlink_to(other / ".git" / "objects")


def alternates(ws: Path, other: Path) -> None:
    (ws / ".git" / "objects" / "info").mkdir(exist_ok=True)
    (ws / ".git" / "objects" / "info" / "alternates").write_text(f"{other / '.git' / 'objects'}\n")


def commondir(ws: Path, other: Path) -> None:
    (ws / ".git" / "commondir").write_text(f"{other / '.git'}\n")


def index_symlink(ws: Path, other: Path) -> None:
    (ws / ".git" / "index").unlink()
    (ws / ".git" / "index").symlink_to(other / ".git" / "index")


@pytest.mark.parametrize(
    "plant",
    [gitdir_file, gitdir_symlink, objects_symlink, alternates, commondir, index_symlink],
    ids=lambda f: f.__name__,
)
async def test_a_repository_reaching_outside_is_refused(
    plant: Callable[[Path, Path], None], hostile: Callable[..., Sidecar], workspace: Path, tmp_path: Path
) -> None:
    other = outside_repo(tmp_path)
    plant(workspace, other)
    async with hostile(allow_commands=["git log *"]) as sc:
        for call in (sc.tools.git_diff, sc.tools.git_status, lambda: sc.tools.run_command("git log -p -1")):
            with pytest.raises(ToolFailure, match=r"outside the workspace|borrows objects"):
                await call()


async def test_a_gitdir_file_inside_the_workspace_is_followed(hostile: Callable[..., Sidecar], workspace: Path) -> None:
    (workspace / ".git").rename(workspace / ".realgit")
    (workspace / ".git").write_text("gitdir: .realgit\n")
    dirty(workspace)
    async with hostile() as sc:
        assert "pkg/calc.py" in (await sc.tools.git_status()).text


async def test_no_repository_means_no_discovery_in_a_parent(
    make_settings: Callable[..., SidecarSettings], tmp_path: Path
) -> None:
    parent = tmp_path / "parent"
    (parent / "ws").mkdir(parents=True)
    (parent / "secret.txt").write_text("parent's file\n")
    git(parent, "init", "-q")
    git(parent, "add", "-A")
    git(parent, "commit", "-qm", "p")
    (parent / "secret.txt").write_text("parent's file, changed: SECRET\n")
    settle()
    async with Sidecar(make_settings(workspace=parent / "ws", allow_commands=["git init"]), env={}) as sc:
        with pytest.raises(ToolFailure, match="not a git repository"):
            await sc.tools.git_diff()
        with pytest.raises(ToolFailure, match="not a git repository"):
            await sc.tools.git_status()
        assert (await sc.tools.run_command("git init")).exit_code == 0  # and creates the workspace's own
        assert (parent / "ws" / ".git").is_dir()
        assert "SECRET" not in (await sc.tools.git_status()).text


async def test_inherited_git_variables_are_dropped(
    hostile: Callable[..., Sidecar], workspace: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    marker = tmp_path / "pwned-env"
    monkeypatch.setenv("GIT_EXTERNAL_DIFF", f"touch {marker}")
    monkeypatch.setenv("GIT_CONFIG_COUNT", "1")
    monkeypatch.setenv("GIT_CONFIG_KEY_0", "core.fsmonitor")
    monkeypatch.setenv("GIT_CONFIG_VALUE_0", f"touch {marker}")
    dirty(workspace)
    async with hostile(allow_commands=["git diff"]) as sc:
        await sc.tools.git_status()
        await sc.tools.run_command("git diff")
    assert not marker.exists()


# -- class 3: allowlisted commands writing where the jail forbids ----------------------------------------


@pytest.mark.parametrize(
    "command",
    [
        "git log --output=.git/config -1",
        "git log --output=.git/hooks/pre-commit -1",
        "git log --output .git/config -1",
        "git log --output=.GIT/config -1",  # `.git` on a case-insensitive filesystem
        "git log --output=.Git/config -1",
        "git log --output=gitlink/config -1",  # a symlink in the tree leading to .git
        "git log --output=./.git/./config -1",
        "git log --output=pkg/../.git/config -1",
        "git log -1 -- .git",
    ],
)
async def test_allowlisted_commands_cannot_name_paths_in_git(
    command: str, hostile: Callable[..., Sidecar], workspace: Path
) -> None:
    (workspace / "gitlink").symlink_to(".git")
    before = (workspace / ".git" / "config").read_bytes()
    async with hostile(allow_commands=["git log *"]) as sc:
        with pytest.raises(ToolFailure):
            await sc.tools.run_command(command)
    assert (workspace / ".git" / "config").read_bytes() == before
    assert not (workspace / ".git" / "hooks" / "pre-commit").exists()


async def test_the_issue_chain_output_into_git_then_an_ordinary_call(
    hostile: Callable[..., Sidecar], workspace: Path, tmp_path: Path
) -> None:
    """With only the README's `git log *`: write a config through --output, then call git_status."""
    marker = tmp_path / "pwned-chain"
    git(workspace, "commit", "-q", "--allow-empty", "-m", f'[core]\n\tfsmonitor = "touch {marker}"')
    async with hostile(allow_commands=["git log *"]) as sc:
        with pytest.raises(ToolFailure):
            await sc.tools.run_command("git log -1 --format=%B --output=.git/config")
        await sc.tools.git_status()
    assert not marker.exists()


@pytest.mark.parametrize(
    "command",
    [
        "sort -o/outside/x pkg/calc.py",
        "sort -o ../x pkg/calc.py",
        "python -m pytest -o cache_dir=/outside/cache",
        "python -m pytest --basetemp=/outside",
        "python -m pytest -p no:x @args.txt",
        "python -m pytest @args.txt",
        "python -m pytest --rootdir=..",
        "python -m pytest --junit-xml=x,/outside/y",
    ],
)
async def test_arguments_are_judged_by_what_the_program_does(
    command: str, hostile: Callable[..., Sidecar], workspace: Path
) -> None:
    (workspace / "args.txt").write_text("--basetemp=/tmp/outside-basetemp\n")
    async with hostile(allow_commands=["sort *", "python -m pytest *"]) as sc:
        with pytest.raises(ToolFailure):
            await sc.tools.run_command(command)


@pytest.mark.parametrize("target", ["@args.txt", "@tests/test_calc.py", " @args.txt"])
async def test_run_tests_refuses_argument_files(
    target: str, hostile: Callable[..., Sidecar], workspace: Path, tmp_path: Path
) -> None:
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "keep.txt").write_text("keep")
    (workspace / "args.txt").write_text(f"--basetemp={victim}\n")
    (workspace / "tests" / "test_calc.py").write_text(f"--basetemp={victim}\n")
    async with hostile() as sc:
        with pytest.raises(ToolFailure, match="'@'"):
            await sc.tools.run_tests(target)
    assert (victim / "keep.txt").exists()


@pytest.mark.parametrize(
    "path", [".GIT/config", ".Git/hooks/pre-commit", ".git./config", ".g\u200cit/config", "GIT~1/config", "a/.GiT"]
)
async def test_write_file_refuses_every_spelling_of_git(
    path: str, hostile: Callable[..., Sidecar], workspace: Path
) -> None:
    async with hostile() as sc:
        with pytest.raises(ToolFailure, match=r"\.git"):
            await sc.tools.write_file(path, "[core]\n\tfsmonitor = x\n")


async def test_test_processes_do_not_inherit_the_sidecars_secrets(
    hostile: Callable[..., Sidecar], workspace: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A repository's test reads its environment: the coordinator key and the sidecar token are not in it."""
    secrets = {
        "GOOSE_SIDECAR_SIDECAR_COORDINATOR_API_KEY": "coordinator-key-0123456789",
        "GOOSE_SIDECAR_SIDECAR_AUTH_TOKEN": "sidecar-token-0123456789",
        "GOOSE_SIDECAR_TOKEN": "goose-token-0123456789",
        "OPENAI_API_KEY": "openai-0123456789",
        "SIDECAR_MODAL_PROXY_SECRET": "modal-0123456789",
    }
    for name, value in secrets.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("KEEP_ME", "ordinary")
    (workspace / "tests" / "test_env.py").write_text(
        "import os\n\ndef test_env():\n    print('ENV=' + repr(sorted(os.environ.items())))\n    assert False\n"
    )
    async with hostile(allow_commands=["env"]) as sc:
        tests = await sc.tools.run_tests("tests/test_env.py")
        command = await sc.tools.run_command("env")
    for text in (tests.text, command.text):
        assert "ordinary" in text
        for value in secrets.values():
            assert value not in text


async def test_file_urls_are_paths_and_network_urls_are_not(
    hostile: Callable[..., Sidecar], workspace: Path, tmp_path: Path
) -> None:
    other = outside_repo(tmp_path)
    async with hostile(allow_commands=["git clone *", "git ls-remote *"]) as sc:
        for command in (f"git clone file://{other} copy", f"git clone {other} copy", "git clone file:///etc copy"):
            with pytest.raises(ToolFailure, match="outside the workspace"):
                await sc.tools.run_command(command)
        # A network URL names no local path: it passes the jail (and fails on the network, here refused fast).
        out = await sc.tools.run_command("git ls-remote https://127.0.0.1:1/x.git")
    assert out.exit_code not in (None, 0)
    assert not (workspace / "copy").exists()
