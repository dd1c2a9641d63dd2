"""Q3, repair: the Repairer on seeded bugs (bugs.py) and on correct functions (false alarms).

For each bug case the Repairer gets the buggy document and the function's span; the repaired
function is `RepairResult.text`. A case is fixed when
- the original is restored (`bugs.same_function`: whitespace-insensitive, indentation kept), or
- the case has tests (HumanEval), the buggy program fails them and the repaired one passes
  (a bug the tests cannot see counts only when restored).
A correct function (the false-alarm set) raises a false alarm when any edit is proposed.
Latency: the Repairer's own time per case (`RepairResult.ms`), median and p95, over all bug cases
and over the fixed ones.

`kind_of(checkpoint)`: "ar" for causal models, "mask_only" for the stage-1 export (`export_mask/`
or config.json `trainer.stage == "mask"`), "edit" otherwise; it names the recorded figures:
Q3.fix_rate / Q3.fix_rate_mask_only / Q3.ar_fix_rate and Q3.false_alarm_rate /
Q3.false_alarm_rate_mask_only / Q3.ar_false_alarm_rate.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .bugs import CATEGORIES, CORRECT, BugCase, same_function
from .sandbox import SandboxConfig, SandboxPool

# repair(case) -> (repaired function text, number of edits, ms)
RepairFn = Callable[[BugCase], tuple[str, int, float]]


@dataclass
class CaseResult:
    id: str
    category: str
    parses: bool  # the buggy document parses
    n_edits: int
    ms: float
    restored: bool
    tests_pass: bool | None = None  # the repaired program passes (None: not run / no tests)
    buggy_passes: bool | None = None  # the buggy program passes its tests (None: no tests)
    fixed: bool = False
    false_alarm: bool = False
    error: str = ""


@dataclass
class Q3Report:
    checkpoint: str
    model: str  # "diffusion", "ar", "oracle", "identity"
    kind: str  # "edit", "mask_only", "ar", "oracle", "identity"
    device: str
    settings: dict
    n_cases: int = 0
    n_fixed: int = 0
    fix_rate: float = 0.0
    fix_rate_by_category: dict = field(default_factory=dict)  # category -> {n, fixed, rate}
    n_correct: int = 0
    n_false_alarms: int = 0
    false_alarm_rate: float = 0.0
    latency_ms: dict = field(default_factory=dict)  # {median, p95, mean} over bug cases
    latency_fixed_ms: dict = field(default_factory=dict)  # the same over fixed cases
    seconds: float = 0.0
    cases: list[CaseResult] = field(default_factory=list)

    def finish(self, seconds: float):
        bugs = [c for c in self.cases if c.category != CORRECT]
        good = [c for c in self.cases if c.category == CORRECT]
        self.n_cases, self.n_fixed = len(bugs), sum(c.fixed for c in bugs)
        self.fix_rate = self.n_fixed / max(1, len(bugs))
        by = {}
        for cat in CATEGORIES:
            cs = [c for c in bugs if c.category == cat]
            if cs:
                by[cat] = {"n": len(cs), "fixed": sum(c.fixed for c in cs),
                           "rate": round(sum(c.fixed for c in cs) / len(cs), 4)}
        self.fix_rate_by_category = by
        self.n_correct, self.n_false_alarms = len(good), sum(c.false_alarm for c in good)
        self.false_alarm_rate = self.n_false_alarms / max(1, len(good))
        self.latency_ms = _latency([c.ms for c in bugs])
        self.latency_fixed_ms = _latency([c.ms for c in bugs if c.fixed])
        self.seconds = seconds

    def summary(self) -> str:
        cats = ", ".join(f"{k} {v['rate']:.2f} ({v['fixed']}/{v['n']})" for k, v in self.fix_rate_by_category.items())
        return (f"Q3 {self.kind} fix rate = {self.fix_rate:.4f} ({self.n_fixed}/{self.n_cases}); false alarms "
                f"{self.false_alarm_rate:.4f} ({self.n_false_alarms}/{self.n_correct}); per category: {cats}; "
                f"latency per repair {self.latency_ms.get('median', 0):.0f} ms median, "
                f"{self.latency_ms.get('p95', 0):.0f} ms p95 (fixed: {self.latency_fixed_ms.get('median', 0):.0f} / "
                f"{self.latency_fixed_ms.get('p95', 0):.0f}); {self.seconds:.1f} s in all on {self.device}")

    def to_json(self, with_cases: bool = True) -> str:
        d = asdict(self)
        if not with_cases:
            d.pop("cases")
        return json.dumps(d, indent=2)

    def record_names(self) -> tuple[str, str]:
        """The results.json names of (fix rate, false-alarm rate) for this kind of checkpoint."""
        return {"edit": ("Q3.fix_rate", "Q3.false_alarm_rate"),
                "mask_only": ("Q3.fix_rate_mask_only", "Q3.false_alarm_rate_mask_only"),
                "ar": ("Q3.ar_fix_rate", "Q3.ar_false_alarm_rate")}[self.kind]


def add_arguments(q3) -> None:
    """The options of `dllm-ls eval q3` beyond the common ones (defaults: `RepairConfig`'s)."""
    from ..diffusion_core.repair import RepairConfig
    from .bugs import SPLITS

    d = RepairConfig()
    q3.add_argument("--limit", type=int, metavar="N",
                    help="a seeded sample of N bug cases (round robin over categories) + N//4 correct functions "
                         "(default: every case of the split, and every correct function)")
    q3.add_argument("--split", choices=SPLITS, default="all",
                    help="held-out functions: test = even-numbered HumanEval problems, tune = odd ones (where the "
                         "repair thresholds were calibrated), all = both")
    q3.add_argument("--val", metavar="JSONL", help="also inject bugs into functions of this corpus validation split")
    q3.add_argument("--corpus-functions", type=int, default=200, metavar="N", help="functions taken from --val")
    q3.add_argument("--seed", type=int, default=0, help="seed of the injector")
    q3.add_argument("--per-category", type=int, default=1, metavar="K", help="bugs per category per function")
    q3.add_argument("--suspect-prob", type=float, default=d.suspect_prob, help="RepairConfig.suspect_prob")
    q3.add_argument("--margin", type=float, default=d.margin, help="RepairConfig.margin (nats)")
    q3.add_argument("--length-cost", type=float, default=d.length_cost, help="RepairConfig.length_cost (nats/token)")
    q3.add_argument("--score", choices=("sum", "mean"), default=d.score, help="RepairConfig.score")
    q3.add_argument("--max-rounds", type=int, default=d.max_rounds, help="RepairConfig.max_rounds")
    q3.add_argument("--max-spans", type=int, default=d.max_spans, help="RepairConfig.max_spans (suspects per round)")
    q3.add_argument("--alternatives", type=int, default=d.alternatives, help="RepairConfig.alternatives")
    q3.add_argument("--masked-alternatives", type=int, default=d.masked_alternatives,
                    help="RepairConfig.masked_alternatives")
    q3.add_argument("--remask", action="store_true", help="RepairConfig.remask: also remask-and-denoise candidates")
    q3.add_argument("--workers", type=int, default=0, help="test programs at once")
    q3.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: half the CPUs on CPU)")
    q3.add_argument("--timeout", type=float, default=5.0, metavar="S", help="per-program time limit")
    q3.add_argument("--oracle", action="store_true", help="answer with the original function (harness check: 1.0)")


