#!/usr/bin/env bash
# Installs the real third-party clients the tests use from npm (the MCP Inspector CLI, which wants Node 22)
# into .cache/npm-tools. Needs npm; without it the tests that use these tools are skipped locally
# (and fail under CI=true).
set -euo pipefail
cd "$(dirname "$0")/.."
command -v npm >/dev/null 2>&1 || { echo "npm not found" >&2; exit 1; }
DIR=.cache/npm-tools
mkdir -p "$DIR"
cp tests/npm/package.json "$DIR/package.json"
if [ ! -f "$DIR/.stamp" ] || ! cmp -s tests/npm/package.json "$DIR/.stamp"; then
    echo "bootstrap: npm install (MCP Inspector, node 22) into $DIR" >&2
    (cd "$DIR" && npm install --no-audit --no-fund --loglevel=error >&2)
    cp tests/npm/package.json "$DIR/.stamp"
fi
