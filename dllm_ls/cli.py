"""`dllm-ls SUBCOMMAND`: a dispatcher that imports a subcommand's module only when it runs.

`dllm-ls --help` imports nothing heavy (no torch). Each subcommand module exposes
`add_arguments(parser)` and `run(args) -> int`; its errors reach the user as one line.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from .errors import DllmError

# name -> (module, one-line help)
SUBCOMMANDS = {
    "complete": ("dllm_ls.diffusion_core.cli_complete", "print the completion at FILE:LINE:COL"),
    "batch": ("dllm_ls.diffusion_core.cli_batch", "complete JSON lines from stdin, one JSON line out per input"),
    "fix": ("dllm_ls.diffusion_core.cli_fix", "repair the function at FILE --line L: a unified diff (--json)"),
    "refactor": ("dllm_ls.diffusion_core.cli_refactor",
                 "repair every function of FILE, or propagate an edit (--since OLD_FILE): a unified diff (--json)"),
    "train": ("dllm_ls.trainer.cli", "build the corpus and tokenizer, train a model"),
    "eval": ("dllm_ls.trainer.eval_cli", "evaluate a checkpoint (q1, q2, q3, loss)"),
    "core": ("dllm_ls.diffusion_core.daemon", "the resident diffusion core (msgpack-rpc on a private unix socket)"),
    "serve": ("dllm_ls.lsp_server.cli", "the language server (LSP over stdio; --tcp HOST:PORT)"),
    "bench": ("dllm_ls.lsp_server.bench", "benchmarks: s2 (editor latency), s3 (many editors, one core), q1parse (insertions that parse), "
              "speed (decode tokens/s, diffusion vs AR)"),
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    top = argparse.ArgumentParser(
        prog="dllm-ls",
        description="Code completion from a block-diffusion language model.",
        epilog="Run `dllm-ls SUBCOMMAND --help` for a subcommand's options.",
    )
    top.add_argument("--version", action="version", version="dllm-ls 0.1.0")
    sub = top.add_subparsers(dest="command", metavar="SUBCOMMAND")
    for name, (_, help_) in SUBCOMMANDS.items():
        sub.add_parser(name, help=help_, add_help=False)
    if not argv or argv[0] not in SUBCOMMANDS:
        top.parse_args(argv or ["--help"])  # prints help or the unknown-command error, exits
        return 2
    name = argv[0]
    module = importlib.import_module(SUBCOMMANDS[name][0])
    parser = argparse.ArgumentParser(prog=f"dllm-ls {name}", description=SUBCOMMANDS[name][1])
    module.add_arguments(parser)
    args = parser.parse_args(argv[1:])
    try:
        return module.run(args) or 0
    except KeyboardInterrupt:
        return 130
    except DllmError as e:
        print(f"dllm-ls {name}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
