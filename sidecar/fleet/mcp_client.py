"""The fleet's MCP client: one agent's sidecar as a real `goose-sidecar mcp` subprocess over stdio.

DESIGN.md's dependency rule says only `sidecar/toolserver` imports `mcp`; the fleet is an MCP *client*
(it stands in for Goose), so this one module is the exception, and nothing else in `sidecar/fleet` imports
`mcp`. It behaves as Goose does on the wire (`shared/reference/goose.md`):

- `initialize` with protocol version 2025-03-26 and client name `goose-cli`; `AGENT_SESSION_ID` in the
  server's environment; `tools/list` once;
- tools are offered to the model as OpenAI functions named `<extension>__<tool>` (`sidecar__read_file`) with
  `strict: false`;
- every `tools/call` carries `_meta = {agent-session-id, agent-working-dir, agent-tool-call-request-id}`;
- the model sees the text content of a result (an `isError` result too: its text is the error message).

Failure behaviour: a transport failure or a JSON-RPC error during a call becomes a `ToolResult` with
`is_error=True` and the message as text (Goose reports such failures to the model the same way), so one
broken call never kills an agent; a sidecar that cannot start raises from `open_sidecar`.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TextIO

from mcp import ClientSession, types
from mcp.client.stdio import StdioServerParameters, stdio_client

GOOSE_PROTOCOL_VERSION = "2025-03-26"
GOOSE_CLIENT = types.Implementation(name="goose-cli", version="1.40.0")


@dataclass(frozen=True, slots=True)
class ToolResult:
    text: str
    is_error: bool


class ToolSession:
    """An initialized MCP session with the tool list already fetched."""

    def __init__(self, session: ClientSession, listed: Sequence[types.Tool], extension: str) -> None:
        self._session = session
        self.extension = extension
        self.names = [tool.name for tool in listed]
        self.tools: list[dict[str, Any]] = [
            {
                "type": "function",
                "function": {
                    "name": f"{extension}__{tool.name}",
                    "description": tool.description or "",
                    "parameters": tool.input_schema,
                    "strict": False,
                },
            }
            for tool in listed
        ]

    def tool_name(self, offered: str) -> str | None:
        """The server's tool name for a name the model used (`sidecar__read_file` -> `read_file`), or None."""
        prefix = f"{self.extension}__"
        name = offered.removeprefix(prefix) if offered.startswith(prefix) else None
        return name if name in self.names else None

    async def call(
        self, name: str, arguments: Mapping[str, Any], *, session_id: str, working_dir: str, call_id: str
    ) -> ToolResult:
        """Call tool `name` (the server's name) with Goose's `_meta`; see the module docstring for failures."""
        meta: Any = {
            "agent-session-id": session_id,
            "agent-working-dir": working_dir,
            "agent-tool-call-request-id": call_id,
        }
        try:
            result = await self._session.call_tool(name, dict(arguments), meta=meta)
        except Exception as exc:  # the model reads the failure, as with Goose
            return ToolResult(f"Error: the tool call failed: {exc}", True)
        texts = [block.text for block in result.content if isinstance(block, types.TextContent)]
        return ToolResult("\n".join(texts), bool(result.is_error))


@contextlib.asynccontextmanager
async def open_sidecar(
    command: str,
    args: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    cwd: str | None = None,
    extension: str = "sidecar",
    errlog: TextIO | None = None,
) -> AsyncIterator[ToolSession]:
    """Start the sidecar subprocess, initialize as Goose does, list its tools; stop it on exit."""
    params = StdioServerParameters(command=command, args=list(args), env=dict(env or {}), cwd=cwd)
    stream_kwargs: dict[str, Any] = {} if errlog is None else {"errlog": errlog}
    async with (
        stdio_client(params, **stream_kwargs) as (read, write),
        ClientSession(read, write, client_info=GOOSE_CLIENT) as session,
    ):
        capabilities = types.ClientCapabilities(roots=types.RootsCapability(list_changed=False))
        request = types.InitializeRequest(
            params=types.InitializeRequestParams(
                protocol_version=GOOSE_PROTOCOL_VERSION, capabilities=capabilities, client_info=GOOSE_CLIENT
            )
        )
        result = await session.send_request(request, types.InitializeResult)
        session.adopt(result)
        await session.send_notification(types.InitializedNotification())
        listed = await session.list_tools()
        yield ToolSession(session, listed.tools, extension)
