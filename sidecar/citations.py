"""The published sources behind the figures the project quotes, cited by name in reports, the dashboard and help.

User-facing text cites these, never a file of the development workspace: a reader of a report or of an installed
package has the sources, not the project's notes.
"""

from __future__ import annotations

SEED_REPORT = (
    'the silly-goose report (Siddharth Ramakrishnan, "Background Agent Optimizations", March 8, 2026: '
    "Qwen2.5-Coder-32B-Instruct, vLLM, Modal A100)"
)
"""The report this project grows out of: eight optimizations measured on one GPU."""

SEED_REPORT_SHORT = 'the silly-goose report ("Background Agent Optimizations", 2026)'

TRACELAB = "TraceLab (real Claude Code and Codex sessions, 357K LLM steps)"
"""Shape of real coding-agent work: tool latency median 0.3 s, p90 13.6 s; ~154K-token prompts, ~96% cached."""

QWEN_SPEED = "Qwen2.5 speed benchmark (qwen.readthedocs.io, vLLM 0.6.3, A100-80GB BF16)"
GPUSTACK = "GPUStack benchmark of a 32B-class model (64 layers, 8 KV heads), vLLM 0.11, A100"
LLMD_SIM = "llm-d-inference-sim latency profiles"
ROOFLINE = "roofline estimate from the A100-80GB's published memory bandwidth (2.0 TB/s; not measured)"
