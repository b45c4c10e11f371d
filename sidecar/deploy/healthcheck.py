"""`python -m sidecar.deploy.healthcheck [URL]`: the container health probe (the slim image has no curl).

Exit 0 when URL answers 2xx within the timeout, 1 otherwise (refused, timed out, any other status). URL defaults
to `$HEALTHCHECK_URL`, else the coordinator's `http://127.0.0.1:8080/healthz` (the image's default command).
Stdlib only, so it starts fast and works in any role's container.
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request
from collections.abc import Sequence

DEFAULT_URL = "http://127.0.0.1:8080/healthz"
TIMEOUT_S = 5.0


def probe(url: str, timeout_s: float = TIMEOUT_S) -> tuple[bool, str]:
    """(healthy, one-line reason). Never raises."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            status = response.status
    except urllib.error.HTTPError as exc:
        return False, f"{url}: HTTP {exc.code}"
    except (urllib.error.URLError, OSError, ValueError) as exc:
        return False, f"{url}: {exc}"
    return 200 <= status < 300, f"{url}: HTTP {status}"


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    url = args[0] if args else os.environ.get("HEALTHCHECK_URL", DEFAULT_URL)
    healthy, reason = probe(url)
    print(reason, file=sys.stderr)
    return 0 if healthy else 1


if __name__ == "__main__":
    raise SystemExit(main())
