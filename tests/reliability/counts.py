"""How many cases each reliability test tried, printed (`pytest -s` shows it) and, when `RELIABILITY_COUNTS`
names a file, appended there as JSON lines (`python -m sidecar.bench.load --fuzz` reads it)."""

from __future__ import annotations

import json
import os
from collections import Counter


def record(name: str, counts: Counter[str]) -> None:
    total = counts.total()
    detail = ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
    print(f"\n{name}: {total} cases ({detail})")
    path = os.environ.get("RELIABILITY_COUNTS")
    if path:
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps({"name": name, "cases": total, "outcomes": dict(counts)}) + "\n")
