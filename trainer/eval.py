"""Evaluation: HumanEval infilling (Q1, Q2) for any checkpoint, validation loss, results.json.

Q1/Q2 (`run_infill`): for each task (humaneval.py) the model fills the hole with
`Sampler.complete(prefix, suffix, mode)` (greedy: argmax commits; diffusion or AR checkpoints
alike, the Sampler decodes `cfg.causal` models token by token), and the program prefix +
completion + suffix + tests runs in the sandbox (sandbox.py) while the model works on the next
task. pass@1 = the fraction of programs that exit 0 within the time limit.

Validation loss (`validation_loss`): the training helper's `objectives.validation_loss` when it
exists, else `simple_validation_loss` here: for the diffusion model, the mean cross-entropy of
masked tokens of noisy blocks at mask rates 0.1, 0.3, ..., 0.9 (their average is a midpoint-rule
estimate of the block-diffusion ELBO per token under the linear schedule); for the AR model
(`cfg.causal`), next-token cross-entropy. Both in nats per token, on the same token stream.
"""

from __future__ import annotations

import difflib
import fcntl
import json
import os
import platform
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from ..diffusion_core.copy_prior import COPY
from ..errors import DllmError
from .humaneval import InfillTask
from .sandbox import SandboxConfig, SandboxPool


class EvalError(DllmError):
    pass


@dataclass(kw_only=True)
class InfillConfig:
    """How the model is asked (defaults: the design's greedy threshold decoder)."""
    mode: str = "line"  # "line" for Q1, "block" for Q2
    block_size: int = 32
    max_tokens: int = 0  # 0 = 64 in line mode, 192 in block mode
    rule: str = "threshold"
    threshold: float = 0.9
    factor: float = 1.0
    syntax_guard: bool = False  # SamplerConfig.syntax_guard: remask a commit that opens a syntax error
    syntax_guard_alternatives: int = 0  # SamplerConfig.syntax_guard_alternatives
    token_healing: bool = True  # SamplerConfig.token_healing, as the server decodes (no effect at a line start)
    fallback: str = "mode"  # SamplerConfig.fallback
    revise: float = 0.5  # SamplerConfig.revise
    copy: float = COPY  # SamplerConfig.copy
    lookup: int = 0  # SamplerConfig.lookup (the AR baseline's prompt lookup)

    def __post_init__(self):
        if self.max_tokens == 0:
            self.max_tokens = 64 if self.mode == "line" else 192


@dataclass
class TaskResult:
    task_id: str
    passed: bool
    status: str  # "passed", "failed", "timeout"
    completion: str
    target: str
    exact: bool  # the completion equals the held-out text (ignoring trailing blanks)
    stop: str = ""
    steps: int = 0
    tokens: int = 0
    ms: float = 0.0
    error: str = ""  # the last line of the program's output when it failed
    syntax_valid: bool = True  # prefix + completion + suffix parses (`ast.parse`)
    edit_sim: float = 0.0  # `edit_similarity` of completion and target


