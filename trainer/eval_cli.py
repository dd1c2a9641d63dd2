"""`dllm-ls eval {q1,q2,loss}`: evaluate a checkpoint.

    dllm-ls eval q1 --checkpoint DIR [--limit N] [--block-size B] [--threshold T] [--json PATH]
    dllm-ls eval q2 --checkpoint DIR [--limit N] [--spans 200] [--seed 0] ...
    dllm-ls eval loss --checkpoint DIR --data val.jsonl
    dllm-ls eval q3 --checkpoint DIR [--val runs/x/corpus/val.jsonl] [--limit N] [--json PATH] [--record]
    dllm-ls eval q1 --oracle            # the held-out lines themselves: checks the harness (1.0)
    dllm-ls eval q1 --mid-word [--no-token-healing]   # the cursor inside the line's first word

`--record` stores the headline figure in docs/results.json (Q1.pass_at_1, Q1.ar_pass_at_1, ...;
Q3: Q3.fix_rate, Q3.fix_rate_mask_only or Q3.ar_fix_rate, with the matching false-alarm rate).
torch is imported only when a command runs.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from ..diffusion_core.copy_prior import COPY
from ..errors import DllmError


def _common(p: argparse.ArgumentParser):
    p.add_argument("--checkpoint", metavar="DIR", help="checkpoint directory (default: the shipped model)")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default: cuda when present)")
    p.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"],
                   help="weights dtype (auto: bfloat16 on CUDA, float32 on CPU)")
    p.add_argument("--json", metavar="PATH", help="write the figures (and per-task results) as JSON here")
    p.add_argument("--record", nargs="?", const="auto", metavar="NAME",
                   help="store the headline figure in --results under NAME "
                        "(default name: Q1.pass_at_1, Q1.ar_pass_at_1, Q2.pass_at_1, ...)")
    p.add_argument("--results", default="docs/results.json", metavar="PATH", help="results map for --record")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def _infill(p: argparse.ArgumentParser, block_default_tokens: int):
    p.add_argument("--limit", type=int, metavar="N", help="evaluate a seeded sample of N tasks")
    p.add_argument("--block-size", type=int, default=32, metavar="B")
    p.add_argument("--threshold", type=float, default=0.9, metavar="T", help="commit confidence threshold")
    p.add_argument("--rule", default="threshold", choices=["threshold", "factor"])
    p.add_argument("--factor", type=float, default=1.0, help="Fast-dLLM factor (with --rule factor)")
    p.add_argument("--max-tokens", type=int, default=block_default_tokens, metavar="N")
    p.add_argument("--workers", type=int, default=0,
                   help="test programs at once (default: the CPUs, less --threads on a CPU device)")
    p.add_argument("--threads", type=int, default=0,
                   help="torch CPU threads for the model (default: half the CPUs on a CPU device; "
                        "the tests share the cores, and oversubscribed torch threads run ~10x slower)")
    p.add_argument("--timeout", type=float, default=5.0, metavar="S", help="per-program time limit")
    p.add_argument("--oracle", action="store_true", help="use the held-out text as the completion (no model)")
    p.add_argument("--revise", type=float, default=0.5,
                   help="SamplerConfig.revise: a committed token whose argmax now differs with this confidence "
                        "takes it (0: off)")
    p.add_argument("--copy", type=float, default=COPY,
                   help="SamplerConfig.copy: in block mode, a prediction that a draft copied from the context "
                        "agrees with commits at this confidence (0: off)")
    p.add_argument("--lookup", type=int, default=0, metavar="K",
                   help="SamplerConfig.lookup, the AR baseline only: greedy decoding verifying K tokens drafted "
                        "from the context a step (prompt lookup: the same text, fewer steps; 0: off)")
    p.add_argument("--fallback", choices=["mode", "leftmost", "confident"], default="mode",
                   help="SamplerConfig.fallback: the one position a step commits when none passes the rule")
    p.add_argument("--syntax-guard", action="store_true",
                   help="SamplerConfig.syntax_guard: remask a step's commits that open a new syntax error "
                        "(tree-sitter) and redo the step with one commit")
    p.add_argument("--syntax-guard-alternatives", type=int, default=0, metavar="K",
                   help="with --syntax-guard: when that one commit still opens an error, try its position's "
                        "K runner-up tokens before keeping it")
    p.add_argument("--after-indent", action="store_true",
                   help="the cursor after the held-out text's indentation, as an editor puts it after Enter; "
                        "--record names it Q1.after_indent_pass_at_1 (Q2 alike)")
    p.add_argument("--no-token-healing", dest="token_healing", action="store_false",
                   help="prompt cut at the cursor (SamplerConfig.token_healing off; it changes nothing when "
                        "the cursor is at a line start, as in Q1 and Q2)")


def add_arguments(parser: argparse.ArgumentParser):
    sub = parser.add_subparsers(dest="bench", metavar="BENCH", required=True)
    q1 = sub.add_parser("q1", help="HumanEval single-line infilling pass@1 (1033 tasks)")
    _common(q1)
    _infill(q1, 64)
    q1.add_argument("--mid-word", action="store_true",
                    help="the cursor inside the held-out line's first word (seeded), as while typing; "
                         "--record names it Q1.mid_word_pass_at_1")
    q2 = sub.add_parser("q2", help="HumanEval multi-line infilling pass@1 (seeded spans of 2-6 lines)")
    _common(q2)
    _infill(q2, 192)
    q2.add_argument("--spans", type=int, default=200, help="spans in the fixed subset")
    q2.add_argument("--seed", type=int, default=0, help="seed of the subset")
    q3 = sub.add_parser("q3", help="repair: fix rate on seeded bugs, false-alarm rate on correct functions")
    _common(q3)
    from .eval_q3 import add_arguments as _q3_arguments

    _q3_arguments(q3)
    loss = sub.add_parser("loss", help="validation loss (diffusion: masked CE / ELBO; AR: next-token CE)")
    _common(loss)
    loss.add_argument("--data", required=True, metavar="JSONL", help="corpus split, e.g. val.jsonl")
    loss.add_argument("--seq-len", type=int, default=512)
    loss.add_argument("--block-size", type=int, default=32)
    loss.add_argument("--max-tokens", type=int, default=131_072, help="tokens of --data to evaluate")
    loss.add_argument("--batch-size", type=int, default=4)


def _command(args) -> str:
    argv = sys.argv[1:]
    if len(argv) >= 2 and argv[0] == "eval" and argv[1] == args.bench:
        return "dllm-ls " + shlex.join(argv)
    return f"dllm-ls eval {args.bench}" + (f" --checkpoint {args.checkpoint}" if args.checkpoint else "")


def _device(name: str) -> str:
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise DllmError(f"--device {name}: no CUDA device is visible; use --device cpu")
    return name


def _share_cpus(args, device: str) -> int:
    """Split the cores between the model (torch threads) and the test programs; returns the workers."""
    import os

    import torch

    cpus = os.cpu_count() or 1
    if device.startswith("cuda"):
        return args.workers or cpus
    threads = args.threads = args.threads or max(1, cpus // 2)
    torch.set_num_threads(threads)
    return args.workers or max(1, cpus - threads)


def _load(args, device: str):
    import torch

    from ..diffusion_core.checkpoint import load_checkpoint, resolve_checkpoint

    ckpt = resolve_checkpoint(args.checkpoint)
    dtype = None if args.dtype == "auto" else getattr(torch, args.dtype)
    model, tok = load_checkpoint(ckpt, device=device, dtype=dtype)
    return ckpt, model, tok


def _write_json(path: str, text: str):
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text + "\n", encoding="utf-8")


def run(args) -> int:
    from . import eval as ev

    if args.bench == "loss":
        return _run_loss(args, ev)
    if args.bench == "q3":
        return _run_q3(args, ev)
    from .humaneval import after_indent, mid_word, q1_tasks, q2_tasks, subsample
    from .sandbox import SandboxConfig

    bench = args.bench.upper()
    if bench == "Q1":
        tasks = q1_tasks()
        print(f"Q1: {len(tasks)} tasks (every non-blank canonical-solution line)", file=sys.stderr)
        mode = "line"
    else:
        tasks = q2_tasks(n=args.spans, seed=args.seed)
        print(f"Q2: {len(tasks)} spans of 2-6 lines (seed {args.seed})", file=sys.stderr)
        mode = "block"
    tasks = subsample(tasks, args.limit)
    if getattr(args, "mid_word", False):
        tasks = mid_word(tasks)
        print(f"the cursor inside the first word: {len(tasks)} tasks", file=sys.stderr)
    if args.after_indent:
        tasks = after_indent(tasks)
    if not tasks:
        raise DllmError("no tasks to evaluate (--limit 0?)")
    if args.oracle and args.record:
        raise DllmError("--record with --oracle would store the harness check as a model's figure; drop one")
    icfg = ev.InfillConfig(mode=mode, block_size=args.block_size, max_tokens=args.max_tokens,
                           rule=args.rule, threshold=args.threshold, factor=args.factor,
                           syntax_guard=args.syntax_guard, fallback=args.fallback, revise=args.revise,
                           copy=args.copy, lookup=args.lookup, syntax_guard_alternatives=args.syntax_guard_alternatives,
                           token_healing=args.token_healing)
    sandbox = SandboxConfig(timeout_s=args.timeout, workers=args.workers)
    if args.oracle:
        device, ckpt, kind, complete = "cpu", "-", "oracle", ev.oracle_complete
    else:
        from ..diffusion_core.sampler import Sampler

        device = _device(args.device)
        sandbox.workers = _share_cpus(args, device)
        ckpt, model, tok = _load(args, device)
        kind = "ar" if model.cfg.causal else "diffusion"
        sampler = Sampler(model, tok)
        sampler.use_cuda_graph()  # on CUDA, the core's graphed step (the same completions)
        complete = ev.sampler_complete(sampler, icfg)
        complete(tasks[0])  # warm-up: allocations and kernels outside the timings
    report = ev.EvalReport(benchmark=bench, checkpoint=str(ckpt), model=kind, device=ev.describe_machine(device),
                           settings={**vars(icfg), "limit": args.limit, "timeout_s": args.timeout,
                                     "workers": sandbox.workers, "threads": args.threads})
    ev.run_infill(tasks, complete, report, sandbox=sandbox, progress=not args.quiet)
    print(report.summary())
    if args.json:
        _write_json(args.json, report.to_json())
    if args.record:
        variant = (("mid_word_" if getattr(args, "mid_word", False) else "") + ("after_indent_" if args.after_indent else "")
                   + ("" if args.token_healing else "no_healing_"))
        name = args.record if args.record != "auto" else f"{bench}.{'ar_' if kind == 'ar' else ''}{variant}pass_at_1"
        ev.update_results_json(args.results, name, round(report.pass_at_1, 4), "fraction",
                               report.device, _command(args))
        print(f"recorded {name} = {report.pass_at_1:.4f} in {args.results}", file=sys.stderr)
    return 0


def _run_loss(args, ev) -> int:
    import json

    from .corpus import iter_texts

    device = _device(args.device)
    ckpt, model, tok = _load(args, device)
    out = ev.validation_loss(model, tok, iter_texts(args.data), seq_len=args.seq_len,
                             block_size=args.block_size, max_tokens=args.max_tokens, batch_size=args.batch_size)
    out = {"checkpoint": str(ckpt), "data": args.data, "device": ev.describe_machine(device), **out}
    print(json.dumps(out, indent=2, default=str))
    if args.json:
        _write_json(args.json, json.dumps(out, indent=2, default=str))
    if args.record:
        causal = model.cfg.causal
        key = "ce_next_token" if causal else "elbo"
        value = out.get(key, out.get("loss"))
        if value is None:
            raise DllmError(f"the validation loss gave no '{key}' figure to record: {sorted(out)}")
        name = args.record if args.record != "auto" else ("loss.ar_val_ce" if causal else "loss.val_elbo")
        ev.update_results_json(args.results, name, round(float(value), 4), "nats/token", out["device"],
                               _command(args))
    return 0


def _run_q3(args, ev) -> int:
    from . import eval_q3 as q3
    from .bugs import q3_cases
    from .sandbox import SandboxConfig

    if args.oracle and args.record:
        raise DllmError("--record with --oracle would store the harness check as a model's figure; drop one")
    bugs, correct = q3_cases(seed=args.seed, val_jsonl=args.val, corpus_functions_max=args.corpus_functions,
                             per_category=args.per_category, split=args.split)
    cases = q3.select(bugs, correct, args.limit, seed=args.seed)
    n_bugs = sum(c.category != "correct" for c in cases)
    print(f"Q3: {n_bugs} bug cases (of {len(bugs)}), {len(cases) - n_bugs} correct functions "
          f"(seed {args.seed}, split {args.split}{', with ' + args.val if args.val else ''})", file=sys.stderr)
    if not n_bugs:
        raise DllmError("no bug cases to evaluate (--limit 0?)")
    sandbox = SandboxConfig(timeout_s=args.timeout, workers=args.workers)
    rcfg = None
    if args.oracle:
        device, ckpt, model_kind, kind, repair = "cpu", "-", "oracle", "oracle", q3.oracle_repair
    else:
        from ..diffusion_core.repair import Repairer

        device = _device(args.device)
        sandbox.workers = _share_cpus(args, device)
        ckpt, model, tok = _load(args, device)
        model_kind = "ar" if model.cfg.causal else "diffusion"
        kind = q3.kind_of(ckpt, model.cfg.causal)
        rcfg = q3.repair_config(args)
        repair = q3.repairer_repair(Repairer(model, tok, rcfg))
        try:
            repair(cases[0])  # warm-up: allocations and kernels outside the timings
        except DllmError:
            pass  # (a function too long for the model: run_q3 counts it as not fixed)
    settings = {"seed": args.seed, "split": args.split, "limit": args.limit, "val": args.val,
                "per_category": args.per_category,
                "timeout_s": args.timeout, "workers": sandbox.workers, "threads": getattr(args, "threads", 0),
                "repair": None if rcfg is None else {k: v for k, v in vars(rcfg).items() if k != "window"}}
    report = q3.Q3Report(checkpoint=str(ckpt), model=model_kind, kind=kind, device=ev.describe_machine(device),
                         settings=settings)
    q3.run_q3(cases, repair, report, sandbox=sandbox, progress=not args.quiet)
    print(report.summary())
    if args.json:
        _write_json(args.json, report.to_json())
    if args.record:
        fix_name, fa_name = report.record_names()
        if args.record != "auto":
            fix_name = args.record
        cmd = _command(args)
        ev.update_results_json(args.results, fix_name, round(report.fix_rate, 4), "fraction", report.device, cmd)
        ev.update_results_json(args.results, fa_name, round(report.false_alarm_rate, 4), "fraction",
                               report.device, cmd)
        print(f"recorded {fix_name} = {report.fix_rate:.4f}, {fa_name} = {report.false_alarm_rate:.4f} "
              f"in {args.results}", file=sys.stderr)
    return 0
