"""Experiment: a copy prior. At each block-mode step, the text after the contiguous committed
head is drafted from the context (prompt lookup: the longest n-gram ending the head, NMIN..NMAX
tokens, found earlier in the cache's tokens + head; its continuation). Positions chained from
the head's end whose argmax equals the draft and whose confidence >= COPY_T are committed too."""
import os, sys
import torch
import dllm_ls.diffusion_core.sampler as S
T = float(os.environ.get("COPY_T", "0.3"))
NMIN, NMAX, K = int(os.environ.get("NMIN", "2")), int(os.environ.get("NMAX", "4")), int(os.environ.get("K", "16"))
STATS = {"extra": 0, "steps": 0}
orig_conf, orig_commit = S.confidence, S.DecodeState._commit
last = {}

def confidence(logits, kind):
    c, p = orig_conf(logits, kind)
    last["conf"], last["pred"] = c, p
    return c, p

def draft(seq):
    for n in range(min(NMAX, len(seq) - 1), NMIN - 1, -1):
        tail = seq[-n:]
        for s in range(len(seq) - n - 1, -1, -1):  # most recent earlier match
            if seq[s:s + n] == tail:
                return seq[s + n:s + n + K]
    return []

def _commit(self, chosen, pred):
    if self.ctx.mode == "block" and "conf" in last and len(last["conf"]) == self.b:
        conf = last["conf"].tolist()
        p = self.masked.index(True) if True in self.masked else self.b
        d = draft(list(self.cache.tokens) + self.block[:p])
        extra, ch = [], set(chosen)
        for j in range(p, self.b):
            k = j - p
            if k >= len(d):
                break
            if not self.masked[j] or j in ch:
                if pred[j] != d[k] and self.block[j] != d[k]:
                    break
                continue
            if pred[j] == d[k] and conf[j] >= T:
                extra.append(j)
            else:
                break
        STATS["extra"] += len(extra)
        chosen = list(chosen) + extra
    last.clear()
    return orig_commit(self, chosen, pred)

S.confidence, S.DecodeState._commit = confidence, _commit
from dllm_ls.cli import main
rc = main(sys.argv[1:])
print("copy extra commits:", STATS, file=sys.stderr)
sys.exit(rc)
