"""Write a tiny, deterministic Qwen2-architecture model that vLLM can serve, with no download.

Usage: VENV/bin/python scripts/_vllm_tiny_model.py OUT_DIR   (run by scripts/test-vllm with the vLLM venv's
Python, which has torch, transformers and tokenizers; the project's own venv does not need them).

What comes out (facts from ../shared/reference/vllm_cpu.md, "A model without Hugging Face"):
- a byte-level BPE tokenizer trained here on a fixed, sorted list of this Python's standard-library sources,
  with ChatML's special tokens and Qwen's `<tool_call>` / `</tool_call>` (vLLM's hermes parser refuses a
  tokenizer without them), wrapped as `PreTrainedTokenizerFast` with eos `<|im_end|>`;
- a Qwen2.5-style chat template that renders tools and tool calls in the hermes format;
- random float32 weights (seeded) for hidden 128, 4 heads (head_dim 32: a size vLLM's CPU attention accepts),
  2 KV heads, 2 layers, intermediate 256, 4096 positions, saved as safetensors;
- a generation config whose `max_new_tokens` (64) vLLM uses when a request sets no `max_tokens`.
The same interpreter and library versions give the same files; the caller keys its cache on this script's hash.
Written into OUT_DIR.partial and renamed at the end, so a crash never leaves a half model behind.
"""

from __future__ import annotations

import shutil
import sys
import sysconfig
from pathlib import Path

SEED = 0
VOCAB_SIZE = 2048
CORPUS_MODULES = ("json", "argparse", "textwrap", "pathlib", "dataclasses", "functools", "string", "typing")
SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
TOOL_TOKENS = ["<tool_call>", "</tool_call>"]
MAX_POSITIONS = 4096
DEFAULT_MAX_TOKENS = 64

# Qwen2.5-Instruct's template (tools in <tools>, calls in <tool_call>), trimmed of its vision branches.
CHAT_TEMPLATE = r"""{%- if tools %}
{{- '<|im_start|>system\n' }}
{%- if messages[0].role == 'system' %}{{- messages[0].content }}{%- else %}{{- 'You are a helpful assistant.' }}{%- endif %}
{{- "\n\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\nYou are provided with function signatures within <tools></tools> XML tags:\n<tools>" }}
{%- for tool in tools %}{{- "\n" }}{{- tool | tojson }}{%- endfor %}
{{- "\n</tools>\n\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": <function-name>, \"arguments\": <args-json-object>}\n</tool_call><|im_end|>\n" }}
{%- else %}
{%- if messages[0].role == 'system' %}{{- '<|im_start|>system\n' + messages[0].content + '<|im_end|>\n' }}{%- else %}{{- '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}{%- endif %}
{%- endif %}
{%- for message in messages %}
{%- if (message.role == "user") or (message.role == "system" and not loop.first) or (message.role == "assistant" and not message.tool_calls) %}
{{- '<|im_start|>' + message.role + '\n' + (message.content or '') + '<|im_end|>' + '\n' }}
{%- elif message.role == "assistant" %}
{{- '<|im_start|>' + message.role }}
{%- if message.content %}{{- '\n' + message.content }}{%- endif %}
{%- for tool_call in message.tool_calls %}
{%- if tool_call.function is defined %}{%- set tool_call = tool_call.function %}{%- endif %}
{{- '\n<tool_call>\n{"name": "' }}{{- tool_call.name }}{{- '", "arguments": ' }}
{%- if tool_call.arguments is string %}{{- tool_call.arguments }}{%- else %}{{- tool_call.arguments | tojson }}{%- endif %}
{{- '}\n</tool_call>' }}
{%- endfor %}
{{- '<|im_end|>\n' }}
{%- elif message.role == "tool" %}
{%- if (loop.index0 == 0) or (messages[loop.index0 - 1].role != "tool") %}{{- '<|im_start|>user' }}{%- endif %}
{{- '\n<tool_response>\n' }}{{- message.content }}{{- '\n</tool_response>' }}
{%- if loop.last or (messages[loop.index0 + 1].role != "tool") %}{{- '<|im_end|>\n' }}{%- endif %}
{%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}{{- '<|im_start|>assistant\n' }}{%- endif %}
"""


def corpus() -> list[str]:
    """The training text: whole files from the standard library, in a fixed order."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    texts = []
    for name in CORPUS_MODULES:
        path = stdlib / f"{name}.py"
        if not path.exists():
            path = stdlib / name / "__init__.py"
        texts.append(path.read_text(encoding="utf-8"))
    return texts


def make_tokenizer(out: Path) -> int:
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=SPECIAL,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(corpus(), trainer=trainer)
    tokenizer.add_tokens([AddedToken(t, special=False, normalized=False) for t in TOOL_TOKENS])
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token=None,
        bos_token=None,
        chat_template=CHAT_TEMPLATE,
        model_max_length=MAX_POSITIONS,
    )
    fast.save_pretrained(out)
    return len(fast)


def make_model(out: Path, vocab: int, eos: int, pad: int) -> None:
    import torch
    from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(SEED)
    config = Qwen2Config(
        vocab_size=vocab,
        hidden_size=128,
        num_attention_heads=4,
        num_key_value_heads=2,
        num_hidden_layers=2,
        intermediate_size=256,
        max_position_embeddings=MAX_POSITIONS,
        tie_word_embeddings=True,
        bos_token_id=eos,
        eos_token_id=eos,
        pad_token_id=pad,
        torch_dtype="float32",
    )
    model = Qwen2ForCausalLM(config).to(torch.float32)
    model.save_pretrained(out, safe_serialization=True)
    # vLLM takes `max_new_tokens` as its default `max_tokens`: a random model rarely samples its eos, so a
    # request without `max_tokens` (Goose, the fleet runner) would otherwise generate to the context limit.
    GenerationConfig(
        eos_token_id=eos, pad_token_id=pad, bos_token_id=eos, max_new_tokens=DEFAULT_MAX_TOKENS
    ).save_pretrained(out)


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(f"usage: {argv[0]} OUT_DIR", file=sys.stderr)
        return 2
    out = Path(argv[1])
    partial = out.with_name(out.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    vocab = make_tokenizer(partial)
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(partial)
    eos, pad = tokenizer.convert_tokens_to_ids(["<|im_end|>", "<|endoftext|>"])
    make_model(partial, vocab, eos, pad)
    shutil.rmtree(out, ignore_errors=True)
    partial.rename(out)
    print(f"tiny model: {out} (vocab {vocab})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
