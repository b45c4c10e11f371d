"""Git on the workspace as the sidecar runs it: its own repository only, none of the repository's programs.

`GitRunner.argv(args)` is the command line for `git <args>` (see `sidecar.core.gitsafety` for what is
neutralised and why); `GitRunner.env()` its environment. Before each run:

1. `git_dir()` finds the repository and refuses one that reaches outside the workspace: a `.git` that is a
   symlink or a `gitdir:` file leading out (another agent's repository on the same host), a `commondir`, an
   `objects/info/alternates` entry or a symlinked `objects`/`refs`/`config`... leading out. Git is then told
   `--git-dir` and `--work-tree` explicitly, so neither `core.worktree` nor discovery in a parent directory
   (a workspace without `.git` inside someone else's checkout) can point it elsewhere.
2. The effective configuration's keys are read (`git config --list -z`: reading configuration runs nothing),
   and every key that names a program gets a `-c` override naming none.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import posixpath
import signal
from collections.abc import Mapping

from sidecar.core.gitsafety import FIXED_OPTIONS, clean_env, config_args, overrides, parse_config_list
from sidecar.core.paths import is_within
from sidecar.toolserver.offload import Offload
from sidecar.toolserver.runner import child_env

CONFIG_MAX_BYTES = 4 * 1024 * 1024
CONFIG_READ_TIMEOUT_S = 10.0  # reading configuration is instant; an include naming a FIFO would block it
_LINKED = ("objects", "refs", "config", "HEAD", "index", "packed-refs", "info", "hooks", "logs", "commondir")


class GitRefused(Exception):
    """The repository cannot be used safely; the message is for the model."""


class GitRunner:
    """Hardened git for one workspace root (a real path)."""

    def __init__(self, root: str, offload: Offload, *, base_env: Mapping[str, str] | None = None) -> None:
        self.root = root
        self.offload = offload
        self.base_env = os.environ if base_env is None else base_env

    def git_dir(self) -> str:
        """Blocking (off the loop only): the workspace's own git directory (`<root>/.git`, or what a `.git` file
        inside names), checked."""
        dotgit = posixpath.join(self.root, ".git")
        try:
            st = os.lstat(dotgit)
        except FileNotFoundError:
            return dotgit  # git answers "not a git repository", and never looks in parent directories
        if os.path.isfile(dotgit) and not os.path.islink(dotgit):
            if st.st_size > 4096:
                raise GitRefused("the workspace's .git file is not a 'gitdir:' pointer")
            with open(dotgit, encoding="utf-8", errors="replace") as f:
                text = f.read().strip()
            if not text.startswith("gitdir:"):
                raise GitRefused("the workspace's .git file is not a 'gitdir:' pointer")
            target = posixpath.join(self.root, text[len("gitdir:") :].strip())
        else:
            target = dotgit
        real = os.path.realpath(target)
        self._inside(real, ".git")
        self._check_links(real)
        return real

    def _inside(self, path: str, what: str) -> None:
        if not is_within(self.root, posixpath.normpath(os.path.realpath(path))):
            raise GitRefused(
                f"the workspace's git repository reaches outside the workspace ({what} leads to "
                f"{os.path.realpath(path)}); the sidecar only runs git on a repository inside {self.root}"
            )

    def _check_links(self, git_dir: str) -> None:
        for name in _LINKED:
            path = posixpath.join(git_dir, name)
            if os.path.islink(path):
                self._inside(path, f".git/{name}")
        commondir = posixpath.join(git_dir, "commondir")
        if os.path.isfile(commondir):
            with open(commondir, encoding="utf-8", errors="replace") as f:
                common = f.read(4096).strip()
            self._inside(posixpath.join(git_dir, common), ".git/commondir")
        for name in ("alternates", "http-alternates"):
            alternates = posixpath.join(git_dir, "objects", "info", name)
            if os.path.lexists(alternates):
                if name == "http-alternates" or not os.path.isfile(alternates):
                    raise GitRefused(f"the workspace's repository borrows objects ({alternates}); not supported")
                with open(alternates, encoding="utf-8", errors="replace") as f:
                    lines = f.read(65536).splitlines()
                for line in lines:
                    line = line.strip()
                    if line and not line.startswith("#"):
                        self._inside(posixpath.join(git_dir, "objects", line), "objects/info/alternates")

    def _exists(self) -> bool:
        return os.path.lexists(posixpath.join(self.root, ".git"))

    def _repository(self) -> tuple[str, bool]:
        return self.git_dir(), self._exists()

    def env(self) -> dict[str, str]:
        return clean_env(child_env(self.base_env))

    def _prefix(self, git_dir: str, config: list[str]) -> list[str]:
        return ["git", *FIXED_OPTIONS, f"--git-dir={git_dir}", f"--work-tree={self.root}", *config]

    async def argv(self, args: list[str]) -> list[str]:
        """The full command line for `git <args>`: checked repository, every program-naming key neutralised."""
        git_dir, exists = await self.offload(self._repository)
        listing = ""
        if exists:  # none yet (`git init`): no repository configuration to neutralise
            prefix = self._prefix(git_dir, config_args(overrides(())))
            listing = await self._config_listing([*prefix, "config", "-l", "-z"])
        return [*self._prefix(git_dir, config_args(overrides(parse_config_list(listing)))), *args]

    async def _config_listing(self, argv: list[str]) -> str:
        """`git config --list -z` in full (stderr apart), or GitRefused: a listing cut short could hide a key."""
        proc = await asyncio.create_subprocess_exec(
            *argv,
            cwd=self.root,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
            env=self.env(),
            start_new_session=True,
        )
        try:
            assert proc.stdout is not None
            async with asyncio.timeout(CONFIG_READ_TIMEOUT_S):
                data = await proc.stdout.read(CONFIG_MAX_BYTES + 1)
                await proc.wait()
        except TimeoutError:
            raise GitRefused(
                "reading the repository's git configuration did not finish (does an include name a FIFO?)"
            ) from None
        finally:
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                await proc.wait()
        if len(data) > CONFIG_MAX_BYTES:
            raise GitRefused(f"the repository's git configuration is over {CONFIG_MAX_BYTES} bytes; not supported")
        if proc.returncode not in (0, 1):  # 1: no configuration at all
            raise GitRefused("git could not read the repository's configuration (run 'git config -l' to see why)")
        return data.decode("utf-8", errors="replace")
