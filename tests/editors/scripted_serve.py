"""`dllm-ls serve` whose model writes a known document: the editor tests' predictable ghost text.

    python -m tests.editors.scripted_serve --document FILE [--judge-file RIGHT [--judge-before OLD]] -- [serve args]

This is the real `dllm-ls serve` (the console script's `main`, the real InProcessCore, sampler,
engine, post-processing and protocol); the only test-only part is the model: the checkpoint loads
as usual, then its model is replaced by `DocumentModel`, which continues the prompt's prefix along
FILE's text (its eos when the prefix is not a prefix of FILE). It is stateless (it reads the prompt
from the KV cache's token ids), so cache reuse across keystrokes behaves as with a real model.
With --judge-file RIGHT the model is tests/diffusion_core/scripted.py's FileJudge instead, which
takes RIGHT's blocks for the right ones (OLD's where the edit is not in the context): the code
actions' edits (repair, refactor) are known.
"""

from __future__ import annotations

import sys

import torch
import torch.nn as nn


class DocumentModel(nn.Module):
    """Predicts, at the k-th position of a block, the k-th token of the rest of `document` after
    the clean text before the block."""

    def __init__(self, tokenizer, document: str, cfg):
        super().__init__()
        from dllm_ls.diffusion_core.model import ModelConfig

        self.cfg = ModelConfig(vocab_size=cfg.vocab_size, n_layer=1, n_head=1, dim=8,
                               max_seq_len=cfg.max_seq_len, causal=False)
        self.dummy = nn.Parameter(torch.zeros(1))
        self.tok, self.document = tokenizer, document
        self._targets: dict[tuple, list[int]] = {}

    def _target(self, clean: tuple) -> list[int]:
        """The rest of the document after the clean text (the prefix, then what the middle holds:
        a healed prompt's line head, the finished blocks), as tokens, then eos."""
        if clean not in self._targets:
            t = self.tok
            p = len(clean) - 1 - clean[::-1].index(t.fim_prefix_id) if t.fim_prefix_id in clean else -1
            mid = clean.index(t.fim_middle_id, p + 1)
            text = t.decode(list(clean[p + 1:mid])) + t.decode(list(clean[mid + 1:])) if p >= 0 else ""
            rest = self.document[len(text):] if self.document.startswith(text) else ""
            self._targets[clean] = (t.encode(rest) if rest else []) + [t.eos_id]
        return self._targets[clean]

    def step(self, clean, block, cache):
        ids = list(cache.tokens) + clean[0].tolist()
        cache.advance(clean.shape[1])
        target = self._target(tuple(ids))  # block position k writes the k-th token of the rest
        out = torch.full((block.shape[1], self.cfg.vocab_size), -30.0)
        for k in range(block.shape[1]):
            out[k, target[k] if k < len(target) else self.tok.eos_id] = 0.0
        return out[None]


def main(argv: list[str]) -> int:
    doc_path = argv[argv.index("--document") + 1]
    ours = argv[:argv.index("--")] if "--" in argv else argv
    judge = ours[ours.index("--judge-file") + 1] if "--judge-file" in ours else None
    before = ours[ours.index("--judge-before") + 1] if "--judge-before" in ours else None
    serve_args = argv[argv.index("--") + 1:] if "--" in argv else []
    with open(doc_path, encoding="utf-8") as f:
        document = f.read()

    from dllm_ls import cli
    from dllm_ls.diffusion_core import checkpoint

    real_load = checkpoint.load_checkpoint

    def load_checkpoint(path, *args, **kwargs):
        model, tok = real_load(path, *args, **kwargs)
        if judge is not None:
            from tests.diffusion_core.scripted import FileJudge

            old = open(before, encoding="utf-8").read() if before else None
            with open(judge, encoding="utf-8") as f:
                return FileJudge.for_file(tok, f.read(), old), tok
        return DocumentModel(tok, document, model.cfg), tok

    checkpoint.load_checkpoint = load_checkpoint
    return cli.main(["serve", *serve_args])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
