"""Running git on a hostile repository without running the repository's programs (pure: no I/O).

The workspace's `.git/config` (and every file it includes, and `.gitattributes`) belongs to whoever wrote the
repository. Git runs programs named there from commands the sidecar calls "read-only": a `clean` filter during
`git status`, `textconv` and external diff drivers during `git diff`, `core.fsmonitor` on every index refresh,
hooks on commit, the pager, credential helpers, aliases, `ext::` remotes... The sidecar therefore runs git as:

    git <FIXED_OPTIONS> --git-dir=<root>/.git --work-tree=<root> -c K=V ... <subcommand> ...

where the `-c K=V` pairs are `overrides(keys)`: for every key of the effective configuration (read first with
`git config --list -z`, which only reads files, includes and `includeIf` conditions evaluated as git will) that
names a program, a value that names none. `-c` outranks every configuration file, so whatever the repository
defines, git runs no program of its choosing. The environment is rebuilt (`clean_env`) so no inherited `GIT_*`
variable undoes this.

`refuse_git_args(args)` judges the arguments the model gave to an allowlisted `git` command: global options
(`-c`, `--exec-path`, `--git-dir`...) and the few subcommands and options that run a program by design
(`--upload-pack`, `rebase --exec`, `grep -O`, `difftool`, `bisect run`, `submodule foreach`...) are refused.

What remains (documented in docs/security.md): a program started by `run_tests` can rewrite `.git/config`
between the configuration read and the git run (it already runs code in the workspace by design).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence

from sidecar.core.paths import Refused

# Options every git run gets. They outrank the repository's configuration files; `overrides` covers the rest.
FIXED_CONFIG: tuple[tuple[str, str], ...] = (
    ("core.fsmonitor", "false"),
    ("core.hooksPath", "/dev/null"),
    ("core.pager", "cat"),
    ("core.editor", "false"),
    ("sequence.editor", "false"),
    ("core.askPass", ""),
    ("core.sshCommand", ""),
    ("core.gitProxy", ""),
    ("core.alternateRefsCommand", ""),
    ("core.excludesFile", "/dev/null"),  # a FIFO or a device there would hang git (and it is outside the tree)
    ("core.attributesFile", "/dev/null"),
    ("core.protectHFS", "true"),  # `.GIT`, `.g\u200cit`: refused as paths on every filesystem
    ("core.protectNTFS", "true"),
    ("core.quotePath", "off"),
    ("credential.helper", ""),  # an empty helper resets the list
    ("diff.external", ""),
    ("diff.ignoreSubmodules", "all"),  # a submodule is another repository with its own configuration
    ("status.submoduleSummary", "false"),
    ("submodule.recurse", "false"),
    ("protocol.ext.allow", "never"),  # `ext::sh -c ...` remotes
    ("gc.auto", "0"),
    ("maintenance.auto", "false"),
    ("log.showSignature", "false"),  # would run gpg.program
    ("color.ui", "never"),
    ("mailmap.file", ""),
    ("mailmap.blob", ""),
)
FIXED_OPTIONS: tuple[str, ...] = ("--no-pager", "--no-optional-locks", "--no-replace-objects")

# Keys (lower case, `*` = one subsection, which may contain dots) whose value names a program git may run.
_PROGRAM_KEYS = (
    "filter.*.clean",
    "filter.*.smudge",
    "filter.*.process",
    "diff.*.textconv",
    "diff.*.command",
    "merge.*.driver",
    "pager.*",
    "alias.*",
    "credential.*.helper",
    "gpg.program",
    "gpg.*.program",
    "difftool.*.cmd",
    "difftool.*.path",
    "mergetool.*.cmd",
    "mergetool.*.path",
    "man.*.cmd",
    "man.*.path",
    "browser.*.cmd",
    "browser.*.path",
    "web.browser",
    "sendemail.*",
    "sendemail.*.*",
    "uploadpack.packobjectshook",
    "remote.*.uploadpack",
    "remote.*.receivepack",
    "remote.*.vcs",
    "submodule.*.update",
    "instaweb.*",
    "trace2.*",
    "core.fsmonitor",
    "core.hookspath",
    "core.pager",
    "core.editor",
    "core.askpass",
    "core.sshcommand",
    "core.gitproxy",
    "core.alternaterefscommand",
    "core.worktree",  # the sidecar passes --work-tree itself; the repository must not point git elsewhere
    "sequence.editor",
    "diff.external",
    "credential.helper",
)
_PATTERNS = tuple(re.compile("^" + re.escape(p).replace(r"\*", r"[^\n]+") + "$") for p in _PROGRAM_KEYS)
# The value that makes each kind of key name no program (default: empty, which git reads as "none").
_SAFE_VALUE = {"core.fsmonitor": "false", "core.hookspath": "/dev/null", "core.pager": "cat"}
_SAFE_SUFFIX = {"pager": "false", "submodule": "none"}


def is_program_key(key: str) -> bool:
    """True when configuration key `key` (any case) names a program git may run, or redirects the work tree."""
    lowered = key.lower()
    return any(p.match(lowered) for p in _PATTERNS)


def parse_config_list(raw: str) -> list[str]:
    """The keys of `git config --list -z` output (entries `key\\nvalue\\0`, or `key\\0` for a bare key)."""
    keys = []
    for entry in raw.split("\x00"):
        key = entry.split("\n", 1)[0]
        if key:
            keys.append(key)
    return keys


def overrides(keys: Iterable[str]) -> list[tuple[str, str]]:
    """`FIXED_CONFIG`, then for each program-naming key in `keys` (deduplicated, in order) a value naming none."""
    found: dict[str, tuple[str, str]] = {k.lower(): (k, v) for k, v in FIXED_CONFIG}
    for key in keys:
        lowered = key.lower()
        if lowered in found or not is_program_key(key):
            continue
        section = lowered.split(".", 1)[0]
        value = _SAFE_VALUE.get(lowered, _SAFE_SUFFIX.get(section, ""))
        found[lowered] = (key, value)
    return list(found.values())


def config_args(pairs: Sequence[tuple[str, str]]) -> list[str]:
    """`-c K=V` for each pair; keys with characters git would split on are left out (git refuses them anyway)."""
    out: list[str] = []
    for key, value in pairs:
        if "=" in key or "\x00" in key or "\n" in key or "\x00" in value:
            continue
        out += ["-c", f"{key}={value}"]
    return out


# Environment git gets: nothing inherited that starts with GIT_, then these.
GIT_ENV: dict[str, str] = {
    "GIT_TERMINAL_PROMPT": "0",
    "GIT_PAGER": "cat",
    "PAGER": "cat",
    "GIT_EDITOR": "false",
    "GIT_SEQUENCE_EDITOR": "false",
    "GIT_ASKPASS": "false",
    "SSH_ASKPASS": "false",
    "GIT_OPTIONAL_LOCKS": "0",
    "GIT_NO_REPLACE_OBJECTS": "1",
    "GIT_ATTR_NOSYSTEM": "1",
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_PROTOCOL_FROM_USER": "0",
}


def clean_env(env: Mapping[str, str]) -> dict[str, str]:
    """`env` without any `GIT_*` variable (GIT_DIR, GIT_EXTERNAL_DIFF, GIT_CONFIG_COUNT... could undo the
    overrides) and without editors and pagers, plus `GIT_ENV`."""
    dropped = ("EDITOR", "VISUAL", "PAGER", "LESSOPEN", "LESSCLOSE")
    kept = {k: v for k, v in env.items() if not k.startswith("GIT_") and k not in dropped}
    return {**kept, **GIT_ENV}


# Subcommands that run programs by design, or serve the repository to the network: never for the model.
REFUSED_SUBCOMMANDS = frozenset(
    {
        "daemon",
        "instaweb",
        "web--browse",
        "difftool",
        "mergetool",
        "filter-branch",
        "send-email",
        "imap-send",
        "credential",
        "credential-cache",
        "credential-store",
        "upload-pack",
        "receive-pack",
        "upload-archive",
        "shell",
        "p4",
        "svn",
        "cvsimport",
        "cvsserver",
        "archimport",
        "quiltimport",
        "remote-ext",
        "remote-fd",
        "run-command",
        "hook",
        "fsmonitor--daemon",
        "submodule",
    }
)
# Subcommand -> options (exact, or `--opt=` prefixes) that make it run a program.
_REFUSED_OPTIONS: dict[str, tuple[str, ...]] = {
    "fetch": ("--upload-pack", "-u"),
    "pull": ("--upload-pack", "-u"),
    "clone": ("--upload-pack", "-u", "--template", "--config", "-c", "--recurse-submodules", "--recursive"),
    "ls-remote": ("--upload-pack", "-u"),
    "push": ("--receive-pack", "--exec"),
    "archive": ("--exec", "--remote"),
    "rebase": ("--exec", "-x"),
    "grep": ("--open-files-in-pager", "-O"),
    "bisect": ("run",),
    "config": ("--global", "--system", "--file", "-f", "--blob", "--edit", "-e"),
    "help": ("--web", "-w", "--man", "-m", "--info", "-i"),
    "commit": ("--gpg-sign", "-S"),
    "tag": ("--sign", "-s", "--local-user", "-u"),
    "log": ("--show-signature",),
    "show": ("--show-signature",),
}


def refuse_git_args(args: Sequence[str]) -> Refused | None:
    """Refuse model-chosen `git` arguments (argv after `git`) that make git run a program or leave the jail."""
    if not args:
        return Refused("'git' needs a subcommand")
    if args[0].startswith("-"):
        return Refused(
            f"git's global option '{args[0]}' is not allowed: the sidecar sets git's options itself; "
            "start the command with the subcommand, e.g. 'git log ...'"
        )
    sub = args[0]
    if sub in REFUSED_SUBCOMMANDS:
        return Refused(f"'git {sub}' runs other programs or reaches outside the workspace; it is not allowed")
    for arg in args[1:]:
        if arg == "--":
            break
        for option in _REFUSED_OPTIONS.get(sub, ()):
            short = len(option) == 2 and option.startswith("-")
            if arg == option or arg.startswith(option + "=") or (short and arg.startswith(option)):
                return Refused(f"'git {sub} {option}' runs another program; it is not allowed")
        if arg.startswith("--ext-diff") or arg.startswith("--textconv"):
            return Refused(f"'{arg}' runs the repository's diff programs; it is not allowed")
    return None
