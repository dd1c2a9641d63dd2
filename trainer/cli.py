"""`dllm-ls train`: corpus -> tokenizer -> tokenised data -> training -> exported checkpoint.

Each stage is skipped when its output exists, so a run continues across sessions:

    OUT/corpus/{train,val}.jsonl, corpus_stats.json     trainer.corpus.build_corpus
    OUT/tokenizer.json                                   trainer.tokenizer_train (or --tokenizer)
    OUT/data/                                            trainer.data.tokenize_corpus
    OUT/diffusion/ or OUT/ar/                            trainer.train.train (resumes from its checkpoints)
        export/ (and export_mask/), metrics.jsonl, loss.png, summary.json

Many GPUs: prepare once (`--prepare-only`), then `torchrun --nproc_per_node N $(which dllm-ls) train ...`
with the same OUT; under torchrun only rank 0 prepares, the others wait.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sysconfig
import time
from pathlib import Path

from ..errors import DllmError

# trainer presets (dim, n_head, n_layer); n_layer None = as many layers as fit `--max-mb` in the export dtype
PRESETS = {
    "smoke": dict(dim=64, n_head=2, n_layer=2),
    "fit32": dict(dim=384, n_head=6, n_layer=None),  # ~16M params, 64-wide heads
    "fit32-wide": dict(dim=512, n_head=8, n_layer=None),  # fewer, wider layers
}
SMOKE_PACKAGES = ("json", "http", "urllib", "wsgiref", "concurrent")


class TrainCliError(DllmError):
    pass


def add_arguments(p: argparse.ArgumentParser):
    g = p.add_argument_group("pipeline")
    g.add_argument("--out", required=True, help="run directory (corpus, tokenizer, data, runs live here)")
    g.add_argument("--roots", nargs="+", help="source roots for the corpus (default: stdlib + site-packages)")
    g.add_argument("--corpus", help="an existing corpus directory (train.jsonl, val.jsonl) instead of building")
    g.add_argument("--tokenizer", help="reuse this tokenizer.json instead of training one")
    g.add_argument("--vocab-size", type=int, default=8192, help="tokenizer vocabulary when training one")
    g.add_argument("--prepare-only", action="store_true", help="stop after tokenising (then torchrun the training)")
    g.add_argument("--name", help="the run's directory under --out (default: diffusion, or ar with --ar)")
    g.add_argument("--smoke", action="store_true",
                   help="whole pipeline on a tiny stdlib corpus and a tiny model, < 2 min on a CPU")
    m = p.add_argument_group("model")
    m.add_argument("--preset", default="fit32",
                   help=f"model size: {', '.join(PRESETS)} or a ModelConfig preset (tiny, small, base)")
    m.add_argument("--dim", type=int)
    m.add_argument("--n-layer", type=int)
    m.add_argument("--n-head", type=int)
    m.add_argument("--max-mb", type=float, default=32.0, help="size limit (MiB) of the exported weights")
    m.add_argument("--ar", action="store_true", help="train the autoregressive baseline (causal, next token)")
    m.add_argument("--shift", action=argparse.BooleanOptionalAction, default=None,
                   help="diffusion: predict a block's token j at position j-1, as an AR model does "
                        "(default: on when --init is an AR export, else the export's, off from scratch)")
    s = p.add_argument_group("post-training (stages 3 and 4, trainer/post.py)")
    s.add_argument("--stage", choices=("distill", "onpolicy"),
                   help="post-train --init: constrained-order distillation or on-policy step reduction")
    s.add_argument("--init", metavar="DIR",
                   help="start from this export's weights: with --stage, the model to post-train (default: the "
                        "shipped model); without, pre-training continues it (fresh optimizer and schedule)")
    s.add_argument("--threshold", type=float, default=0.9, help="the decoder's commit threshold (onpolicy)")
    s.add_argument("--rollout-fallback", choices=("leftmost", "confident"), default="leftmost",
                   help="the rollouts' commit when nothing passes the threshold (the sampler's block mode: leftmost)")
    s.add_argument("--rollout-revise", type=float, default=0.5, metavar="R",
                   help="the rollouts' revision of committed tokens (the sampler's block mode: 0.5; 0: off)")
    s.add_argument("--data-weight", type=float, default=0.5, help="weight of the data's mask-stage ELBO")
    s.add_argument("--updates-per-rollout", type=int, default=2)
    s.add_argument("--targets", choices=("teacher", "data"),
                   help="distill: train towards a frozen copy of --init's chosen trajectories (teacher, the default) "
                        "or towards the data along the current model's on-track states (data; onpolicy's only)")
    s.add_argument("--horizon", type=int, default=0, metavar="H",
                   help="a state's loss covers only the positions its trajectory commits within H steps (0: all)")
    s.add_argument("--teacher-kl", type=float, default=0.0, metavar="W",
                   help="distill with a horizon: weight of KL(teacher || student) at the masked positions beyond it")
    s.add_argument("--distill-rules", metavar="T:TEMP,...",
                   help="distill: the decoding rules sampled per batch, threshold:temperature pairs "
                        "(default 0.9:0,0.7:0,0.5:0,0.9:0.7)")
    s.add_argument("--fim-only", action="store_true", help="roll out the FIM middles only (what an editor asks for)")
    t = p.add_argument_group("training")
    t.add_argument("--max-steps", type=int, help="total optimizer steps (default 2000; an upper bound with --max-minutes)")
    t.add_argument("--max-minutes", type=float, help="time budget: total steps from a timed warm-up, 80/20 split kept")
    t.add_argument("--stop-at-step", type=int, help="end this session after this step; rerun to resume")
    t.add_argument("--batch-size", type=int, default=32, help="sequences per GPU per micro-batch")
    t.add_argument("--grad-accum", type=int, default=1)
    t.add_argument("--seq-len", type=int, default=1024)
    t.add_argument("--lr", type=float, default=2e-3)
    t.add_argument("--warmup", type=int, default=200)
    t.add_argument("--schedule", choices=("cosine", "wsd"), default="cosine")
    t.add_argument("--weight-decay", type=float, default=0.1)
    t.add_argument("--edit-frac", type=float, default=0.2, help="share of steps in the edit stage")
    t.add_argument("--p-fim", type=float, default=0.7)
    t.add_argument("--eval-every", type=int, default=250)
    t.add_argument("--eval-batches", type=int, default=8)
    t.add_argument("--ckpt-every", type=int, default=1000)
    t.add_argument("--log-every", type=int, default=10)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--no-compile", action="store_true", help="CUDA: no torch.compile / FlexAttention (SDPA)")
    t.add_argument("--workers", type=int, default=-1, help="data-loader processes per GPU (-1: auto)")
    t.add_argument("--peak-flops", type=float, default=989e12, help="per-device peak for MFU (H100 bf16 dense)")
    t.add_argument("--export-dtype", choices=("bf16", "fp16", "fp32", "int8"), default=None,
                   help="int8: each matrix as int8 with per-row scales (half of bf16's bytes), norms in bf16 "
                        "(default: --init's, else bf16)")
    t.add_argument("--device", default="auto")
    t.add_argument("--threads", type=int, default=0, help="CPU threads for torch (0: torch's default; --smoke: 1)")
    t.add_argument("--no-progress", action="store_true")


def smoke_defaults(args):
    """A tiny corpus (a few stdlib packages), vocabulary, model and run; explicit flags still win."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    if not args.roots and not args.corpus:
        args.roots = [str(stdlib / n) for n in SMOKE_PACKAGES if (stdlib / n).is_dir()]
    if args.vocab_size == 8192:
        args.vocab_size = 1024
    if args.preset == "fit32":
        args.preset = "smoke"
    if args.seq_len == 1024:
        args.seq_len = 128
    if args.batch_size == 32:
        args.batch_size = 8
    if args.max_steps is None and args.max_minutes is None:
        args.max_steps = 100
    if args.warmup == 200:
        args.warmup = 10
    if args.eval_every == 250:
        args.eval_every = 30
    if args.eval_batches == 8:
        args.eval_batches = 2
    if args.log_every == 10:
        args.log_every = 5
    if args.threads == 0:
        args.threads = 1  # a tiny model gains nothing from more, and spinning threads crawl on a busy CPU