@dataclass
class EvalReport:
    benchmark: str  # "Q1", "Q2"
    checkpoint: str
    model: str  # "diffusion", "ar", "oracle"
    device: str
    settings: dict
    n_tasks: int = 0
    n_passed: int = 0
    pass_at_1: float = 0.0
    exact_match: float = 0.0
    syntax_valid_rate: float = 0.0  # completions whose insertion leaves the file parseable (ast)
    edit_similarity: float = 0.0  # mean `edit_similarity` (moves where pass@1 sits at the floor: Q2)
    steps_per_token: float = 0.0
    mean_steps: float = 0.0
    mean_tokens: float = 0.0
    tokens_per_step: float = 0.0
    mean_ms: float = 0.0  # model time per task
    p50_ms: float = 0.0
    seconds: float = 0.0  # wall clock of the whole evaluation
    tasks: list[TaskResult] = field(default_factory=list)

    def finish(self, seconds: float):
        r = self.tasks
        n = max(1, len(r))
        self.n_tasks = len(r)
        self.n_passed = sum(t.passed for t in r)
        self.pass_at_1 = self.n_passed / n
        self.exact_match = sum(t.exact for t in r) / n
        self.syntax_valid_rate = sum(t.syntax_valid for t in r) / n
        self.edit_similarity = sum(t.edit_sim for t in r) / n
        self.steps_per_token = sum(t.steps for t in r) / max(1, sum(t.tokens for t in r))
        self.mean_steps = sum(t.steps for t in r) / n
        self.mean_tokens = sum(t.tokens for t in r) / n
        self.tokens_per_step = sum(t.tokens for t in r) / max(1, sum(t.steps for t in r))
        self.mean_ms = sum(t.ms for t in r) / n
        self.p50_ms = statistics.median(t.ms for t in r) if r else 0.0
        self.seconds = seconds

    def summary(self) -> str:
        return (f"{self.benchmark} {self.model} pass@1 = {self.pass_at_1:.4f} ({self.n_passed}/{self.n_tasks}), "
                f"exact {self.exact_match:.3f}, syntax-valid {self.syntax_valid_rate:.3f}, edit similarity "
                f"{self.edit_similarity:.3f}; per task {self.mean_steps:.1f} steps, {self.mean_tokens:.1f} tokens "
                f"({self.tokens_per_step:.2f}/step), {self.mean_ms:.1f} ms mean, {self.p50_ms:.1f} ms p50; "
                f"{self.seconds:.1f} s in all on {self.device}")

    def figures(self) -> dict:
        d = asdict(self)
        d.pop("tasks")
        return d

    def to_json(self, with_tasks: bool = True) -> str:
        d = asdict(self) if with_tasks else self.figures()
        return json.dumps(d, indent=2)


# --- the loop -----------------------------------------------------------------------------------

# complete(task) -> (text, stop, steps, tokens, ms)
CompleteFn = Callable[[InfillTask], tuple[str, str, int, int, float]]


def oracle_complete(task: InfillTask):
    """The held-out text itself: checks the harness (every task must pass)."""
    return task.target, "oracle", 0, 0, 0.0


def sampler_complete(sampler, cfg: InfillConfig) -> CompleteFn:
    """A CompleteFn that asks a diffusion_core Sampler."""
    from ..diffusion_core.sampler import SamplerConfig

    scfg = SamplerConfig(block_size=cfg.block_size, max_tokens=cfg.max_tokens, rule=cfg.rule,
                         threshold=cfg.threshold, factor=cfg.factor, syntax_guard=cfg.syntax_guard,
                         syntax_guard_alternatives=cfg.syntax_guard_alternatives, token_healing=cfg.token_healing,
                         fallback=cfg.fallback, revise=cfg.revise, copy=cfg.copy, lookup=cfg.lookup)

    def complete(task: InfillTask):
        c = sampler.complete(task.prefix, task.suffix, mode=cfg.mode, cfg=scfg)
        return c.text, c.stop, c.trace.steps, c.trace.tokens, c.trace.ms

    return complete


def edit_similarity(completion: str, target: str) -> float:
    """Character-level similarity in [0, 1] of a completion to the held-out text, trailing blanks
    ignored: difflib's ratio, 2 * matches / total length (CodeXGLUE's "edit similarity" measure)."""
    a, b = completion.rstrip(), target.rstrip()
    return difflib.SequenceMatcher(None, a, b, autojunk=False).ratio() if a or b else 1.0


def syntax_valid(task: InfillTask, completion: str) -> bool:
    """Whether the file with the completion inserted (the program without its tests) parses."""
    import ast
    import warnings

    body = completion.replace("\r\n", "\n").rstrip()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            ast.parse(task.prefix + body + "\n" + task.suffix)
            return True
        except (SyntaxError, ValueError):
            return False


def _last_line(output: str) -> str:
    lines = [ln for ln in output.strip().splitlines() if ln.strip()]
    return lines[-1][:300] if lines else ""


