"""The vLLM simulator: a V1-style scheduler on a virtual clock behind an OpenAI-compatible server.

Pure parts (no I/O, no clock reads): `profiles` (cited latency/capacity data), `latency` (step time),
`kv` (blocks, prefix cache, LRU), `engine` (the scheduler, one step at a time), `offline` (run to completion on
the virtual clock), `calibrate`, `tokens` (approximate tokenizer, Qwen chat template), `text` (dice, prose),
`transcript` + `agent` (the synthetic coding agent), `answer` (tokens to generate and how they stream),
`protocol` (validation, vLLM's response and error shapes), `faults`.
Shells: `driver` (the engine in real time on asyncio), `metrics` (Prometheus), `app` (Starlette server,
`build_sim_app`), `command` (`goose-sidecar sim`). Embedding it beside the coordinator is `sidecar.stack`'s.
"""
