"""Tables for the tool-output cache's pure decisions (sidecar/core/toolcache.py)."""

from __future__ import annotations

import pytest

from sidecar.core.toolcache import (
    Admission,
    ByteLRU,
    FileStamp,
    Generations,
    Inputs,
    Mark,
    Snapshot,
    Validity,
    admit,
    ancestors,
    cache_key,
    inputs_generation,
    is_racily_clean,
    mark_of,
    snapshot_at,
    validate,
)

NOW = 1_700_000_000_123_456_789
OLD = FileStamp(1, 2, 10, NOW - 5_000_000_000 + 7, NOW - 5_000_000_000 + 7)


@pytest.mark.parametrize(
    ("a", "b", "same"),
    [
        (("read_file", {"path": "a", "start_line": None}), ("read_file", {"path": "a"}), True),
        (("read_file", {"path": "a", "end_line": 3}), ("read_file", {"end_line": 3, "path": "a"}), True),
        (("read_file", {"path": "a"}), ("list_dir", {"path": "a"}), False),
        (("read_file", {"path": "a"}), ("read_file", {"path": "b"}), False),
        (("search", {"pattern": "x", "max_results": 1}), ("search", {"pattern": "x", "max_results": "1"}), False),
        (("read_file", {"path": "é"}), ("read_file", {"path": "é"}), True),
    ],
)
def test_cache_key(a: tuple[str, dict[str, object]], b: tuple[str, dict[str, object]], same: bool) -> None:
    assert (cache_key(*a) == cache_key(*b)) is same


@pytest.mark.parametrize(
    ("mtime_ago_ms", "ctime_ago_ms", "racy"),
    [
        (5000, 5000, False),
        (150, 150, False),
        (50, 5000, True),
        (5000, 50, True),  # cp -p / touch -d keep an old mtime, but the ctime is new
        (0, 0, True),
        (-1000, 5000, True),  # a timestamp in the future
        (99, 99, True),
        (101, 101, False),
    ],
)
def test_racily_clean(mtime_ago_ms: int, ctime_ago_ms: int, racy: bool) -> None:
    stamp = FileStamp(1, 1, 1, NOW - mtime_ago_ms * 1_000_000, NOW - ctime_ago_ms * 1_000_000)
    assert is_racily_clean(stamp, NOW) is racy


def test_whole_second_timestamps_widen_the_window() -> None:
    second = (NOW // 1_000_000_000 - 1) * 1_000_000_000  # 1.1 s ago, on a whole second
    assert is_racily_clean(FileStamp(1, 1, 1, second, second), NOW)
    assert not is_racily_clean(FileStamp(1, 1, 1, second + 1, second + 1), NOW)


def test_ancestors() -> None:
    assert list(ancestors("/w/a/b")) == ["/w/a", "/w", "/"]
    assert list(ancestors("/")) == []


def test_generations_track_paths_and_scopes() -> None:
    g = Generations()
    assert g.of_path("/w/a.py") == 0 and g.of_scope("/w") == 0
    g1 = g.bump("/w/src/a.py")
    assert g.of_path("/w/src/a.py") == g1
    assert g.of_path("/w/src/b.py") == 0  # a sibling is untouched
    assert g.of_scope("/w/src") == g1 and g.of_scope("/w") == g1
    assert g.of_scope("/w/docs") == 0
    g2 = g.bump("/w/src")  # the directory itself (renamed, deleted) takes its files with it
    assert g.of_path("/w/src/b.py") == g2
    assert g.of_scope("/w/src/deeper") == g2
    assert g.current == g2


def test_flush_starts_a_new_epoch_and_generation() -> None:
    g = Generations()
    g.bump("/w/a")
    before = g.current
    g.flush()
    assert g.epoch == 1 and g.current == before + 1
    assert g.of_path("/w/a") == 0 and g.paths_tracked() == 0


def test_inputs_generation() -> None:
    g = Generations()
    inputs = Inputs(files=(("/w/link/a", OLD),), paths=("/w/real/a", "/w/link/a"))
    assert inputs_generation(g, inputs) == 0
    n = g.bump("/w/link")  # the symlink was repointed
    assert inputs_generation(g, inputs) == n
    tree = Inputs(scope="/w/src")
    m = g.bump("/w/src/x/y.py")
    assert inputs_generation(g, tree) == m


S0 = Snapshot(3, 0)


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({}, Admission.STORED),
        ({"watcher_healthy": False}, Admission.WATCHER_DOWN),
        ({"after": Snapshot(4, 0)}, Admission.CHANGED_DURING_COMPUTE),
        ({"after": Snapshot(3, 1)}, Admission.CHANGED_DURING_COMPUTE),
        ({"stamps_after": (OLD._replace(size=11),)}, Admission.UNSTABLE_READ),
        ({"stamps_after": (OLD._replace(ctime_ns=OLD.ctime_ns + 1),)}, Admission.UNSTABLE_READ),
        ({"stamps_after": (None,)}, Admission.UNSTABLE_READ),
        (
            {"stamps_before": (OLD._replace(mtime_ns=NOW),), "stamps_after": (OLD._replace(mtime_ns=NOW),)},
            Admission.RACILY_CLEAN,
        ),
        ({"size": 10_000}, Admission.TOO_LARGE),
        ({"stamps_before": (), "stamps_after": ()}, Admission.STORED),  # tree-wide results have no stamps
    ],
)
def test_admit(kwargs: dict[str, object], expected: Admission) -> None:
    args: dict[str, object] = {
        "before": S0,
        "after": S0,
        "stamps_before": (OLD,),
        "stamps_after": (OLD,),
        "now_ns": NOW,
        "size": 100,
        "max_entry_bytes": 1000,
        "watcher_healthy": True,
    }
    args.update(kwargs)
    assert admit(**args) == expected  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("current", "fresh", "expected"),
    [
        (S0, (OLD,), Validity.VALID),
        (Snapshot(3, 1), (OLD,), Validity.EPOCH_CHANGED),
        (Snapshot(5, 0), (OLD,), Validity.GENERATION_CHANGED),
        (S0, (None,), Validity.STAMP_CHANGED),  # deleted
        (S0, (OLD._replace(ino=99),), Validity.STAMP_CHANGED),  # atomic rename over it
        (S0, (OLD._replace(ctime_ns=OLD.ctime_ns + 1),), Validity.STAMP_CHANGED),  # same size+mtime rewrite
        (S0, (OLD._replace(dev=7),), Validity.STAMP_CHANGED),
    ],
)
def test_validate(current: Snapshot, fresh: tuple[FileStamp | None, ...], expected: Validity) -> None:
    assert validate(S0, current, (OLD,), fresh) == expected


