"""OpenAI requests in, vLLM-shaped answers out: validation, error bodies, response and chunk objects.

Contract:
- `parse_chat` / `parse_completion` turn a JSON body into a `Job` or raise `ApiError` with vLLM's status, type
  and message: 400 `BadRequestError` for malformed fields, an over-long context or `n > 1`; 404
  `NotFoundError` for an unknown model. Checks run in vLLM's order: body, model, then limits.
- An integer `priority` is always accepted; under `fcfs` it is ignored, as vLLM's V1 engine does.
- Errors are `{"error": {"message", "type", "param", "code"}}` (vLLM >= 0.10.1).
- Chunks and responses have vLLM's fields; `usage.prompt_tokens_details.cached_tokens` is always present.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from sidecar.sim.answer import Generation, chat_answer, completion_answer, generate, request_key
from sidecar.sim.profiles import Profile
from sidecar.sim.text import Dice
from sidecar.sim.tokens import render_chat, render_completion

# vLLM answers with `vllm-<version>-<hash of its config>`; the simulator's version, and a fixed hash.
SYSTEM_FINGERPRINT = "vllm-0.32.0-5e1d0000"
_TYPES = {400: "BadRequestError", 404: "NotFoundError", 500: "InternalServerError", 503: "ServiceUnavailableError"}


class ApiError(Exception):
    def __init__(self, status: int, message: str, param: str | None = None, kind: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.kind = kind

    def body(self) -> dict[str, Any]:
        return error_body(self.status, self.message, self.param, self.kind)


def error_body(status: int, message: str, param: str | None = None, kind: str | None = None) -> dict[str, Any]:
    """vLLM's error object; `kind` overrides the type (its request-validation errors say "Bad Request")."""
    error_type = kind or _TYPES.get(status, "Error")
    return {"error": {"message": message, "type": error_type, "param": param, "code": status}}


def _missing(body: dict[str, Any], field: str) -> ApiError:
    """vLLM's (FastAPI's) answer to a body without a required field."""
    items = f"<dict of {len(body)} items>"
    detail = {"type": "missing", "loc": f"body.{field}", "msg": "Field required", "input": items}
    return ApiError(400, f"1 validation error:\n  {detail}", f"body.{field}", "Bad Request")


@dataclass(frozen=True, slots=True)
class Job:
    """A validated request: what to schedule and what it will generate."""

    chat: bool
    model: str
    stream: bool
    include_usage: bool
    priority: int
    prompt: tuple[int, ...]
    generation: Generation
    max_tokens: int = 0  # the output budget after vLLM's length checks
    tools: bool = False  # the request offered tools (vLLM then runs its tool-call parser)
    block_size: int = 16  # the engine's KV block, for the usage's cache-creation count


@dataclass(frozen=True, slots=True)
class ServedModel:
    """The server side of validation: names served, limits, policy, seed and the agent's step budget."""

    names: tuple[str, ...]
    profile: Profile
    max_model_len: int
    policy: str
    seed: int
    max_agent_steps: int = 40


def decode_body(raw: bytes) -> dict[str, Any]:
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ApiError(400, f"Invalid JSON body: {exc}") from None
    if not isinstance(body, dict):
        raise ApiError(400, "The request body must be a JSON object.")
    return body


def parse_chat(body: dict[str, Any], served: ServedModel) -> Job:
    if "messages" not in body:
        raise _missing(body, "messages")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages or not all(isinstance(m, dict) for m in messages):
        raise ApiError(400, "Field required: messages must be a non-empty list of message objects.", "messages")
    for message in messages:
        if message.get("role") not in ("system", "developer", "user", "assistant", "tool"):
            raise ApiError(400, f"Invalid message role: {message.get('role')!r}.", "messages")
    tools = body.get("tools")
    if tools is not None and not isinstance(tools, list):
        raise ApiError(400, "tools must be a list.", "tools")
    model, stream, include_usage, priority, max_tokens, ignore_eos = _common(body, served)
    prompt = render_chat(messages, tools)
    max_tokens = _check_length(len(prompt), max_tokens, served, _max_tokens_param(body))
    key = request_key(served.seed, model, messages, tools, body.get("tool_choice"), max_tokens, ignore_eos)
    dice = Dice(key)
    answer = chat_answer(messages, tools, body.get("tool_choice"), served.profile, dice, served.max_agent_steps)
    generation = generate(answer, max_tokens, ignore_eos, dice)
    block = served.profile.block_size
    return Job(True, model, stream, include_usage, priority, prompt, generation, max_tokens, bool(tools), block)


