"""Admission that cooperates with vLLM's own queue: what the coordinator holds back, and what it leaves to vLLM.

vLLM runs at most `max_num_seqs` calls at once (a number it does not export) and queues the rest: by (priority,
arrival) with `--scheduling-policy priority`, by arrival otherwise; a running call is never preempted for a better
one at `max_num_seqs` (`reference/vllm.md`). A call the coordinator admitted beyond what the engine runs therefore
waits inside vLLM, out of the coordinator's reach. So:

- The engine's running capacity (`slots`) is configured (`[models.<alias>] max_num_seqs`) or learned: the plateau
  of `num_requests_running` while vLLM keeps a queue for `persist_scrapes` scrapes in a row (a queue that
  persists while KV has room means the engine runs all it can), raised whenever more are seen running.
- Once `slots` is known the window is set from it, not cut again at every scrape while the same calls wait:
  `slots + queue_allowance` with native priority (a short queue inside vLLM keeps its batch full between the
  coordinator's calls, and vLLM orders it), `slots` without (vLLM would serve that queue in arrival order, ahead
  of hot work still waiting here). Until then it grows while calls wait on it and vLLM queues nothing.
- With native priority a call is admitted past a full window while calls of a worse tier hold places (`admits`):
  inside vLLM it goes ahead of every one of them that waits, so holding it here could only make it later. Calls
  of its own tier or better still count against the window, so a burst of hot work is bounded too, and the
  lowest tier is bounded by the whole window (how much lower-priority work enters).
- Pressure comes from the timely signals: waiting, running, KV usage. `num_preemptions_total` moves only when a
  preempted call resumes (about 10 s late, `reference/vllm.md`), so the window does not use it.
- The watcher never gives up (`observe` takes every scrape's outcome, forever): an upstream that appears late
  gets adaptive admission at its first answer; one that is lost (no answer for `stale_after_s`: a restart, scale
  to zero; a single slow scrape is not a loss) goes back to the initial window and forgets the capacity it
  learned (a restarted engine may run with other flags); one that answers
  `/metrics` without vLLM's names `not_vllm_after` times in a row gets the fixed `max_window`.

    peer_limits(limits, share)                          the limits of one of several coordinators on one upstream
    initial_state(limits, configured_slots)            the state before the first scrape
    observe(state, scrape, now, limits, ...)            one scrape (or its failure) -> the next state
    admits(rank, in_flight_by_rank, window, ...)        may a call of this tier start now?

Several coordinators on one upstream (`core.partition`): every figure that describes the whole engine (the
configured or learned `slots`, the running count when KV binds, `initial_window`, `max_window`) is scaled to this
coordinator's share (`limits.share`) before it becomes a window, so the peers' windows sum to no more than one
coordinator's would. `slots` itself stays the engine's (it is what vLLM runs); each peer keeps its own
`queue_allowance`.

Everything is a value: the dispatcher (and the fleet simulation) keep the state and call these on their own clock.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from enum import StrEnum

from sidecar.core.admission import DEFAULT_LIMITS, AdmissionLimits, UpstreamMetrics, is_stale
from sidecar.core.partition import Share


class Phase(StrEnum):
    """What the coordinator knows of an upstream's metrics (shown in /status)."""

    WAITING = "waiting_for_upstream"  # no vLLM metrics seen yet: not started, unreachable, still loading
    ADAPTIVE = "adaptive"  # fresh vLLM metrics: the window follows them
    LOST = "upstream_lost"  # had metrics, has none now (restart, scale to zero, network)
    NO_VLLM_METRICS = "no_vllm_metrics"  # answers /metrics without vLLM's names: fixed window


class ScrapeFailure(StrEnum):
    """A scrape that gave no snapshot."""

    UNREACHABLE = "unreachable"  # no answer (connection refused, timeout) or an error status
    NOT_VLLM = "not_vllm"  # an answer, but not vLLM's metrics (another kind of server)


