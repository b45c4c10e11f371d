"""`/metrics` with vLLM's metric names, from one engine, in a registry of its own (two sims share a process).

Names and labels follow `vllm/v1/metrics/loggers.py`: every series carries `model_name` and `engine`.
Gauges and counters are read from the engine at scrape time; histograms are observed as requests finish, in
simulated seconds (equal to real seconds at time scale 1).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from sidecar.sim.engine import Engine, Request, Status

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# vLLM's buckets (loggers.py).
TTFT_BUCKETS: tuple[float, ...] = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5)
TTFT_BUCKETS += (5.0, 7.5, 10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0)
LATENCY_BUCKETS: tuple[float, ...] = (0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0)
LATENCY_BUCKETS += (60.0, 120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0)
ITL_BUCKETS: tuple[float, ...] = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0)
ITL_BUCKETS += (7.5, 10.0, 20.0, 40.0, 80.0)


class EngineMetrics(Collector):
    """Collects gauges and counters from `engine`; `observe(request)` records a finished request."""

    def __init__(self, engine: Engine, model_name: str) -> None:
        self.engine = engine
        self.labels = {"model_name": model_name, "engine": "0"}
        # Requests accepted by the API server but not yet in the scheduler (set by the app to its driver's).
        self.extra_waiting: Callable[[], int] = lambda: 0
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self)
        names = list(self.labels)

        def histogram(name: str, doc: str, buckets: tuple[float, ...]) -> Histogram:
            return Histogram(name, doc, names, registry=self.registry, buckets=buckets)

        self.ttft = histogram("vllm:time_to_first_token_seconds", "Histogram of time to first token.", TTFT_BUCKETS)
        self.e2e = histogram("vllm:e2e_request_latency_seconds", "Histogram of e2e request latency.", LATENCY_BUCKETS)
        self.queue = histogram("vllm:request_queue_time_seconds", "Time spent in the WAITING phase.", LATENCY_BUCKETS)
        self.itl = histogram("vllm:inter_token_latency_seconds", "Histogram of inter-token latency.", ITL_BUCKETS)

    def observe(self, request: Request) -> None:
        """Record a finished request (aborted ones count only in `request_success_total{abort}`)."""
        if request.status is not Status.FINISHED or request.first_token is None or request.finished is None:
            return
        labels = self.labels
        self.ttft.labels(**labels).observe(request.first_token - request.arrival)
        self.e2e.labels(**labels).observe(request.finished - request.arrival)
        if request.first_scheduled is not None:
            queued = request.arrival + self.engine.profile.frontend_s
            self.queue.labels(**labels).observe(max(0.0, request.first_scheduled - queued))
        if request.num_output > 1:
            self.itl.labels(**labels).observe((request.finished - request.first_token) / (request.num_output - 1))

    def render(self) -> bytes:
        return generate_latest(self.registry)

    def collect(self) -> Iterator[Metric]:
        engine, names, values = self.engine, list(self.labels), list(self.labels.values())
        counters = engine.counters

        def gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
            family = GaugeMetricFamily(name, doc, labels=names)
            family.add_metric(values, value)
            return family

        def counter(name: str, doc: str, value: float) -> CounterMetricFamily:
            family = CounterMetricFamily(name, doc, labels=names)
            family.add_metric(values, value)
            return family

        waiting = engine.num_waiting + self.extra_waiting()
        yield gauge("vllm:num_requests_running", "Number of requests in model execution batches.", engine.num_running)
        yield gauge("vllm:num_requests_waiting", "Number of requests waiting to be processed.", waiting)
        yield gauge("vllm:kv_cache_usage_perc", "KV-cache usage. 1 means 100 percent usage.", engine.kv.usage)
        yield gauge("vllm:gpu_cache_usage_perc", "GPU KV-cache usage (pre-0.10 name).", engine.kv.usage)
        yield counter("vllm:num_preemptions", "Cumulative number of preemptions.", counters.preemptions)
        yield counter("vllm:prefix_cache_queries", "Prefix cache queries, in tokens.", counters.prefix_cache_queries)
        yield counter("vllm:prefix_cache_hits", "Prefix cache hits, in tokens.", counters.prefix_cache_hits)
        yield counter("vllm:prompt_tokens", "Number of prefill tokens processed.", counters.prompt_tokens)
        yield counter("vllm:generation_tokens", "Number of generation tokens processed.", counters.generation_tokens)
        success = CounterMetricFamily(
            "vllm:request_success", "Count of successfully processed requests.", labels=[*names, "finished_reason"]
        )
        for reason in ("stop", "length", "abort"):
            success.add_metric([*values, reason], counters.finished.get(reason, 0))
        yield success
        profile = engine.profile
        info = GaugeMetricFamily(
            "vllm:cache_config_info",
            "Information of the LLMEngine CacheConfig.",
            labels=[*names, "block_size", "num_gpu_blocks", "enable_prefix_caching", "cache_dtype"],
        )
        info.add_metric(
            [*values, str(profile.block_size), str(profile.num_gpu_blocks), "True", "auto"],
            1.0,
        )
        yield info
