"""Options shared by the completion subcommands (`complete`, `batch`)."""

from __future__ import annotations

import argparse


def add_model_arguments(p: argparse.ArgumentParser):
    p.add_argument("--checkpoint", metavar="DIR",
                   help="checkpoint directory (config.json, model.safetensors, tokenizer.json); "
                        "default: the model shipped in the package")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (GPU when there is one)")
    p.add_argument("--block-size", type=int, default=32, help="tokens denoised in parallel per block")
    p.add_argument("--threshold", type=float, default=0.9, help="commit positions at least this confident")
    p.add_argument("--rule", choices=["threshold", "factor"], default="threshold", help="commit rule")
    p.add_argument("--factor", type=float, default=1.0, help="factor of the factor rule")
    p.add_argument("--confidence", choices=["maxprob", "margin", "entropy"], default="maxprob")
    p.add_argument("--no-token-healing", dest="token_healing", action="store_false",
                   help="cut the prompt at the cursor (default: heal the word the cursor is in, as the server does)")


def load_sampler(args):
    """(Sampler, SamplerConfig) from the parsed options; CheckpointError names a bad file."""
    import torch

    from .checkpoint import load_checkpoint, resolve_checkpoint
    from .sampler import Sampler, SamplerConfig

    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    model, tok = load_checkpoint(resolve_checkpoint(args.checkpoint), device=device)
    cfg = SamplerConfig(block_size=args.block_size, threshold=args.threshold, rule=args.rule,
                        factor=args.factor, confidence=args.confidence, token_healing=args.token_healing)
    return Sampler(model, tok, cfg), cfg