def model_config(args, vocab_size: int):
    """The model of --preset/--dim/--n-layer/--n-head; n_layer None: as many layers as fit --max-mb
    in the export dtype (an int8 export holds about twice the parameters of a bf16 one)."""
    from ..diffusion_core.checkpoint import EXPORT_DTYPES
    from ..diffusion_core.model import ModelConfig

    bytes_per_param = EXPORT_DTYPES[args.export_dtype or "bf16"].itemsize
    V = 64 * -(-vocab_size // 64)  # embedding rows rounded up (the sampler bans the padding rows)
    common = dict(vocab_size=V, max_seq_len=args.seq_len, causal=args.ar, shift=bool(args.shift) and not args.ar)
    if args.preset in PRESETS:
        spec = dict(PRESETS[args.preset])
    elif args.preset in ModelConfig.PRESETS:
        spec = {k: v for k, v in ModelConfig.PRESETS[args.preset].items() if k in ("dim", "n_head", "n_layer")}
    else:
        raise TrainCliError(f"unknown preset {args.preset!r}; known: {', '.join([*PRESETS, *ModelConfig.PRESETS])}")
    for k in ("dim", "n_head", "n_layer"):
        if getattr(args, k) is not None:
            spec[k] = getattr(args, k)
    if spec["n_layer"] is None:
        spec["n_layer"] = fit_layers(spec["dim"], spec["n_head"], V, args.max_mb, bytes_per_param)
    cfg = ModelConfig(**spec, **common)
    size = cfg.n_params() * bytes_per_param
    if size > args.max_mb * 2**20:
        raise TrainCliError(f"the model has {cfg.n_params() / 1e6:.1f}M parameters = {size / 2**20:.1f} MiB, "
                            f"over --max-mb {args.max_mb}; pick a smaller --preset/--dim/--n-layer")
    return cfg


def fit_layers(dim: int, n_head: int, vocab_size: int, max_mb: float, bytes_per_param: int) -> int:
    """The most layers of width dim whose weights (tied embedding included) fit max_mb MiB."""
    from ..diffusion_core.model import ModelConfig

    budget = max_mb * 2**20 - 64 * 1024  # the safetensors header and a margin
    n = 0
    while ModelConfig(vocab_size=vocab_size, dim=dim, n_head=n_head, n_layer=n + 1).n_params() * bytes_per_param <= budget:
        n += 1
    if n == 0:
        raise TrainCliError(f"not even one layer of width {dim} fits {max_mb} MiB with {vocab_size} tokens")
    return n


def prepare(args, log=print) -> tuple[Path, Path]:
    """Corpus, tokenizer, tokenised data (each skipped when done); returns (tokenizer.json, data dir)."""
    from .data import tokenize_corpus

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    corpus = Path(args.corpus) if args.corpus else out / "corpus"
    if not args.corpus and not (corpus / "corpus_stats.json").is_file():
        from .corpus import build_corpus

        t0 = time.perf_counter()
        stats = build_corpus([Path(r) for r in args.roots] if args.roots else None, corpus,
                             progress=not args.no_progress)
        log(f"{stats.summary()} ({time.perf_counter() - t0:.1f} s)")
    for s in ("train", "val"):
        if not (corpus / f"{s}.jsonl").is_file():
            raise TrainCliError(f"{corpus / f'{s}.jsonl'}: missing; not a corpus directory")
    tok_path = Path(args.tokenizer) if args.tokenizer else out / "tokenizer.json"
    if not tok_path.is_file():
        if args.tokenizer:
            raise TrainCliError(f"{tok_path}: tokenizer not found")
        from .tokenizer_train import train_corpus_tokenizer

        t0 = time.perf_counter()
        train_corpus_tokenizer(corpus, tok_path, vocab_size=args.vocab_size, count=False)
        log(f"tokenizer: {args.vocab_size} tokens -> {tok_path} ({time.perf_counter() - t0:.1f} s)")
    data = out / "data"
    t0 = time.perf_counter()
    metas = tokenize_corpus(corpus, tok_path, data, progress=not args.no_progress)
    log(f"data: train {metas['train']['n_docs']} docs {metas['train']['n_tokens']:,} tokens, "
        f"val {metas['val']['n_docs']} docs {metas['val']['n_tokens']:,} tokens ({time.perf_counter() - t0:.1f} s)")
    _record_tokens(corpus, tok_path, metas)
    return tok_path, data


def _record_tokens(corpus: Path, tok_path: Path, metas: dict):
    try:
        from .corpus import CorpusStats, write_stats

        spath = corpus / "corpus_stats.json"
        if spath.is_file():
            stats = CorpusStats.load(spath)
            if stats.train_tokens != metas["train"]["n_tokens"]:
                stats.train_tokens, stats.val_tokens = metas["train"]["n_tokens"], metas["val"]["n_tokens"]
                stats.tokenizer = str(tok_path)
                write_stats(stats, corpus)
    except (ImportError, OSError, ValueError):
        pass  # the counts are also in data/*.meta.json


def _dist_init():
    """Under torchrun: one process group for the whole command (rank 0 prepares, others wait)."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return None
    import datetime

    import torch
    import torch.distributed as dist

    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo",
                            timeout=datetime.timedelta(hours=2))
    return dist


def run(args) -> int:
    if args.smoke:
        smoke_defaults(args)
    if args.max_steps is None and args.max_minutes is None:
        args.max_steps = 2000
    if args.stage or args.init:  # a run from an export (the shipped model for --stage without --init)
        from ..diffusion_core.checkpoint import resolve_checkpoint

        init = resolve_checkpoint(args.init)
        args.tokenizer = args.tokenizer or str(init / "tokenizer.json")  # keeps its tokenizer
        args.export_dtype = args.export_dtype or _saved_export_dtype(init)  # and its export dtype
    args.export_dtype = args.export_dtype or "bf16"
    dist = _dist_init()
    try:
        rc = _run(args, dist)
        if dist is not None:
            # the ranks leave together, after the DDP wrappers that hold the group are collected:
            # rank 1 tearing its group down while rank 0 still exported aborted one CI run. Not
            # after an error: the others may be inside another collective (torchrun ends them)
            import gc

            gc.collect()
            dist.barrier()
        return rc
    finally:
        # every rank ends its group before it exits: a gloo group left alive aborts the process at
        # exit ("terminate called without an active exception")
        if dist is not None and dist.is_initialized():
            dist.destroy_process_group()


def _saved_export_dtype(export_dir) -> str | None:
    """The export dtype an export records in its config's trainer block (None: it does not say):
    an int8 run continued or adapted exports int8 again."""
    from ..diffusion_core.checkpoint import EXPORT_DTYPES, load_config

    trainer = load_config(export_dir)[1].get("trainer")
    dtype = trainer.get("dtype") if isinstance(trainer, dict) else None
    return dtype if dtype in EXPORT_DTYPES else None


def _run(args, dist) -> int:
    rank = int(os.environ.get("RANK", "0"))
    t_start = time.perf_counter()
    log = print if rank == 0 else (lambda *a, **k: None)
    if rank == 0:
        tok_path, data = prepare(args, log)
    if dist is not None:
        dist.barrier()
        if rank != 0:
            tok_path = Path(args.tokenizer) if args.tokenizer else Path(args.out) / "tokenizer.json"
            data = Path(args.out) / "data"
    if args.prepare_only:
        return 0

    from ..diffusion_core.tokenizer import Tokenizer
    from .objectives import ObjectiveConfig
    from .data import SequenceConfig
    from .train import TrainConfig, train

    tok = Tokenizer.from_file(tok_path)
    if args.stage:
        return _post(args, tok_path, data, log, rank, t_start)
    init = ""
    if args.init:  # the model's shape is the export's
        from ..diffusion_core.checkpoint import load_config, resolve_checkpoint

        init = str(resolve_checkpoint(args.init))
        mcfg, _ = load_config(init)
        shift = mcfg.shift if args.shift is None else args.shift
        if mcfg.causal != args.ar:  # an AR export adapted to diffusion (Dream, Fast-dLLM v2), or back
            log(f"{init} is {'an AR' if mcfg.causal else 'a diffusion'} model: its weights start a "
                f"{'AR' if args.ar else 'diffusion'} run")
            shift = mcfg.causal if args.shift is None else args.shift
        mcfg = dataclasses.replace(mcfg, causal=args.ar, shift=shift and not args.ar)
    else:
        mcfg = model_config(args, tok.vocab_size)
    run_dir = Path(args.out) / (args.name or ("ar" if args.ar else "diffusion"))
    log(f"model: {mcfg.n_params() / 1e6:.2f}M parameters (dim {mcfg.dim}, {mcfg.n_layer} layers, "
        f"{mcfg.n_head} heads, vocab {mcfg.vocab_size}, seq {args.seq_len}) -> {run_dir}")
    cfg = TrainConfig(
        data_dir=str(data), tokenizer=str(tok_path), out_dir=str(run_dir), model=mcfg, ar=args.ar,
        seq_len=args.seq_len, batch_size=args.batch_size, grad_accum=args.grad_accum, max_steps=args.max_steps,
        max_minutes=args.max_minutes, stop_at_step=args.stop_at_step, lr=args.lr, warmup_steps=args.warmup,
        schedule=args.schedule, weight_decay=args.weight_decay, edit_frac=args.edit_frac,
        objective=ObjectiveConfig(), data=SequenceConfig(seq_len=args.seq_len, p_fim=args.p_fim),
        eval_every=args.eval_every, eval_batches=args.eval_batches, ckpt_every=args.ckpt_every,
        log_every=args.log_every, seed=args.seed, compile=not args.no_compile, peak_flops=args.peak_flops,
        export_dtype=args.export_dtype, workers=args.workers, device=args.device, threads=args.threads,
        progress=not args.no_progress, init=init)
    summary = train(cfg)
    if rank != 0:
        return 0
    log(json.dumps(summary, indent=2))
    if args.smoke:
        import torch

        torch.set_num_threads(args.threads)
        _smoke_decode(Path(summary["export"]), log)
    log(f"done in {time.perf_counter() - t_start:.1f} s")
    return 0


def _post(args, tok_path: Path, data: Path, log, rank: int, t_start: float) -> int:
    """Stage 3 or 4 from --init (an export) into OUT/STAGE; the model's shape comes from --init."""
    from ..diffusion_core.checkpoint import load_config, resolve_checkpoint
    from .data import SequenceConfig
    from .post import PostConfig, post_train

    init = resolve_checkpoint(args.init)
    mcfg, _ = load_config(init)
    cfg = PostConfig(
        stage=args.stage, init=str(init), data_dir=str(data), tokenizer=str(tok_path),
        out_dir=str(Path(args.out) / (args.name or args.stage)), model=mcfg, seq_len=args.seq_len, batch_size=args.batch_size,
        max_steps=args.max_steps, max_minutes=args.max_minutes, stop_at_step=args.stop_at_step,
        lr=args.lr if args.lr != 2e-3 else 3e-4, warmup_steps=args.warmup if args.warmup != 200 else 20,
        schedule=args.schedule, weight_decay=args.weight_decay, threshold=args.threshold,
        fallback=args.rollout_fallback, revise=args.rollout_revise,
        data_weight=args.data_weight, updates_per_rollout=args.updates_per_rollout, fim_only=args.fim_only,
        targets=args.targets or "", horizon=args.horizon, teacher_kl=args.teacher_kl, **({"distill_rules": _rules(args.distill_rules)} if args.distill_rules else {}),
        data=SequenceConfig(seq_len=args.seq_len, p_fim=args.p_fim),
        eval_every=args.eval_every if args.eval_every != 250 else 50, eval_batches=args.eval_batches,
        ckpt_every=args.ckpt_every, log_every=args.log_every if args.log_every != 10 else 5, seed=args.seed,
        compile=not args.no_compile, export_dtype=args.export_dtype, device=args.device, threads=args.threads,
        progress=not args.no_progress)
    log(f"post-training ({args.stage}) from {init} -> {cfg.out_dir}")
    summary = post_train(cfg)
    if rank == 0:
        log(json.dumps(summary, indent=2))
        log(f"done in {time.perf_counter() - t_start:.1f} s")
    return 0


def _rules(text: str) -> tuple[tuple[float, float], ...]:
    """"0.9:0,0.7:0" -> ((0.9, 0.0), (0.7, 0.0))."""
    try:
        rules = tuple((float(t), float(temp)) for t, temp in (r.split(":") for r in text.split(",")))
    except ValueError:
        raise TrainCliError(f"--distill-rules: threshold:temperature pairs separated by commas, not {text!r}") from None
    if not all(0 < t <= 1 and temp >= 0 for t, temp in rules):
        raise TrainCliError(f"--distill-rules: thresholds in (0, 1], temperatures >= 0: {text!r}")
    return rules


def _smoke_decode(export_dir: Path, log):
    """Load the export as the core would and complete one line with the sampler."""
    from ..diffusion_core.checkpoint import load_checkpoint
    from ..diffusion_core.sampler import Sampler, SamplerConfig

    model, tok = load_checkpoint(export_dir)
    s = Sampler(model, tok, SamplerConfig(block_size=8, max_tokens=16))
    c = s.complete("import json\n\n\ndef load(path):\n    with open(path) as f:\n", "\n", mode="line")
    log(f"smoke completion ({c.trace.steps} steps, {c.trace.ms:.0f} ms, stop {c.stop}): {c.text!r}")
