"""Adversarial tables for git hardening (sidecar/core/gitsafety.py) and `.git` spellings (core/paths.py)."""

from __future__ import annotations

import pytest

from sidecar.core.gitsafety import (
    FIXED_CONFIG,
    clean_env,
    config_args,
    is_program_key,
    overrides,
    parse_config_list,
    refuse_git_args,
)
from sidecar.core.paths import Refused, is_dotgit, is_git_internal


@pytest.mark.parametrize(
    "key",
    [
        "filter.evil.clean",
        "filter.evil.smudge",
        "filter.evil.process",
        "FILTER.Evil.CLEAN",
        "filter.a.b.c.clean",  # a subsection may hold dots
        "diff.x.textconv",
        "diff.x.command",
        "diff.external",
        "merge.x.driver",
        "core.fsmonitor",
        "core.hooksPath",
        "core.pager",
        "pager.log",
        "core.editor",
        "sequence.editor",
        "core.askPass",
        "core.sshCommand",
        "core.gitProxy",
        "core.alternateRefsCommand",
        "core.worktree",
        "credential.helper",
        "credential.https://example.com.helper",
        "gpg.program",
        "gpg.ssh.program",
        "alias.st",
        "difftool.x.cmd",
        "mergetool.x.cmd",
        "man.x.cmd",
        "browser.x.cmd",
        "web.browser",
        "sendemail.smtpServer",
        "sendemail.x.smtpServer",
        "uploadpack.packObjectsHook",
        "remote.origin.uploadpack",
        "remote.origin.receivepack",
        "remote.origin.vcs",
        "submodule.x.update",
        "trace2.eventTarget",
    ],
)
def test_program_keys_are_recognised(key: str) -> None:
    assert is_program_key(key)
    pairs = dict(overrides([key]))
    assert key in pairs and pairs[key] in ("", "false", "cat", "/dev/null", "none")


@pytest.mark.parametrize(
    "key", ["user.name", "core.bare", "remote.origin.url", "filter.x.required", "diff.x.binary", "core.autocrlf"]
)
def test_ordinary_keys_are_left_alone(key: str) -> None:
    assert not is_program_key(key)
    assert key not in dict(overrides([key]))


def test_overrides_always_hold_the_fixed_set_once() -> None:
    pairs = overrides(["core.fsmonitor", "CORE.FSMONITOR", "filter.a.clean", "filter.a.clean"])
    lowered = [k.lower() for k, _ in pairs]
    assert len(lowered) == len(set(lowered))
    assert dict(pairs)["core.fsmonitor"] == "false" and dict(pairs)["core.hooksPath"] == "/dev/null"
    assert {k for k, _ in FIXED_CONFIG} <= {k for k, _ in pairs}


def test_parse_config_list() -> None:
    raw = "core.bare\nfalse\x00filter.x.clean\nsh -c 'a\nb'\x00bare.key\x00\x00"
    assert parse_config_list(raw) == ["core.bare", "filter.x.clean", "bare.key"]
    assert parse_config_list("") == []


def test_config_args_skip_keys_git_would_split() -> None:
    assert config_args([("a.b", "c"), ("x=y.z", ""), ("a.\nb", ""), ("k.v", "\x00")]) == ["-c", "a.b=c"]


def test_clean_env_drops_every_inherited_git_variable() -> None:
    env = clean_env(
        {"PATH": "/bin", "GIT_EXTERNAL_DIFF": "x", "GIT_CONFIG_COUNT": "1", "GIT_DIR": "/x", "EDITOR": "vi"}
    )
    assert env["PATH"] == "/bin" and "GIT_EXTERNAL_DIFF" not in env and "GIT_DIR" not in env
    assert "EDITOR" not in env and env["GIT_EDITOR"] == "false" and "GIT_CONFIG_COUNT" not in env


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["-c", "a=b", "status"],
        ["--exec-path=/x", "status"],
        ["-C", "/", "log"],
        ["--git-dir=/x", "log"],
        ["--work-tree=/x", "log"],
        ["--config-env=a.b=C", "log"],
        ["--namespace=x", "log"],
        ["fetch", "--upload-pack=x"],
        ["fetch", "--upload-pack", "x"],
        ["fetch", "-ux"],
        ["pull", "-u", "x"],
        ["ls-remote", "--upload-pack=x", "origin"],
        ["clone", "--template=x", "a", "b"],
        ["clone", "-c", "core.fsmonitor=x", "a", "b"],
        ["push", "--receive-pack=x"],
        ["push", "--exec=x"],
        ["archive", "--remote=x", "HEAD"],
        ["rebase", "-x", "cmd", "HEAD~1"],
        ["rebase", "--exec=cmd", "HEAD~1"],
        ["grep", "-Ovim", "x"],
        ["grep", "--open-files-in-pager", "x"],
        ["bisect", "run", "x"],
        ["config", "--global", "a.b", "c"],
        ["config", "--system", "a.b", "c"],
        ["config", "-f", "x", "a.b", "c"],
        ["config", "--edit"],
        ["help", "--web", "log"],
        ["log", "--ext-diff"],
        ["diff", "--textconv"],
        ["log", "--show-signature"],
        ["commit", "-S", "-m", "x"],
        ["difftool"],
        ["mergetool"],
        ["submodule", "foreach", "x"],
        ["filter-branch"],
        ["send-email"],
        ["daemon"],
        ["instaweb"],
        ["credential", "fill"],
        ["upload-pack", "."],
        ["hook", "run", "pre-commit"],
    ],
)
def test_git_arguments_that_run_programs_are_refused(args: list[str]) -> None:
    assert isinstance(refuse_git_args(args), Refused)


@pytest.mark.parametrize(
    "args",
    [
        ["log", "--oneline", "-5"],
        ["log", "-p", "--", "-x"],  # after `--` only paths follow
        ["diff", "--stat", "HEAD~1"],
        ["add", "-u"],  # -u means --update for add, not --upload-pack
        ["commit", "-m", "fix", "-s"],
        ["show", "HEAD:pkg/calc.py"],
        ["status", "--short"],
        ["grep", "-n", "pattern"],
        ["rebase", "-i", "HEAD~1"],
    ],
)
def test_ordinary_git_arguments_pass(args: list[str]) -> None:
    assert refuse_git_args(args) is None


@pytest.mark.parametrize(
    ("name", "dotgit"),
    [
        (".git", True),
        (".GIT", True),
        (".Git", True),
        (".git.", True),
        (".git ", True),
        (".git. . ", True),
        (".g\u200cit", True),
        ("\ufeff.git", True),
        (".gi\u200dt", True),
        ("GIT~1", True),
        ("git~1", True),
        (".git::$INDEX_ALLOCATION", True),
        (".gitignore", False),
        (".github", False),
        ("git", False),
        (".git2", False),
        ("x.git", False),
        (".gît", False),
        ("GIT~2", False),
    ],
)
def test_is_dotgit(name: str, dotgit: bool) -> None:
    assert is_dotgit(name) is dotgit
    assert is_git_internal(f"a/{name}/config") is dotgit