def repair_config(args):
    from ..diffusion_core.repair import RepairConfig

    return RepairConfig(suspect_prob=args.suspect_prob, margin=args.margin, length_cost=args.length_cost,
                        score=args.score, max_rounds=args.max_rounds, max_spans=args.max_spans,
                        alternatives=args.alternatives, masked_alternatives=args.masked_alternatives,
                        remask=args.remask)


def _latency(ms: list[float]) -> dict:
    if not ms:
        return {"median": 0.0, "p95": 0.0, "mean": 0.0, "n": 0}
    s = sorted(ms)
    p95 = s[min(len(s) - 1, max(0, int(round(0.95 * len(s) + 0.5)) - 1))]  # nearest rank
    return {"median": round(statistics.median(s), 2), "p95": round(p95, 2),
            "mean": round(sum(s) / len(s), 2), "n": len(s)}


def kind_of(checkpoint: str | Path, causal: bool) -> str:
    """"ar", "mask_only" (stage-1 export) or "edit"; see the module docstring."""
    if causal:
        return "ar"
    from ..diffusion_core.checkpoint import load_config

    try:
        _cfg, extra = load_config(checkpoint)
    except Exception:  # noqa: BLE001 - the name alone decides then
        extra = {}
    stage = (extra.get("trainer") or {}).get("stage") if isinstance(extra.get("trainer"), dict) else None
    if stage == "mask" or (stage is None and Path(checkpoint).name == "export_mask"):
        return "mask_only"
    return "edit"


