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


class JudgeModel(nn.Module):
    """A scripted judge for repair: it "knows" the right block `target` (token ids, eos included)
    and judges any block by aligning it to the target (difflib, masks match nothing):

    * a position aligned to an equal target token predicts that token with probability `conf`;
    * a position in a same-length replacement predicts the corresponding target token (so the
      present token, when wrong, gets a tiny probability);
    * the token right after a gap (a target token missing here) and an extra token (nothing in
      the target) predict the target token at that place with probability `conf`, so they are
      the ones doubted, as a real model doubts the neighbour of a missing token.
    `doubt` maps block positions to a forced probability of the present token (a false alarm).
    """

    def __init__(self, tokenizer, target: list[int], conf: float = 0.99, doubt: dict[int, float] | None = None):
        super().__init__()
        self.cfg = ModelConfig(vocab_size=tokenizer.vocab_size, n_layer=1, n_head=1, dim=8, max_seq_len=4096)
        self.dummy = nn.Parameter(torch.zeros(1))
        self.target, self.conf, self.doubt = list(target), conf, dict(doubt or {})
        self.mask_id = tokenizer.mask_id
        self.calls = 0

    def predictions(self, block: list[int]) -> list[int]:
        import difflib

        T = self.target
        pred = [T[min(k, len(T) - 1)] for k in range(len(block))]
        ops = difflib.SequenceMatcher(None, block, T, autojunk=False).get_opcodes()
        for op, i1, i2, j1, j2 in ops:
            for k in range(i1, i2):
                pred[k] = T[min(j1 + (k - i1), max(j2 - 1, j1), len(T) - 1)]
        for op, i1, i2, j1, j2 in ops:
            if op == "insert" and i1 < len(block):  # a target token is missing before block[i1]
                pred[i1] = T[j1]
        return pred

    def step(self, clean, block, cache):
        self.calls += 1
        cache.advance(clean.shape[1])
        ids = block[0].tolist()
        pred = self.predictions(ids)
        V = self.cfg.vocab_size
        out = torch.full((len(ids), V), -30.0)
        gap = float(torch.log(torch.tensor(self.conf / (1 - self.conf))))
        for k, tok in enumerate(pred):
            out[k, tok] = gap  # probability ~conf for the predicted token
            out[k, (tok + 7) % V] = 0.0
            if k in self.doubt and ids[k] != self.mask_id:  # force the present token's probability
                out[k] = -30.0
                q = self.doubt[k]
                out[k, ids[k]] = float(torch.log(torch.tensor(q / (1 - q))))
                out[k, (ids[k] + 7) % V] = 0.0
        return out[None]


class FileJudge(JudgeModel):
    """A JudgeModel for a whole file: each block is judged against the nearest of `targets` (the
    right text of every block; `for_file` takes them from a right file's blocks).

    With `before` (the blocks of the file before an edit) and `key` (a line only the edited file
    has), the judge reads its context: where `key` is not in the prompt or the block, the file
    is the one before the edit and `before` is right there. So, as a real model does, it finds a
    use of the old name fine before a rename and wrong after it (refactor's baseline)."""

    def __init__(self, tokenizer, targets: list[str], *, before: list[str] | None = None,
                 key: str | None = None, **kw):
        def enc(ts):
            return [tokenizer.encode(t.rstrip("\n")) + [tokenizer.eos_id] for t in ts]
        self.targets, self.before, self.key = enc(targets), enc(before) if before else None, key
        self.tok = tokenizer
        super().__init__(tokenizer, self.targets[0], **kw)

    @classmethod
    def for_file(cls, tokenizer, text: str, before: str | None = None, **kw) -> "FileJudge":
        """Right blocks from `text`; with `before`, its blocks and the first line of `text` that
        differs from it as the key."""
        import difflib

        from dllm_ls.diffusion_core.refactor import python_blocks

        def blocks(t):
            return [t[b.start:b.end] for b in python_blocks(t)]
        if before is None:
            return cls(tokenizer, blocks(text), **kw)
        new, old = text.split("\n"), before.split("\n")
        op = next(o for o in difflib.SequenceMatcher(None, old, new, autojunk=False).get_opcodes() if o[0] != "equal")
        return cls(tokenizer, blocks(text), before=blocks(before), key=new[op[3]].strip(), **kw)

    def step(self, clean, block, cache):
        import difflib

        world = self.targets
        if self.before is not None:
            ids = list(cache.tokens) + clean[0].tolist() + block[0].tolist()
            text = self.tok.decode([t for t in ids if t not in self.tok.special_ids])
            if self.key not in text:
                world = self.before
        ids = [t for t in block[0].tolist() if t != self.mask_id]
        self.target = max(world, key=lambda t: difflib.SequenceMatcher(None, ids, t, autojunk=False).ratio())
        return super().step(clean, block, cache)
