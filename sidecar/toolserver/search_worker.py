"""The Python `search` backend in its own process, so a search that runs too long can be killed.

Python's `re` backtracks: a pattern such as `(?=(a+)+b)` (look-around and back-references are why a pattern
lands here rather than in ripgrep) can run for longer than the universe over one short line, and a thread
cannot be stopped. The sidecar passes the already-opened directory or file descriptor (`pass_fds`, the same
number here); it writes `READY` once started, then takes one JSON request on stdin and answers one JSON object
on stdout. Run as
`python -m sidecar.toolserver.search_worker`; it imports nothing heavier than the search code itself.
"""

from __future__ import annotations

import json
import sys

from sidecar.toolserver.search import READY, Scope, SearchError, python_search


def main() -> int:
    sys.stdout.write(READY)  # imports done: the caller's time limit starts now, not while Python starts up
    sys.stdout.flush()
    request = json.loads(sys.stdin.read())
    scope = Scope(int(request["fd"]), bool(request["is_dir"]), str(request["shown"]))
    try:
        result = python_search(scope, request["pattern"], request["glob"], int(request["max_results"]))
    except SearchError as exc:
        answer: dict[str, object] = {"error": str(exc)}
    else:
        answer = {"lines": result.lines, "truncated": result.truncated}
    sys.stdout.write(json.dumps(answer))
    return 0


if __name__ == "__main__":
    sys.exit(main())