def parse_completion(body: dict[str, Any], served: ServedModel) -> Job:
    prompt_field = body.get("prompt")
    if isinstance(prompt_field, list) and len(prompt_field) == 1 and isinstance(prompt_field[0], str):
        prompt_field = prompt_field[0]
    try:
        prompt = render_completion(prompt_field)
    except ValueError as exc:
        raise ApiError(400, str(exc), "prompt") from None
    if not prompt:
        raise ApiError(400, "The prompt cannot be empty.", "prompt")
    if "max_tokens" not in body or body["max_tokens"] is None:
        body = {**body, "max_tokens": 16}  # OpenAI's (and vLLM's) default for completions
    model, stream, include_usage, priority, max_tokens, ignore_eos = _common(body, served)
    max_tokens = _check_length(len(prompt), max_tokens, served, "max_tokens")
    key = request_key(served.seed, model, list(prompt), max_tokens, ignore_eos)
    dice = Dice(key)
    answer = completion_answer(served.profile, dice)
    generation = generate(answer, max_tokens, ignore_eos, dice)
    return Job(False, model, stream, include_usage, priority, prompt, generation, max_tokens)


def _max_tokens_param(body: dict[str, Any]) -> str:
    return "max_completion_tokens" if body.get("max_completion_tokens") is not None else "max_tokens"


def _common(body: dict[str, Any], served: ServedModel) -> tuple[str, bool, bool, int, int | None, bool]:
    model = body.get("model")
    if model is None:
        model = served.names[0]  # vLLM 0.32 serves a request without `model` with its first served name
    if not isinstance(model, str):
        raise ApiError(400, "model must be a string.", "model")
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise ApiError(400, "stream must be a boolean.", "stream")
    options = body.get("stream_options")
    if options is not None and not stream:
        message = "Stream options can only be defined when `stream=True`. (parameter=stream_options)"
        raise ApiError(400, message, "stream_options")
    include_usage = bool(options.get("include_usage")) if isinstance(options, dict) else False
    priority = body.get("priority", 0)
    if not isinstance(priority, int) or isinstance(priority, bool):
        raise ApiError(400, "priority must be an integer.", "priority")
    max_tokens = body.get(_max_tokens_param(body))
    if max_tokens is not None and (not isinstance(max_tokens, int) or isinstance(max_tokens, bool)):
        raise ApiError(400, "max_tokens must be an integer.", "max_tokens")
    n = body.get("n", 1)
    if n != 1:
        raise ApiError(400, "The simulator generates one choice per request (n must be 1).", "n")
    ignore_eos = bool(body.get("ignore_eos", False))
    if model not in served.names:
        aliases = ", ".join(served.names)
        raise ApiError(404, f"The model `{model}` does not exist. Valid aliases: {aliases}.", "model")
    return model, stream, include_usage, priority, max_tokens, ignore_eos


def _check_length(prompt_len: int, max_tokens: int | None, served: ServedModel, param: str) -> int:
    """The output budget, after vLLM 0.32's length checks in its order (`vllm/renderers/params.py`, then
    `get_max_tokens` and `SamplingParams`): a `max_tokens` above `max_model_len`, then a prompt longer than
    `max_model_len` (vLLM tokenizes at most limit + 1 tokens, hence "at least"), then a budget below 1. A
    `max_tokens` that only overflows together with the prompt is cut to what is left, silently, as vLLM does."""
    limit = served.max_model_len
    if max_tokens is not None and max_tokens > limit:
        raise _validation(
            f"{param}={max_tokens} cannot be greater than max_model_len={limit}. Please request fewer output tokens.",
            param,
            max_tokens,
        )
    if prompt_len > limit:
        raise _validation(
            f"This model's maximum context length is {limit} tokens. However, your prompt contains at least "
            f"{limit + 1} input tokens, which exceeds this limit even without any output tokens. Please reduce "
            "the length of the input prompt.",
            "input_tokens",
            limit + 1,
        )
    budget = limit - prompt_len if max_tokens is None else min(max_tokens, limit - prompt_len)
    if budget < 1:
        raise _validation(f"max_tokens must be at least 1, got {budget}.", "max_tokens", budget)
    return budget