def run_infill(tasks: list[InfillTask], complete: CompleteFn, report: EvalReport, *,
               sandbox: SandboxConfig | None = None, progress: bool = True) -> EvalReport:
    """Complete every task and run its tests; the tests run while the model works on the next task."""
    t0 = time.perf_counter()
    pending = []
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(tasks), desc=report.benchmark, unit="task", file=sys.stderr)
    with SandboxPool(sandbox) as pool:
        for task in tasks:
            text, stop, steps, tokens, ms = complete(task)
            pending.append((task, text, stop, steps, tokens, ms, pool.submit(task.program(text))))
            if bar is not None:
                bar.update(1)
        for task, text, stop, steps, tokens, ms, fut in pending:
            r = fut.result()
            report.tasks.append(TaskResult(
                task_id=task.task_id, passed=r.passed, status=r.status, completion=text,
                target=task.target, exact=text.rstrip() == task.target.rstrip(), stop=stop,
                steps=steps, tokens=tokens, ms=round(ms, 2), syntax_valid=syntax_valid(task, text),
                edit_sim=round(edit_similarity(text, task.target), 4),
                error="" if r.passed else ("timeout" if r.status == "timeout" else _last_line(r.output))))
    if bar is not None:
        bar.close()
    report.finish(time.perf_counter() - t0)
    return report


# --- validation loss ------------------------------------------------------------------------------

MASK_RATES = (0.1, 0.3, 0.5, 0.7, 0.9)
MAX_LOSS_TOKENS = 131_072


def block_diffusion_mask(T: int, block_size: int, device=None):
    """Training-style attention mask over [noisy x_t (T) ; clean x_0 (T)], True = attend.

    Noisy query in block b sees the noisy keys of block b and the clean keys of blocks < b;
    clean queries see clean keys causally and no noisy key. Shape (1, 1, 2T, 2T).
    """
    import torch

    i = torch.arange(2 * T, device=device)
    noisy = i < T
    pos = i % T
    blk = pos // block_size
    q_noisy, k_noisy = noisy[:, None], noisy[None, :]
    same_block = blk[:, None] == blk[None, :]
    earlier_block = blk[None, :] < blk[:, None]
    causal = pos[None, :] <= pos[:, None]
    m = (q_noisy & k_noisy & same_block) | (q_noisy & ~k_noisy & earlier_block) | (~q_noisy & ~k_noisy & causal)
    return m[None, None]


def token_chunks(tokenizer, texts, seq_len: int, max_tokens: int) -> list[list[int]]:
    """The texts as one stream (each ended by <|eos|>), cut into chunks of seq_len tokens."""
    stream: list[int] = []
    for text in texts:
        stream += tokenizer.encode(text) + [tokenizer.eos_id]
        if len(stream) >= max_tokens:
            break
    stream = stream[:max_tokens]
    return [stream[i:i + seq_len] for i in range(0, len(stream) - seq_len + 1, seq_len)]


