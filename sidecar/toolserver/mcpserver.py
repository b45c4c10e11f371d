"""The MCP surface of the sidecar: its nine tools registered on the official SDK's `MCPServer`.

`build_mcp(sidecar)` names, describes and types each tool (arguments with their bounds, as the model reads
them; text results, no structured duplicate) and routes every call through `Sidecar.invoke` (`call`), which
runs the body and reports it. Here MCP meets the tools: a `ToolFailure` becomes MCP's `ToolError` (the model
reads the message), and the call's Goose session id is found: `_meta["agent-session-id"]`, as Goose sends it;
else the `agent-session-id` header; else `$AGENT_SESSION_ID`, which Goose sets for stdio (the reporter's
default). Nothing else in the sidecar imports `mcp`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Annotated, Any

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import ToolAnnotations
from pydantic import Field

from sidecar import __version__
from sidecar.core.wire import SESSION_HEADER, ToolName
from sidecar.toolserver.tools import ToolFailure

if TYPE_CHECKING:
    from sidecar.toolserver.sidecar import Body, Sidecar

SESSION_META_KEY = SESSION_HEADER  # Goose sends it as `_meta` of every tool call, and as an HTTP header

INSTRUCTIONS = """\
Workspace tools for coding. Prefer them to shell commands: read_file instead of cat/sed, search instead of \
rg/grep, list_dir instead of ls/find, run_tests instead of running the test suite in a shell. Their results are \
cached and always match the files as they are now (a changed file is never served stale), so repeating a call \
is cheap. Paths are relative to the workspace root (absolute paths inside it work too). edit_file replaces one \
exact, unique snippet; read the file first."""


async def call(
    sidecar: Sidecar,
    tool: str,
    ctx: Context | None,
    body: Body,
    *,
    target: str | None = None,
    args: Mapping[str, Any] | None = None,
) -> str:
    """One MCP tool call: `Sidecar.invoke` for the call's session, its `ToolFailure` raised as `ToolError`."""
    try:
        return await sidecar.invoke(tool, session_id_of(ctx), body, target=target, args=args)
    except ToolFailure as exc:
        raise ToolError(str(exc)) from exc


def session_id_of(ctx: Context | None) -> str | None:
    """Goose's session id for this call: `_meta["agent-session-id"]`, else the HTTP header of that name."""
    if ctx is None:
        return None
    try:
        request = ctx.request_context
    except ValueError:
        return None
    meta = request.meta
    if meta:
        value = meta.get(SESSION_META_KEY)
        if isinstance(value, str) and value:
            return value
    headers = ctx.headers
    if headers is not None:
        value = headers.get(SESSION_META_KEY)
        if value:
            return str(value)
    return None


PathArg = Annotated[
    str, Field(description="File path relative to the workspace root (an absolute path inside it also works)")
]
DirArg = Annotated[str, Field(description="Directory relative to the workspace root; '.' is the root")]
StartLine = Annotated[int | None, Field(ge=1, description="First line to show, 1-based (default 1)")]
EndLine = Annotated[int | None, Field(ge=1, description="Last line to show, inclusive (default: the end)")]
Depth = Annotated[int, Field(ge=1, le=10, description="How many directory levels to list (1 = direct children)")]
Pattern = Annotated[str, Field(description="Regular expression (ripgrep / Python syntax), matched per line")]
SearchPath = Annotated[str, Field(description="Directory or file to search, relative to the workspace root")]
Glob = Annotated[
    str | None, Field(description="Only files matching this glob, gitignore syntax, e.g. '*.py'; '!' excludes")
]
MaxResults = Annotated[int | None, Field(ge=1, le=1000, description="At most this many matching lines")]
Content = Annotated[str, Field(description="The complete new content of the file")]
Before = Annotated[str, Field(description="Exact text to replace; must occur exactly once in the file")]
After = Annotated[str, Field(description="Text to put in its place (may be empty to delete)")]
TestTarget = Annotated[
    str | None,
    Field(description="Optional test file or node id, e.g. tests/test_api.py or tests/test_api.py::test_login"),
]
Command = Annotated[str, Field(description="Command line to run (no shell); must match the sidecar's allowlist")]
OptPath = Annotated[str | None, Field(description="Limit the diff to this path, relative to the workspace root")]
Staged = Annotated[bool, Field(description="Show staged changes (git diff --cached) instead of unstaged ones")]


def _hints(*, read_only: bool, destructive: bool = False, idempotent: bool = True, title: str) -> ToolAnnotations:
    return ToolAnnotations(
        title=title,
        read_only_hint=read_only,
        destructive_hint=destructive,
        idempotent_hint=idempotent,
        open_world_hint=False,
    )