class Reason(StrEnum):
    """Why the window is what it is (a /status field and metric label)."""

    INITIAL = "initial"  # nothing learned yet
    LOST = "lost"  # the upstream's metrics went away: back to the initial window
    NO_VLLM_METRICS = "no_vllm_metrics"  # not vLLM: max_window, fixed
    KV_BOUND = "kv_bound"  # vLLM queues while KV is nearly full: what runs now, plus the allowance
    KV_HIGH = "kv_high"  # KV nearly full: no growth
    QUEUED_ONCE = "queued_once"  # vLLM queued at one scrape: hold, and see whether it persists
    SLOTS = "slots"  # the engine's capacity is known: slots (+ allowance with native priority)
    IDLE = "idle"  # calls did not wait on the window: growing would mean nothing
    GROW = "grow"  # room and demand: grown
    AT_MAX = "at_max"  # room and demand, at max_window


@dataclass(frozen=True)
class AdmissionState:
    """The window and what it was decided from. `learned_slots` is the plateau; `slots` what applies."""

    window: int
    reason: Reason = Reason.INITIAL
    phase: Phase = Phase.WAITING
    configured_slots: int | None = None
    learned_slots: int | None = None
    queued_scrapes: int = 0  # consecutive fresh scrapes with vLLM's waiting > 0
    not_vllm_answers: int = 0  # consecutive scrapes answered without vLLM metrics
    last_seen: float | None = None  # `scraped_at` of the latest fresh snapshot

    @property
    def slots(self) -> int | None:
        """The engine's running capacity: configured, else learned, else None (unknown)."""
        return self.configured_slots if self.configured_slots is not None else self.learned_slots

    @property
    def slots_source(self) -> str:
        if self.configured_slots is not None:
            return "configured"
        return "learned" if self.learned_slots is not None else "unknown"


def peer_limits(limits: AdmissionLimits, share: Share) -> AdmissionLimits:
    """`limits` for peer `share` of several coordinators: `max_window` and `initial_window` are its share of the
    whole upstream's (at least `min_window`), and `share` scales the engine's figures in `observe`."""
    if share.alone:
        return replace(limits, share=share)
    max_window = share.of(limits.max_window, limits.min_window)
    initial = min(share.of(limits.initial_window, limits.min_window), max_window)
    return replace(limits, max_window=max_window, initial_window=initial, share=share)


def initial_state(limits: AdmissionLimits = DEFAULT_LIMITS, configured_slots: int | None = None) -> AdmissionState:
    """Before any scrape: `initial_window`, or the configured capacity's (share's) target when it is smaller (so
    a small engine never gets more than it runs before the first scrape)."""
    window = limits.initial_window
    if configured_slots is not None:
        window = min(window, max(limits.share.of(configured_slots, 0), limits.min_window))
    return AdmissionState(window=window, configured_slots=configured_slots)


def target_window(slots: int, limits: AdmissionLimits, native_priority: bool) -> int:
    """This coordinator's share of the engine's `slots` plus `queue_allowance` with native priority, within
    [min_window, max_window]."""
    return _clamp(limits.share.of(slots, 0) + (limits.queue_allowance if native_priority else 0), limits)


