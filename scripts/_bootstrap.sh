# Sourced by scripts/*: make .venv from nothing (pip only) and keep it in step with pyproject.toml.
# Usage: . scripts/_bootstrap.sh [extras]   (extras default "dev"; scripts/up uses "bench")
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${GOOSE_SIDECAR_VENV:-$ROOT/.venv}"
EXTRAS="${1:-dev}"

find_python() {
    for candidate in "${PYTHON:-}" python3.11 python3.12 python3.13 python3; do
        [ -n "$candidate" ] || continue
        if command -v "$candidate" >/dev/null 2>&1 &&
            "$candidate" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' 2>/dev/null; then
            echo "$candidate"
            return 0
        fi
    done
    echo "goose-sidecar needs Python >= 3.11 (set PYTHON=/path/to/python3.11)" >&2
    return 1
}

if [ ! -x "$VENV/bin/python" ]; then
    PY="$(find_python)"
    echo "bootstrap: creating $VENV with $PY" >&2
    "$PY" -m venv "$VENV"
    "$VENV/bin/python" -m pip install --quiet --upgrade pip >&2
fi

# Reinstall only when the dependency list or the requested extras change.
STAMP="$VENV/.goose-sidecar-$EXTRAS"
WANT="$(cat "$ROOT/pyproject.toml" | sha256sum | cut -c1-16)"
if [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$WANT" ]; then
    echo "bootstrap: installing goose-sidecar[$EXTRAS] into $VENV" >&2
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -e "$ROOT[$EXTRAS]" >&2
    echo "$WANT" >"$STAMP"
fi
export PATH="$VENV/bin:$PATH"
