"""Speculation in the fleet simulation: what streaming tool execution and test pre-runs do to one agent's tool time.

Both are timing models only: an agent's program (its tool calls, their results and durations) never changes, so a
condition with speculation changes when a tool result is ready, never what it is.

- Streaming tool execution (issue 19): an answer carrying `calls` tool calls streams them one after another; call
  i's arguments are complete at fraction i/calls of the answer's decode (from its first token to its end). The
  sidecar starts an early-safe call then (`core.earlyrun.EARLY_TOOLS`: read-only tools and `run_tests`); early
  runs go one at a time in the answer's order (a cap of one concurrent early run), each taking an equal share of
  the turn's tool time. The agent's own calls, issued at the answer's end, join them. Without it the agent runs
  the calls one after another after the answer.
- Test pre-runs: after an edit the sidecar runs the tests on the exact new workspace state while the model thinks;
  when the agent's next tool call is `run_tests` on that state it takes the result (ready, or joins the running
  one). Otherwise the pre-run is cancelled when that call arrives, and the CPU it used on the agent's machine is
  wasted (counted; the agent's machine is otherwise idle while the model answers, so it costs no agent time here).
"""

from __future__ import annotations

from sidecar.core.earlyrun import EARLY_TOOLS


def early_safe(tool: str) -> bool:
    return tool in EARLY_TOOLS


def streamed_tools_end(first_token: float, answer_end: float, calls: int, tool_s: float) -> float:
    """When the turn's tools are done if each of `calls` early-safe calls starts as its arguments complete (one at
    a time, `tool_s / calls` each); never later than running them all after the answer (`answer_end + tool_s`)."""
    if calls <= 1:
        return answer_end + tool_s
    each = tool_s / calls
    decode = max(answer_end - first_token, 0.0)
    done = first_token
    for i in range(1, calls + 1):
        done = max(done, first_token + decode * i / calls) + each
    return max(done, answer_end)


def prerun_end(prerun_start: float, call_at: float, test_s: float) -> float:
    """When a `run_tests` call issued at `call_at` has its result, the same tests having been pre-run from
    `prerun_start` (<= call_at) for `test_s`."""
    return max(call_at, prerun_start + test_s)
