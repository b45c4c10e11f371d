"""Parse `vllm serve` command lines with vLLM's own argument parser, without starting anything.

Run with the vLLM virtualenv's Python (not the project's): stdin is a JSON list of argv lists (each starting with
`vllm serve`); stdout is a JSON list with, per argv, {"ok": bool, "error": str, "args": {flag dest: value}}. The
parser is the one `vllm serve` builds (`ServeSubcommand.subparser_init`), then `validate_parsed_serve_args`,
the checks vLLM runs before loading a model.
"""

from __future__ import annotations

import contextlib
import io
import json
import sys


def parse(argv: list[str]) -> dict[str, object]:
    from vllm.entrypoints.cli.serve import ServeSubcommand
    from vllm.entrypoints.launchers.cli_args import validate_parsed_serve_args
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    if argv[:2] != ["vllm", "serve"]:
        return {"ok": False, "error": f"not a `vllm serve` command: {argv[:2]}", "args": {}}
    parser = FlexibleArgumentParser(prog="vllm")
    subparsers = parser.add_subparsers(dest="subparser", required=True)
    ServeSubcommand().subparser_init(subparsers)
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            args = parser.parse_args(argv[1:])
        validate_parsed_serve_args(args)
    except SystemExit:
        return {"ok": False, "error": err.getvalue().strip(), "args": {}}
    except Exception as exc:  # vLLM's own validation errors
        return {"ok": False, "error": f"{type(exc).__name__}: {exc}", "args": {}}
    values = {k: v if isinstance(v, (str, int, float, bool, type(None))) else str(v) for k, v in vars(args).items()}
    return {"ok": True, "error": "", "args": values}


def main() -> int:
    commands = json.load(sys.stdin)
    results = [parse(argv) for argv in commands]
    json.dump(results, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