def observe(
    state: AdmissionState,
    scrape: UpstreamMetrics | ScrapeFailure,
    now: float,
    limits: AdmissionLimits = DEFAULT_LIMITS,
    *,
    native_priority: bool,
    demand: bool,
) -> AdmissionState:
    """The state after one scrape. Call it for every scrape, failed or not, in order.

    `demand`: calls waited on the window since the previous scrape (or wait now). A snapshot older than
    `stale_after_s` counts as unreachable. See the module docstring for the rules; the window always stays in
    [min_window, max_window].
    """
    if isinstance(scrape, UpstreamMetrics) and not is_stale(scrape, now, limits):
        return _adapt(state, scrape, limits, native_priority, demand)
    if scrape is ScrapeFailure.NOT_VLLM and state.phase is not Phase.ADAPTIVE:
        answers = state.not_vllm_answers + 1
        if answers < limits.not_vllm_after:
            return replace(state, not_vllm_answers=answers)
        return replace(
            state,
            window=limits.max_window,
            reason=Reason.NO_VLLM_METRICS,
            phase=Phase.NO_VLLM_METRICS,
            learned_slots=None,
            queued_scrapes=0,
            not_vllm_answers=answers,
        )
    if state.phase is Phase.ADAPTIVE and state.last_seen is not None and now - state.last_seen <= limits.stale_after_s:
        return state  # one scrape missed (a timeout under load): what was learnt still holds
    if state.phase is Phase.ADAPTIVE:  # lost: start again as at start-up, the engine may come back different
        fresh = initial_state(limits, state.configured_slots)
        return replace(fresh, window=min(state.window, fresh.window), reason=Reason.LOST, phase=Phase.LOST)
    return replace(state, queued_scrapes=0)  # waiting, lost or not vLLM: nothing new, hold


def _adapt(
    state: AdmissionState, snap: UpstreamMetrics, limits: AdmissionLimits, native_priority: bool, demand: bool
) -> AdmissionState:
    window = state.window
    if state.phase is Phase.NO_VLLM_METRICS:  # it turned out to be vLLM after all: start as at start-up
        window = initial_state(limits, state.configured_slots).window
    queued = state.queued_scrapes + 1 if snap.waiting > 0 else 0
    kv_bound = snap.kv_usage >= limits.kv_saturated
    learned = state.learned_slots
    if not kv_bound and (queued >= limits.persist_scrapes or learned is not None):
        learned = max(learned or 0, snap.running) or None  # the plateau, raised whenever more run
    new = replace(
        state,
        phase=Phase.ADAPTIVE,
        learned_slots=learned,
        queued_scrapes=queued,
        not_vllm_answers=0,
        window=window,
        last_seen=snap.scraped_at,
    )
    allowance = limits.queue_allowance if native_priority else 0
    slots = new.slots
    target = None if slots is None else target_window(slots, limits, native_priority)
    if kv_bound and snap.waiting > 0:  # KV, not max_num_seqs, limits it now: what runs, plus the allowance
        bound = _clamp(limits.share.of(snap.running, 0) + allowance, limits)
        return replace(new, window=bound if target is None else min(bound, target), reason=Reason.KV_BOUND)
    if snap.kv_usage >= limits.kv_grow_below:
        return replace(new, window=window if target is None else min(window, target), reason=Reason.KV_HIGH)
    if target is not None:
        return replace(new, window=target if demand or window > target else window, reason=Reason.SLOTS)
    if snap.waiting > 0:
        return replace(new, reason=Reason.QUEUED_ONCE)
    if not demand:
        return replace(new, reason=Reason.IDLE)
    step = window if snap.kv_usage < limits.fast_grow_below else 0
    grown = _clamp(window + max(limits.increase, step), limits)
    return replace(new, window=grown, reason=Reason.GROW if grown > window else Reason.AT_MAX)


def admits(rank: int, in_flight_by_rank: Mapping[int, int], window: int, *, native_priority: bool) -> bool:
    """May a call of tier `rank` (0 = hot, lower is better, as vLLM's `priority`) start now?

    Yes while fewer than `window` calls are in flight. Past a full window only with native priority, and only
    while calls of a worse tier are in flight (vLLM puts this call ahead of those of them that wait) and fewer
    than `window` of its own tier or better are.
    """
    total = sum(max(n, 0) for n in in_flight_by_rank.values())
    if total < window:
        return True
    if not native_priority:
        return False
    same_or_better = sum(max(n, 0) for r, n in in_flight_by_rank.items() if r <= rank)
    return total > same_or_better and same_or_better < window


def _clamp(window: int, limits: AdmissionLimits) -> int:
    return min(max(window, limits.min_window), limits.max_window)
