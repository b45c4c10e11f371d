"""The per-agent sidecar: an MCP server with cached, watcher-invalidated tools. The one importer of `mcp`."""
