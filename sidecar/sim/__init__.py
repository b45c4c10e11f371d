"""The vLLM simulator: a V1-style scheduler on a virtual clock behind an OpenAI-compatible server."""