def oracle_repair(case: BugCase):
    """The original function itself: checks the harness (every bug fixed, no false alarm)."""
    return case.original_function, int(case.buggy != case.original), 0.0


def identity_repair(case: BugCase):
    """No edit at all: the floor (nothing fixed unless the tests cannot see the bug)."""
    return case.buggy_function, 0, 0.0


def repairer_repair(repairer) -> RepairFn:
    def repair(case: BugCase):
        res = repairer.repair(case.buggy, case.span)
        return res.text, len(res.edits), res.ms

    return repair


def run_q3(cases: list[BugCase], repair: RepairFn, report: Q3Report, *, sandbox: SandboxConfig | None = None,
           progress: bool = True) -> Q3Report:
    """Repair every case; tests run in the sandbox while the model works on the next case."""
    t0 = time.perf_counter()
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(cases), desc="Q3", unit="case", file=sys.stderr)
    pending = []
    with SandboxPool(sandbox) as pool:
        for case in cases:
            err = ""
            try:
                text, n_edits, ms = repair(case)
            except Exception as e:  # noqa: BLE001 - a RepairError (too long, ...) is an unfixed case
                from ..errors import DllmError

                if not isinstance(e, DllmError):
                    raise
                text, n_edits, ms, err = case.buggy_function, 0, 0.0, str(e)[:300]
            restored = case.category != CORRECT and same_function(text, case.original_function)
            r = CaseResult(id=case.id, category=case.category, parses=case.parses, n_edits=n_edits,
                           ms=round(ms, 2), restored=restored, error=err)
            if case.category == CORRECT:
                r.false_alarm = n_edits > 0 or not same_function(text, case.original_function)
            futs = (None, None)
            if case.category != CORRECT and case.tests is not None:
                buggy_fut = pool.submit(case.program(case.buggy))
                fixed_fut = None
                if not restored and n_edits and not same_function(text, case.buggy_function):
                    fixed_fut = pool.submit(case.program(case.document_with(text)))
                futs = (buggy_fut, fixed_fut)
            pending.append((r, futs))
            if bar is not None:
                bar.update(1)
        for r, (buggy_fut, fixed_fut) in pending:
            if buggy_fut is not None:
                r.buggy_passes = buggy_fut.result().passed
            if fixed_fut is not None:
                r.tests_pass = fixed_fut.result().passed
            r.fixed = r.category != CORRECT and (r.restored or (bool(r.tests_pass) and r.buggy_passes is False))
            report.cases.append(r)
    if bar is not None:
        bar.close()
    report.finish(time.perf_counter() - t0)
    return report


def select(bugs: list[BugCase], correct: list[BugCase], limit: int | None, seed: int = 0) -> list[BugCase]:
    """All cases, or a seeded sample of `limit` bug cases (spread over the categories) plus
    limit // 4 (at least 1) correct functions."""
    from .humaneval import subsample

    if limit is None:
        return bugs + correct
    by_cat = {c: [b for b in bugs if b.category == c] for c in CATEGORIES}
    chosen, k = [], 0
    order = [c for c in CATEGORIES if by_cat[c]]
    while len(chosen) < min(limit, len(bugs)):  # round robin over the categories, seeded within each
        c = order[k % len(order)]
        k += 1
        if by_cat[c]:
            pick = subsample(by_cat[c], 1, seed=seed + k)[0]
            by_cat[c].remove(pick)
            chosen.append(pick)
    return chosen + subsample(correct, max(1, limit // 4), seed=seed)
