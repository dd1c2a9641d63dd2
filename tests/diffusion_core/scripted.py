"""A stand-in model whose predictions are a fixed script, to test the sampler's control flow.

It has the interface the sampler uses (`cfg`, parameters, `step`, `extend`) and predicts, at the
k-th generated position, script[k] with confidence conf[k]; positions past the script predict eos.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from dllm_ls.diffusion_core.model import ModelConfig


class ScriptedModel(nn.Module):
    def __init__(self, tokenizer, script: list[int], conf: list[float] | None = None, causal: bool = False):
        super().__init__()
        self.cfg = ModelConfig(vocab_size=tokenizer.vocab_size, n_layer=1, n_head=1, dim=8,
                               max_seq_len=4096, causal=causal)
        self.dummy = nn.Parameter(torch.zeros(1))
        self.script, self.eos = list(script), tokenizer.eos_id
        self.conf = list(conf) if conf is not None else [0.99] * len(script)
        self.prompt_len = None
        self.calls = 0

    def _logits(self, positions: list[int]) -> torch.Tensor:
        V = self.cfg.vocab_size
        out = torch.full((len(positions), V), -30.0)
        for row, k in enumerate(positions):
            tok = self.script[k] if 0 <= k < len(self.script) else self.eos
            c = self.conf[k] if 0 <= k < len(self.conf) else 0.99
            # logit gap giving probability c to `tok` (spread the rest over a second token)
            out[row, tok] = 0.0
            other = (tok + 7) % V
            out[row, other] = float(torch.log(torch.tensor((1 - c) / c)))
        return out

    def step(self, clean, block, cache):
        self.calls += 1
        if self.prompt_len is None:
            self.prompt_len = cache.length + clean.shape[1]
        cache.advance(clean.shape[1])
        start = cache.length - self.prompt_len  # generated tokens already clean
        return self._logits(list(range(start, start + block.shape[1])))[None]

    def extend(self, clean, cache):
        self.calls += 1
        if self.prompt_len is None:
            self.prompt_len = cache.length + clean.shape[1]
        cache.advance(clean.shape[1])
        return self._logits([cache.length - self.prompt_len])
