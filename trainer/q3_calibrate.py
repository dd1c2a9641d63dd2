"""Calibrate the repair's acceptance on Q3's tune split (never on the reported test split).

    python -m dllm_ls.trainer.q3_calibrate --checkpoint DIR [--limit 100] [--seed 1] [--threads 1]
        [--out trace.jsonl] [--margins 2,4,6,8] [--length-costs 0,1,2,3]

Runs the Repairer over a seeded sample of the tune split (odd-numbered HumanEval problems, by
default injector seed 1: other bugs than the test split's seed 0, in other functions) plus every
correct function of that split, with the acceptance switched off (margin = +inf, one round) and
`Repairer.trace` on, so every candidate's score change (`dsum`, `dlen`) and whether it restores
the original are logged. Then, for each (margin, length_cost), it replays the first round: the
best candidate by dsum + length_cost * dlen is kept when that reaches the margin; a case is fixed
when the kept candidate restores the original, a correct function is a false alarm when any
candidate is kept. It prints the grid (fixed / false alarms); pick the smallest margin whose
false alarms stay well under 10%. RepairConfig's defaults (margin 6, length_cost 2) came from
this on the shipped edit-stage model; the AR twin's margin (15) too.
"""

from __future__ import annotations

import argparse
import json
import sys
import time


def collect(repairer, cases) -> list[dict]:
    from .bugs import same_function

    rows = []
    for c in cases:
        repairer.trace = []
        t = time.perf_counter()
        repairer.repair(c.buggy, c.span)
        ms = (time.perf_counter() - t) * 1000
        orig = c.original_function.rstrip("\n")
        cands = []
        for d in repairer.trace:
            d = dict(d)
            d["restores"] = c.category != "correct" and same_function(d.pop("text"), orig)
            cands.append(d)
        rows.append(dict(id=c.id, cat=c.category, ms=round(ms, 1), cands=cands))
    repairer.trace = None
    return rows


def replay(rows: list[dict], margin: float, length_cost: float) -> tuple[int, int, int, int]:
    """(fixed, bug cases, false alarms, correct functions) of one round at these settings."""
    fixed = alarms = n_bug = n_ok = 0
    for r in rows:
        score = [c["dsum"] + length_cost * c["dlen"] for c in r["cands"]]
        kept = bool(score) and max(score) >= margin
        if r["cat"] == "correct":
            n_ok += 1
            alarms += kept
        else:
            n_bug += 1
            fixed += kept and r["cands"][max(range(len(score)), key=score.__getitem__)]["restores"]
    return fixed, n_bug, alarms, n_ok


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m dllm_ls.trainer.q3_calibrate", description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--limit", type=int, default=100, help="bug cases sampled from the tune split")
    p.add_argument("--seed", type=int, default=1, help="injector seed (the test split uses 0)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", help="write the per-candidate trace here (JSONL)")
    p.add_argument("--margins", default="0,2,4,6,8,10,12,14,16,18")
    p.add_argument("--length-costs", default="0,1,2,3")
    args = p.parse_args(argv)

    import torch

    from ..diffusion_core.checkpoint import load_checkpoint
    from ..diffusion_core.repair import RepairConfig, Repairer
    from .bugs import q3_cases
    from .eval_q3 import select

    torch.set_num_threads(args.threads)
    model, tok = load_checkpoint(args.checkpoint, device="cpu")
    model.eval()
    repairer = Repairer(model, tok, RepairConfig(margin=float("inf"), max_rounds=1))
    bugs, correct = q3_cases(seed=args.seed, split="tune")
    cases = [c for c in select(bugs, correct, args.limit, seed=args.seed) if c.category != "correct"] + correct
    print(f"tune split: {len(cases) - len(correct)} bug cases, {len(correct)} correct functions", file=sys.stderr)
    rows = collect(repairer, cases)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            for r in rows:
                f.write(json.dumps(r) + "\n")
    margins = [float(x) for x in args.margins.split(",")]
    print("length_cost  " + "  ".join(f"m={m:g}" for m in margins) + "   (fixed/bugs, false alarms/correct)")
    for lc in (float(x) for x in args.length_costs.split(",")):
        cells = []
        for m in margins:
            f, nb, a, nc = replay(rows, m, lc)
            cells.append(f"{f}/{nb},{a}/{nc}")
        print(f"{lc:<11g}  " + "  ".join(cells))
    return 0


if __name__ == "__main__":
    sys.exit(main())