def simple_validation_loss(model, tokenizer, texts, *, seq_len: int = 512, block_size: int = 32,
                           mask_rates=MASK_RATES, max_tokens: int = MAX_LOSS_TOKENS, batch_size: int = 4,
                           seed: int = 0) -> dict:
    """Mean masked-token CE per mask rate and their mean (diffusion), or next-token CE (AR). nats/token."""
    import torch
    import torch.nn.functional as F

    if getattr(model.cfg, "shift", False):
        raise EvalError("simple_validation_loss does not know shift models; use objectives.validation_loss")
    seq_len = min(seq_len, model.cfg.max_seq_len // (1 if model.cfg.causal else 2))
    chunks = token_chunks(tokenizer, texts, seq_len, max_tokens)
    if not chunks:
        raise EvalError(f"the validation texts hold fewer than {seq_len} tokens; pass more text")
    dev = next(model.parameters()).device
    gen = torch.Generator(device="cpu").manual_seed(seed)
    pos = torch.arange(seq_len, device=dev)
    model.eval()
    with torch.no_grad():
        if model.cfg.causal:
            causal = torch.ones(seq_len, seq_len, dtype=torch.bool, device=dev).tril()[None, None]
            total, count = 0.0, 0
            for b in range(0, len(chunks), batch_size):
                x0 = torch.tensor(chunks[b:b + batch_size], device=dev)
                logits = model(x0, pos.expand(len(x0), -1), mask=causal)
                total += F.cross_entropy(logits[:, :-1].flatten(0, 1), x0[:, 1:].flatten(), reduction="sum").item()
                count += x0[:, 1:].numel()
            return {"kind": "ar", "ce_next_token": total / count, "tokens": count, "seq_len": seq_len}
        mask = block_diffusion_mask(seq_len, block_size, dev)
        pos2 = torch.cat([pos, pos])
        per_rate = {}
        for rate in mask_rates:
            total, count = 0.0, 0
            for b in range(0, len(chunks), batch_size):
                x0 = torch.tensor(chunks[b:b + batch_size], device=dev)
                m = (torch.rand(x0.shape, generator=gen) < rate).to(dev)
                xt = torch.where(m, tokenizer.mask_id, x0)
                logits = model(torch.cat([xt, x0], 1), pos2.expand(len(x0), -1), mask=mask)[:, :seq_len]
                total += F.cross_entropy(logits[m], x0[m], reduction="sum").item()
                count += int(m.sum())
            per_rate[rate] = total / max(1, count)
        return {"kind": "diffusion", "elbo": sum(per_rate.values()) / len(per_rate),
                "ce_at_mask_rate": per_rate, "tokens": sum(map(len, chunks)), "seq_len": seq_len,
                "block_size": block_size}


def validation_loss(model, tokenizer, texts, **kwargs) -> dict:
    """The training helper's objectives.validation_loss when it exists, else simple_validation_loss."""
    try:
        from .objectives import validation_loss as trainer_loss
    except ImportError:
        trainer_loss = None
    if trainer_loss is not None:
        import inspect

        params = inspect.signature(trainer_loss).parameters
        max_tokens = kwargs.get("max_tokens", MAX_LOSS_TOKENS)
        if "n_batches" in params and "n_batches" not in kwargs:  # translate the token budget
            per_batch = kwargs.get("seq_len", 256) * kwargs.get("batch_size", 8)
            kwargs["n_batches"] = max(1, max_tokens // per_batch)
        chosen, chars = [], 0
        for text in texts:  # enough text for the budget (~3.5 characters per token), not all of it
            chosen.append(text)
            chars += len(text)
            if chars >= 8 * max_tokens:
                break
        out = trainer_loss(model, tokenizer, chosen, **{k: v for k, v in kwargs.items() if k in params})
        out = dict(out) if isinstance(out, dict) else {"loss": float(out)}
        out.setdefault("source", "objectives.validation_loss")
        return out
    out = simple_validation_loss(model, tokenizer, texts, **kwargs)
    out["source"] = "eval.simple_validation_loss"
    return out


# --- results.json ---------------------------------------------------------------------------------

def describe_machine(device: str = "cpu") -> str:
    """One line naming the hardware: the GPU's name, or the CPU's model and core count."""
    if device.startswith("cuda"):
        import torch

        if torch.cuda.is_available():
            return f"{torch.cuda.get_device_name(torch.device(device))}"
    name = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"CPU {name}, {os.cpu_count()} cores"


def update_results_json(path: str | Path, name: str, value, unit: str, machine: str, command: str,
                        *, date: str | None = None) -> dict:
    """Set one figure in the flat results map (docs/results.json): name -> {value, unit, machine,
    date, command}. Other entries are kept; the file is locked while read-modify-written and
    replaced atomically. Returns the whole map."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    entry = {"value": value, "unit": unit, "machine": machine,
             "date": date or datetime.now(timezone.utc).strftime("%Y-%m-%d"), "command": command}
    with open(path.with_name(f".{path.name}.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        data = {}
        if path.is_file() and path.stat().st_size:
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
            except json.JSONDecodeError as e:
                raise EvalError(f"{path}: not valid JSON ({e}); fix or remove it") from None
            if not isinstance(data, dict):
                raise EvalError(f"{path}: expected a JSON object mapping names to figures")
        data[name] = entry
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        os.replace(tmp, path)
    return data