@pytest.mark.parametrize(
    ("events", "expected"),
    [
        ([], "unchanged"),
        (["/w/other.py"], "unchanged"),  # an event elsewhere leaves these inputs as they were at the mark
        (["/w/a.py"], None),
        (["/w"], None),  # the directory holding the input moved or went
        (["/w/other.py", "/w/a.py", "/w/other.py"], None),
        (["flush"], None),
    ],
)
def test_snapshot_at_a_mark_is_exactly_the_snapshot_taken_then(events: list[str], expected: str | None) -> None:
    gens = Generations()
    gens.bump("/w/a.py")
    gens.bump("/w/b.py")
    inputs = Inputs(paths=("/w/a.py",))
    then = Snapshot(inputs_generation(gens, inputs), gens.epoch)
    mark = mark_of(gens)
    for path in events:
        gens.flush() if path == "flush" else gens.bump(path)
    now = Snapshot(inputs_generation(gens, inputs), gens.epoch)
    at_mark = snapshot_at(mark, now)
    assert at_mark == (then if expected else None)
    assert (at_mark == now) == (then == now and mark.epoch == gens.epoch)  # as admit's before == after would say


def test_snapshot_at_a_mark_taken_before_any_event() -> None:
    assert snapshot_at(Mark(0, 0), Snapshot(0, 0)) == Snapshot(0, 0)
    assert snapshot_at(Mark(0, 0), Snapshot(1, 0)) is None


def test_lru_counts_and_evicts_by_bytes() -> None:
    lru: ByteLRU[str] = ByteLRU(max_bytes=10)
    assert lru.get("a") is None
    assert lru.put("a", "A", 4) and lru.put("b", "B", 4)
    assert lru.get("a") == "A"  # a is now the most recent
    assert lru.put("c", "C", 4)  # evicts b, the least recent
    assert "b" not in lru and "a" in lru and "c" in lru
    assert lru.stats.bytes == 8 and lru.stats.evictions == 1 and lru.stats.entries == 2
    assert not lru.put("huge", "H", 11)
    assert lru.stats.rejected == 1
    lru.put("a", "A2", 2)  # replacing re-accounts the size
    assert lru.stats.bytes == 6
    assert lru.stats.hits == 1 and lru.stats.misses == 1


def test_lru_invalidate_turns_the_hit_into_a_miss() -> None:
    lru: ByteLRU[str] = ByteLRU(max_bytes=100)
    lru.put("k", "v", 1)
    assert lru.get("k") == "v"
    lru.invalidate("k")
    assert lru.stats.hits == 0 and lru.stats.misses == 1 and lru.stats.invalidations == 1
    assert lru.stats.bytes == 0 and "k" not in lru
    lru.invalidate("k")  # already gone: not counted twice
    assert lru.stats.invalidations == 1


def test_lru_clear_is_a_flush() -> None:
    lru: ByteLRU[int] = ByteLRU(max_bytes=100)
    lru.put("a", 1, 10)
    lru.clear()
    assert len(lru) == 0 and lru.stats.bytes == 0 and lru.stats.flushes == 1
    assert lru.peek("a") is None