def _validation(message: str, param: str, value: object) -> ApiError:
    """vLLM's `VLLMValidationError`: 400, the message suffixed with `(parameter=P, value=V)`."""
    return ApiError(400, f"{message} (parameter={param}, value={value})", param)


# --- response objects -------------------------------------------------------------------------------------


def usage(prompt_tokens: int, completion_tokens: int, cached_tokens: int, job: Job | None = None) -> dict[str, Any]:
    """vLLM's usage object as served with `--enable-prompt-tokens-details` (the deploy sets it). Chat answers
    also count `created_cache_tokens`: here the prompt's whole blocks that were not already cached (vLLM counts
    the tokens its prefill added to the prefix cache); completions leave it null, as vLLM 0.32 does."""
    cached = max(0, cached_tokens)
    created = None
    if job is not None and job.chat:
        created = max(0, prompt_tokens // job.block_size * job.block_size - cached)
    return {
        "prompt_tokens": prompt_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "completion_tokens": completion_tokens,
        "prompt_tokens_details": {"cached_tokens": cached, "created_cache_tokens": created, "multimodal_tokens": None},
        "completion_tokens_details": None,
    }


def chat_response(
    job: Job, response_id: str, created: int, completion_tokens: int, cached: int, finish: str
) -> dict[str, Any]:
    generation = job.generation
    calls = [
        {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
        for c in generation.tool_calls
    ]
    content = generation.content if generation.parsed else "".join(generation.pieces[:completion_tokens])
    message: dict[str, Any] = {
        "role": "assistant",
        "content": content or (None if calls else ""),
        "refusal": None,
        "annotations": None,
        "audio": None,
        "function_call": None,
    }
    if calls:  # vLLM 0.32 leaves `tool_calls` out when there are none
        message["tool_calls"] = calls
    message["reasoning"] = None
    choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": finish, "stop_reason": None}
    return {
        "id": response_id,
        "object": "chat.completion",
        "created": created,
        "model": job.model,
        "choices": [{**choice, "token_ids": None, "routed_experts": None}],
        "service_tier": None,
        "system_fingerprint": SYSTEM_FINGERPRINT,
        "usage": usage(len(job.prompt), completion_tokens, cached, job),
        "prompt_logprobs": None,
        "prompt_token_ids": None,
        "prompt_text": None,
        "kv_transfer_params": None,
        "ec_transfer_params": None,
        "metrics": None,
    }


def completion_response(
    job: Job, response_id: str, created: int, completion_tokens: int, cached: int, finish: str
) -> dict[str, Any]:
    text = "".join(job.generation.pieces[:completion_tokens])
    choice = {
        "index": 0,
        "text": text,
        "logprobs": None,
        "finish_reason": finish,
        "stop_reason": None,
        "token_ids": None,
        "prompt_logprobs": None,
        "prompt_token_ids": None,
        "routed_experts": None,
    }
    return {
        "id": response_id,
        "object": "text_completion",
        "created": created,
        "model": job.model,
        "choices": [choice],
        "service_tier": None,
        "system_fingerprint": SYSTEM_FINGERPRINT,
        "usage": usage(len(job.prompt), completion_tokens, cached, job),
        "kv_transfer_params": None,
        "ec_transfer_params": None,
        "metrics": None,
    }


def chunk(job: Job, response_id: str, created: int, choices: list[dict[str, Any]], **extra: Any) -> bytes:
    """One SSE frame `data: {...}\\n\\n` of a streaming response."""
    obj = {
        "id": response_id,
        "object": "chat.completion.chunk" if job.chat else "text_completion",
        "created": created,
        "model": job.model,
        "choices": choices,
        **extra,
    }
    return sse(obj)


def sse(obj: Any) -> bytes:
    return b"data: " + json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode() + b"\n\n"


DONE = b"data: [DONE]\n\n"


def chat_choice(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    choice: dict[str, Any] = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
    if finish is not None:
        choice["stop_reason"] = None
    return choice


def completion_choice(text: str, finish: str | None = None) -> dict[str, Any]:
    return {"index": 0, "text": text, "logprobs": None, "finish_reason": finish, "stop_reason": None}
