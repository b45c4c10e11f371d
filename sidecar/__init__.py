"""goose-sidecar: a coordinator, an MCP sidecar and a vLLM simulator for fleets of background coding agents."""

__version__ = "0.1.0"