def build_mcp(sidecar: Sidecar) -> MCPServer:
    """The MCP server with the sidecar's nine tools (text results, no structured duplicate)."""
    mcp: MCPServer = MCPServer(name="sidecar", version=__version__, instructions=INSTRUCTIONS)
    tools = sidecar.tools

    @mcp.tool(
        name=ToolName.READ_FILE,
        description="Read a text file with line numbers. The first line says which lines are shown "
        "('path (lines a-b of N)'); each following line is the line number, a tab, and the text. Long files "
        "are cut with a note saying how to continue (pass start_line/end_line to read a range).",
        annotations=_hints(read_only=True, title="Read file"),
        structured_output=False,
    )
    async def read_file(
        path: PathArg, start_line: StartLine = None, end_line: EndLine = None, ctx: Context | None = None
    ) -> str:
        args = {"path": path, "start_line": start_line, "end_line": end_line}
        return await call(
            sidecar, ToolName.READ_FILE, ctx, lambda: tools.read_file(path, start_line, end_line), args=args
        )

    @mcp.tool(
        name=ToolName.LIST_DIR,
        description="List files and directories under a directory (gitignored entries and .git are left out), "
        "one path per line relative to the workspace root; directories end in '/'.",
        annotations=_hints(read_only=True, title="List directory"),
        structured_output=False,
    )
    async def list_dir(path: DirArg = ".", depth: Depth = 2, ctx: Context | None = None) -> str:
        return await call(
            sidecar, ToolName.LIST_DIR, ctx, lambda: tools.list_dir(path, depth), args={"path": path, "depth": depth}
        )

    @mcp.tool(
        name=ToolName.SEARCH,
        description="Search file contents with a regular expression (like ripgrep): one 'path:line:text' per "
        "matching line, gitignored and binary files skipped. Narrow it with path and glob.",
        annotations=_hints(read_only=True, title="Search files"),
        structured_output=False,
    )
    async def search(
        pattern: Pattern,
        path: SearchPath = ".",
        glob: Glob = None,
        max_results: MaxResults = None,
        ctx: Context | None = None,
    ) -> str:
        args = {"pattern": pattern, "path": path, "glob": glob, "max_results": max_results}
        return await call(
            sidecar, ToolName.SEARCH, ctx, lambda: tools.search(pattern, path, glob, max_results), args=args
        )

    @mcp.tool(
        name=ToolName.WRITE_FILE,
        description="Create a file or replace its whole content (parent directories are created). "
        "For a small change to an existing file use edit_file.",
        annotations=_hints(read_only=False, destructive=True, title="Write file"),
        structured_output=False,
    )
    async def write_file(path: PathArg, content: Content, ctx: Context | None = None) -> str:
        return await call(sidecar, ToolName.WRITE_FILE, ctx, lambda: tools.write_file(path, content))

    @mcp.tool(
        name=ToolName.EDIT_FILE,
        description="Replace one exact snippet of a file: 'before' must occur exactly once (include enough "
        "surrounding lines to make it unique); it is replaced by 'after'.",
        annotations=_hints(read_only=False, destructive=True, idempotent=False, title="Edit file"),
        structured_output=False,
    )
    async def edit_file(path: PathArg, before: Before, after: After, ctx: Context | None = None) -> str:
        return await call(sidecar, ToolName.EDIT_FILE, ctx, lambda: tools.edit_file(path, before, after))

    @mcp.tool(
        name=ToolName.RUN_TESTS,
        description="Run the project's test suite (or one test file / node id) and return the exit code and "
        "output (long output keeps its head and tail). If nothing in the workspace changed since the last "
        "identical run, that run's result is returned at once, marked as cached.",
        annotations=_hints(read_only=False, title="Run tests"),
        structured_output=False,
    )
    async def run_tests(target: TestTarget = None, ctx: Context | None = None) -> str:
        return await call(
            sidecar, ToolName.RUN_TESTS, ctx, lambda: tools.run_tests(target), target=target, args={"target": target}
        )

    allowed = ", ".join(f"'{entry}'" for entry in sidecar.settings.allow_commands) or "none (disabled)"

    @mcp.tool(
        name=ToolName.RUN_COMMAND,
        description=f"Run one allowed command in the workspace root, without a shell (no pipes or "
        f"redirections); returns its exit code and output. Allowed: {allowed}.",
        annotations=ToolAnnotations(
            title="Run command",
            read_only_hint=False,
            destructive_hint=True,
            idempotent_hint=False,
            open_world_hint=True,
        ),
        structured_output=False,
    )
    async def run_command(command: Command, ctx: Context | None = None) -> str:
        return await call(sidecar, ToolName.RUN_COMMAND, ctx, lambda: tools.run_command(command))

    @mcp.tool(
        name=ToolName.GIT_STATUS,
        description="Show the branch and changed, staged and untracked files (git status --short --branch).",
        annotations=_hints(read_only=True, title="Git status"),
        structured_output=False,
    )
    async def git_status(ctx: Context | None = None) -> str:
        return await call(sidecar, ToolName.GIT_STATUS, ctx, tools.git_status)

    @mcp.tool(
        name=ToolName.GIT_DIFF,
        description="Show uncommitted changes as a diff (a summary, then the patch), optionally for one path "
        "or for the staged changes.",
        annotations=_hints(read_only=True, title="Git diff"),
        structured_output=False,
    )
    async def git_diff(path: OptPath = None, staged: Staged = False, ctx: Context | None = None) -> str:
        return await call(sidecar, ToolName.GIT_DIFF, ctx, lambda: tools.git_diff(path, staged))

    return mcp
