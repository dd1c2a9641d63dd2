"""Tokenised training data and the sampler of training sequences.

On disk (one data directory, per split `train` / `val`):

    {split}.tokens.bin        all documents' token ids, concatenated (uint16, or uint32 if V > 65536)
    {split}.docs.npy          int64 (n_docs + 1,) token offsets: doc d is tokens[docs[d]:docs[d+1]]
    {split}.text.bin          the documents' UTF-8 text, concatenated (FIM examples are cut in text)
    {split}.text_offsets.npy  int64 (n_docs + 1,) byte offsets into text.bin
    {split}.meta.json         counts, dtype, sha256 of the tokenizer; written last (= the split is done)
    unigram.npy               float64 (V,) token frequencies of train (edit corruption draws from it)

A training sequence is exactly L tokens: segments packed one after another, each from a document
drawn with probability proportional to its length, then `<|pad|>` (no loss) when fewer than
`min_segment` positions are left. A segment is, with probability p_fim, a FIM example in the
prompt order of the design,

    <|fim_suffix|> S <|fim_prefix|> P <|fim_middle|> M <|eos|>

where P, M, S are tokenised exactly as `prompt.build_prompt` tokenises an editor's prefix and
suffix: each on its own. With a line-aligned tokenizer (tokenizer_train.py's code BPE: every line
starts on a token boundary) that equals slicing the stored tokens at line boundaries, so whole-line
examples cost no tokenisation and a cursor inside a line re-tokenises only the cut lines; with
other tokenizers (GPT-2's regex glues a newline to the next indentation) the parts are cut in
text and tokenised separately. M is one non-blank line (with its indentation and newline: Q1), a few lines (Q2), or
a span of characters starting mid-line; P keeps its tail and S its head, as the prompt window does.
Otherwise the segment is plain document text (whole-document tokenisation), with `<|eos|>` where
the document ends. Every sequence is a pure function of (seed, step, rank, micro-batch): resuming at
a step replays the same data without any saved sampler state. `StepStream` feeds the training loop
(in DataLoader worker processes on GPU machines) with the model inputs of each step.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..diffusion_core.tokenizer import Tokenizer
from ..errors import DllmError
import torch

from .objectives import SpecialIds, TokenDraw, ar_batch, diffusion_batch


class DataError(DllmError):
    pass


def file_sha256(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def iter_jsonl_texts(path: str | Path):
    """The "text" field of each line of a corpus jsonl (see trainer/corpus.py)."""
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if line.strip():
                try:
                    yield json.loads(line)["text"]
                except (ValueError, KeyError, TypeError) as e:
                    raise DataError(f"{path}:{n}: not a corpus line with a 'text' field ({e})") from None


def _utf8(text: str) -> bytes | None:
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates (undecodable bytes in the source file)
        return None


def tokenize_split(texts, tokenizer: Tokenizer, out_dir: str | Path, split: str, *,
                   chunk_docs: int = 512, tokenizer_sha: str = "", progress: bool = True) -> dict:
    """Tokenise texts into the flat files of one split; returns its meta.

    `Tokenizer.encode_batch` runs on all cores (Rust threads) over chunks of documents, so memory
    stays bounded by one chunk. Empty documents and text that is not valid Unicode are skipped.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    V = tokenizer.vocab_size
    dtype = np.uint16 if V <= 65536 else np.uint32
    names = {k: out / f"{split}.{k}" for k in ("tokens.bin", "docs.npy", "text.bin", "text_offsets.npy")}
    tmp = {k: p.with_name(p.name + ".tmp") for k, p in names.items()}
    docs, toffs = [0], [0]
    counts = np.zeros(V, dtype=np.int64)
    skipped = 0
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(desc=f"tokenise {split}", unit="doc", leave=False)

    def flush(batch_texts, batch_bytes, ftok, ftxt):
        for ids, raw in zip(tokenizer.encode_batch(batch_texts), batch_bytes):
            a = np.asarray(ids, dtype=dtype)
            ftok.write(a.tobytes())
            ftxt.write(raw)
            docs.append(docs[-1] + len(a))
            toffs.append(toffs[-1] + len(raw))
            counts[:] += np.bincount(a, minlength=V)[:V]
        if bar is not None:
            bar.update(len(batch_texts))

    with open(tmp["tokens.bin"], "wb") as ftok, open(tmp["text.bin"], "wb") as ftxt:
        chunk, raws = [], []
        for text in texts:
            raw = _utf8(text) if text else None
            if not raw:
                skipped += 1
                continue
            chunk.append(text)
            raws.append(raw)
            if len(chunk) >= chunk_docs:
                flush(chunk, raws, ftok, ftxt)
                chunk, raws = [], []
        if chunk:
            flush(chunk, raws, ftok, ftxt)
    if bar is not None:
        bar.close()
    if len(docs) == 1:
        raise DataError(f"no usable documents for split {split!r} (all empty or invalid)")
    with open(tmp["docs.npy"], "wb") as f:
        np.save(f, np.asarray(docs, dtype=np.int64))
    with open(tmp["text_offsets.npy"], "wb") as f:
        np.save(f, np.asarray(toffs, dtype=np.int64))
    for k in names:
        os.replace(tmp[k], names[k])
    meta = {"split": split, "n_docs": len(docs) - 1, "n_tokens": int(docs[-1]), "n_bytes": int(toffs[-1]),
            "dtype": np.dtype(dtype).name, "vocab_size": V, "skipped_docs": skipped,
            "tokenizer_sha256": tokenizer_sha}
    if split == "train":
        np.save(out / "unigram.npy", counts / max(1, counts.sum()))
    tmpm = out / f".{split}.meta.json.tmp"
    tmpm.write_text(json.dumps(meta, indent=2))
    os.replace(tmpm, out / f"{split}.meta.json")
    return meta


def tokenize_corpus(corpus_dir: str | Path, tokenizer_path: str | Path, out_dir: str | Path,
                    progress: bool = True) -> dict:
    """Tokenise corpus_dir/{train,val}.jsonl into out_dir; a split already done with this tokenizer is kept."""
    tok = Tokenizer.from_file(tokenizer_path)
    sha = file_sha256(tokenizer_path)
    metas = {}
    for split in ("train", "val"):
        src = Path(corpus_dir) / f"{split}.jsonl"
        mpath = Path(out_dir) / f"{split}.meta.json"
        if mpath.is_file():
            meta = json.loads(mpath.read_text())
            if meta.get("tokenizer_sha256") == sha:
                metas[split] = meta
                continue
        if not src.is_file():
            raise DataError(f"{src}: missing; build the corpus first (dllm-ls train builds it)")
        metas[split] = tokenize_split(iter_jsonl_texts(src), tok, out_dir, split, tokenizer_sha=sha,
                                      progress=progress)
    return metas


class TokenData:
    """One split, memory-mapped (or in memory for `from_texts`)."""

    def __init__(self, tokens, docs, text, text_offsets, vocab_size: int, unigram=None):
        self.tokens, self.docs = tokens, np.asarray(docs, dtype=np.int64)
        self.text, self.text_offsets = text, np.asarray(text_offsets, dtype=np.int64)
        self.vocab_size, self.unigram = vocab_size, unigram
        self.lengths = np.diff(self.docs)
        if len(self.lengths) == 0 or self.docs[-1] == 0:
            raise DataError("the data split holds no tokens")

    @classmethod
    def load(cls, data_dir: str | Path, split: str, tokenizer_path: str | Path | None = None) -> "TokenData":
        d = Path(data_dir)
        mpath = d / f"{split}.meta.json"
        if not mpath.is_file():
            raise DataError(f"{mpath}: missing; tokenise the corpus first (dllm-ls train does it)")
        meta = json.loads(mpath.read_text())
        if tokenizer_path is not None and meta.get("tokenizer_sha256") not in ("", file_sha256(tokenizer_path)):
            raise DataError(f"{d}: tokenised with another tokenizer than {tokenizer_path}; "
                            "delete the data directory to re-tokenise")
        tokens = np.memmap(d / f"{split}.tokens.bin", dtype=meta["dtype"], mode="r")
        text = np.memmap(d / f"{split}.text.bin", dtype=np.uint8, mode="r")
        uni = d / "unigram.npy"
        return cls(tokens, np.load(d / f"{split}.docs.npy"), text, np.load(d / f"{split}.text_offsets.npy"),
                   meta["vocab_size"], np.load(uni) if uni.is_file() else None)

    @classmethod
    def from_texts(cls, tokenizer: Tokenizer, texts: list[str]) -> "TokenData":
        raws = [r for r in (_utf8(t) for t in texts if t) if r]
        ids = tokenizer.encode_batch([r.decode("utf-8") for r in raws])
        docs = np.cumsum([0] + [len(i) for i in ids])
        toffs = np.cumsum([0] + [len(r) for r in raws])
        tokens = np.asarray([t for i in ids for t in i], dtype=np.int64)
        text = np.frombuffer(b"".join(raws), dtype=np.uint8)
        counts = np.bincount(tokens, minlength=tokenizer.vocab_size).astype(np.float64)
        return cls(tokens, docs, text, toffs, tokenizer.vocab_size, counts / max(1.0, counts.sum()))

    @property
    def n_docs(self) -> int:
        return len(self.lengths)

    @property
    def n_tokens(self) -> int:
        return int(self.docs[-1])

    def doc_tokens(self, d: int, start: int = 0, stop: int | None = None) -> np.ndarray:
        a = self.docs[d]
        stop = self.lengths[d] if stop is None else min(stop, self.lengths[d])
        return np.asarray(self.tokens[a + start: a + stop], dtype=np.int64)

    def doc_bytes(self, d: int) -> int:
        return int(self.text_offsets[d + 1] - self.text_offsets[d])

    def doc_text(self, d: int, start: int, stop: int) -> bytes:
        a = self.text_offsets[d]
        return self.text[a + start: a + min(stop, self.doc_bytes(d))].tobytes()

    def token_draw(self, special_ids) -> TokenDraw:
        """Replacement tokens for edit corruption: the unigram distribution without special tokens
        (uniform over the ids above the special ones when the split has no unigram counts)."""
        special = sorted(int(i) for i in special_ids)
        if self.unigram is not None and self.unigram.sum() > 0:
            p = self.unigram.astype(np.float64).copy()
            p[[i for i in special if i < len(p)]] = 0
            if p.sum() > 0:
                return TokenDraw(len(p), p)
        return TokenDraw(self.vocab_size, None, special[-1] + 1 if special else 0)


@dataclass(kw_only=True)
class SequenceConfig:
    seq_len: int = 512
    p_fim: float = 0.7  # probability that a segment is a FIM example
    min_segment: int = 16  # fewer free positions than this are padded
    p_line: float = 0.5  # FIM middle: one non-blank line (Q1)
    p_lines: float = 0.3  # FIM middle: 2..max_lines lines (Q2); otherwise a character span
    max_lines: int = 8
    max_span_chars: int = 160
    max_middle_tokens: int = 192
    suffix_share: tuple[float, float] = (0.1, 0.5)  # share of the context budget given to S when cut
    anchor_max: int = 64  # sequences with no FIM example start blocks at a random anchor < this

    def __post_init__(self):
        if not 0.0 <= self.p_fim <= 1.0:
            raise ValueError("p_fim must be in [0, 1]")
        if self.seq_len < 16:
            raise ValueError("seq_len must be at least 16")


def _char_boundary(raw: bytes, i: int) -> int:
    while i < len(raw) and (raw[i] & 0xC0) == 0x80:  # a UTF-8 continuation byte
        i += 1
    return i


def newline_tokens(tokenizer: Tokenizer) -> np.ndarray:
    """Bool (V,): the token's text contains a newline."""
    V = tokenizer.vocab_size
    return np.asarray(["\n" in tokenizer.hf.decode([i], skip_special_tokens=False) for i in range(V)], dtype=bool)


def is_line_aligned(tokenizer: Tokenizer, texts) -> bool:
    """True when tokenising a text equals tokenising its lines one by one (and every newline ends a
    token): then a document's tokens, cut at a line boundary, are exactly what tokenising the two
    halves separately gives, and FIM examples can be cut from the stored tokens. The code BPE of
    tokenizer_train.py has this property; GPT-2's regex (newline glued to the next indentation) has not."""
    for text in texts:
        lines = text.splitlines(keepends=True)
        if not lines:
            continue
        by_line = [t for ids in tokenizer.encode_batch(lines) for t in ids]
        if tokenizer.encode_batch([text])[0] != by_line:
            return False
    return True


class SequenceSampler:
    """Training sequences of exactly seq_len tokens (see the module docstring)."""

    def __init__(self, data: TokenData, tokenizer: Tokenizer, cfg: SequenceConfig, seed: int = 0):
        self.data, self.tok, self.cfg, self.seed = data, tokenizer, cfg, seed
        self.special = SpecialIds(pad=tokenizer.pad_id, mask=tokenizer.mask_id, eos=tokenizer.eos_id)
        self.cum = data.docs[1:]  # doc d holds the token indices [docs[d], docs[d+1])
        self.has_nl = newline_tokens(tokenizer)
        sample = [data.doc_text(d, 0, 20000).decode("utf-8", errors="ignore")
                  for d in range(0, data.n_docs, max(1, data.n_docs // 16))][:16]
        self.line_aligned = is_line_aligned(tokenizer, sample)
    def rng(self, step: int, rank: int = 0, micro: int = 0, stream: int = 0) -> np.random.Generator:
        return np.random.default_rng([self.seed, step, rank, micro, stream])

    def batch(self, step: int, batch_size: int, rank: int = 0, micro: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """(x0 (B, L) int64, anchor (B,) int64): a pure function of (seed, step, rank, micro)."""
        rng = self.rng(step, rank, micro)
        rows = [self.sequence(rng) for _ in range(batch_size)]
        return np.stack([r[0] for r in rows]), np.asarray([r[1] for r in rows], dtype=np.int64)

    def _pick_doc(self, rng) -> int:
        return int(np.searchsorted(self.cum, rng.integers(self.data.n_tokens), side="right"))

    def sequence(self, rng: np.random.Generator) -> tuple[np.ndarray, int]:
        L, cfg = self.cfg.seq_len, self.cfg
        out = np.full(L, self.special.pad, dtype=np.int64)
        pos, anchor = 0, -1
        while L - pos >= cfg.min_segment:
            S = L - pos
            d = self._pick_doc(rng)
            seg = None
            if S >= 48 and rng.random() < cfg.p_fim:
                seg = self.fim_segment(d, S, rng)
                if seg is not None and anchor < 0:
                    anchor = pos + seg[1]
            if seg is None:
                seg = (self.plain_segment(d, S, rng, first=pos == 0), 0)
            ids = seg[0]
            out[pos: pos + len(ids)] = ids
            pos += len(ids)
        if anchor < 0:
            anchor = int(rng.integers(cfg.anchor_max))
        return out, anchor

    def plain_segment(self, d: int, S: int, rng, first: bool) -> np.ndarray:
        n = int(self.data.lengths[d])
        start = int(rng.integers(max(1, n - S + 2))) if first else 0
        ids = self.data.doc_tokens(d, start, start + S)
        if len(ids) < S:  # the document ends here
            ids = np.append(ids, self.special.eos)
        return ids

    def fim_text(self, d: int, S: int, rng) -> tuple[str, str, str] | None:
        """(prefix, middle, suffix) texts around a random point of document d, or None."""
        cfg = self.cfg
        n = self.data.doc_bytes(d)
        if n < 2:
            return None
        c = int(rng.integers(n))
        r0, r1 = max(0, c - 4 * S), min(n, c + 3 * S + 4 * cfg.max_span_chars)
        raw = self.data.doc_text(d, r0, r1)
        cut = _char_boundary(raw, c - r0)
        before = raw[:cut].decode("utf-8", errors="ignore")
        after = raw[cut:].decode("utf-8", errors="ignore")
        if r0 > 0 and "\n" in before:  # start the window on a line, as the prompt window does
            before = before[before.index("\n") + 1:]
        if r1 < n and "\n" in after:
            after = after[: after.rindex("\n") + 1]
        u = rng.random()
        if u < cfg.p_line + cfg.p_lines:  # whole lines: the cursor at the start of a line
            ls = before.rfind("\n") + 1
            prefix, rest = before[:ls], before[ls:] + after
            lines = rest.splitlines(keepends=True)
            skip = 0
            while skip < len(lines) and not lines[skip].strip():
                skip += 1
            if skip == len(lines):
                return None
            k = 1 if u < cfg.p_line else int(rng.integers(2, cfg.max_lines + 1))
            prefix += "".join(lines[:skip])
            middle = "".join(lines[skip: skip + k])
            suffix = "".join(lines[skip + k:])
        else:  # a character span: the cursor anywhere, mid-line included
            span = int(rng.integers(1, cfg.max_span_chars + 1))
            prefix, middle, suffix = before, after[:span], after[span:]
        if not middle:
            return None
        return prefix, middle, suffix

    def fim_tokens(self, d: int, S: int, rng):
        """(prefix, middle, suffix) token arrays of a FIM example cut from the stored tokens of d.

        Needs a line-aligned tokenizer: whole lines are token slices; a cursor inside a line only
        re-tokenises the pieces of the lines it cuts. Returns None to fall back to fim_text.
        """
        cfg = self.cfg
        toks = self.data.doc_tokens(d)
        a = self.data.text_offsets[d]
        raw = np.asarray(self.data.text[a: a + self.data.doc_bytes(d)])
        nl_t, nl_b = np.flatnonzero(self.has_nl[toks]), np.flatnonzero(raw == 10)
        if len(nl_t) != len(nl_b) or len(raw) < 2:
            return None
        lb, lt = np.concatenate([[0], nl_b + 1]), np.concatenate([[0], nl_t + 1])  # line starts: bytes, tokens
        if lb[-1] < len(raw):
            lb, lt = np.append(lb, len(raw)), np.append(lt, len(toks))
        n_lines = len(lb) - 1
        u = rng.random()
        if u < cfg.p_line + cfg.p_lines:
            i = int(rng.integers(n_lines))
            while i < n_lines and not raw[lb[i]:lb[i + 1]].tobytes().strip():
                i += 1
            if i == n_lines:
                return None
            j = min(n_lines, i + (1 if u < cfg.p_line else int(rng.integers(2, cfg.max_lines + 1))))
            return toks[max(0, lt[i] - S): lt[i]], toks[lt[i]: lt[j]], toks[lt[j]: lt[j] + S]
        c = _char_boundary(raw, int(rng.integers(len(raw))))
        e = _char_boundary(raw, min(len(raw), c + int(rng.integers(1, cfg.max_span_chars + 1))))
        if e <= c:
            return None
        j0 = int(np.searchsorted(lb, c, side="right")) - 1
        j1 = int(np.searchsorted(lb, e, side="right")) - 1  # the line holding e (n_lines at the end)
        end1 = lb[min(j1 + 1, n_lines)]
        try:
            parts = [raw[lb[j0]:c].tobytes().decode(), raw[c:e].tobytes().decode(), raw[e:end1].tobytes().decode()]
        except UnicodeDecodeError:
            return None
        pre_part, mid, suf_part = (np.asarray(x, dtype=np.int64) for x in self.tok.encode_batch(parts))
        nxt = lt[min(j1 + 1, n_lines)]
        pre = np.concatenate([toks[max(0, lt[j0] - S): lt[j0]], pre_part])
        return pre, mid, np.concatenate([suf_part, toks[nxt: nxt + S]])

    def fim_segment(self, d: int, S: int, rng) -> tuple[np.ndarray, int] | None:
        """(tokens, offset of the middle in them) of a FIM example fitting S positions, or None.

        When cut, P keeps its tail starting at a line and S its head ending with a line, as the
        prompt window does.
        """
        cfg = self.cfg
        parts = self.fim_tokens(d, S, rng) if self.line_aligned else None
        if parts is None:
            text = self.fim_text(d, S, rng)
            if text is None:
                return None
            parts = [np.asarray(x, dtype=np.int64) for x in self.tok.encode_batch(list(text))]
        pre, mid, suf = parts
        ctx = S - 4 - len(mid)
        if len(mid) == 0 or len(mid) > cfg.max_middle_tokens or ctx < 8:
            return None
        if len(pre) + len(suf) > ctx:
            ns = min(len(suf), int(ctx * rng.uniform(*cfg.suffix_share)))
            np_ = min(len(pre), ctx - ns)
            ns = min(len(suf), ctx - np_)
            if np_ < len(pre):  # start at a line: after the first newline of the kept tail
                cut = len(pre) - np_
                nl = np.flatnonzero(self.has_nl[pre[cut:]])
                pre = pre[cut + nl[0] + 1:] if len(nl) and nl[0] + 1 < np_ else pre[cut:]
            if ns < len(suf):  # end with a whole line when the head holds one
                nl = np.flatnonzero(self.has_nl[suf[:ns]])
                suf = suf[: nl[-1] + 1] if len(nl) else suf[:ns]
        t = self.tok
        ids = np.concatenate([[t.fim_suffix_id], suf, [t.fim_prefix_id], pre, [t.fim_middle_id], mid, [t.eos_id]])
        return ids.astype(np.int64), len(suf) + len(pre) + 3


# --- the stream of training steps ------------------------------------------------------------


class StepStream(torch.utils.data.IterableDataset):
    """The micro-batches of steps [start, stop) in order; worker w of W makes steps start+w, start+w+W, ..."""

    def __init__(self, sampler: SequenceSampler, cfg, rank: int, start: int, stop: int,
                 edit_start: int | None, draw):
        """cfg: a TrainConfig (objective, grad_accum, batch_size, ar)."""
        super().__init__()
        self.sampler, self.cfg, self.rank = sampler, cfg, rank
        self.start, self.stop, self.edit_start, self.draw = start, stop, edit_start, draw

    def make(self, step: int) -> list[dict]:
        cfg, s = self.cfg, self.sampler
        sizes = cfg.objective.block_sizes
        bs = sizes[int(s.rng(step, 0, 0, 1).integers(len(sizes)))]  # one block size per step, all ranks
        edit = self.edit_start is not None and step >= self.edit_start and not cfg.ar
        micro = []
        for m in range(cfg.grad_accum):
            x0, anchor = s.batch(step, cfg.batch_size, self.rank, m)
            if cfg.ar:
                b = ar_batch(x0, s.special)
            else:
                b = diffusion_batch(x0, anchor, bs, edit=edit, ids=s.special, cfg=cfg.objective,
                                    rng=s.rng(step, self.rank, m, 2), draw=self.draw)
            b["step"], b["edit"] = step, edit
            micro.append(b)
        return micro

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        w, W = (info.id, info.num_workers) if info is not None else (0, 1)
        for step in range(self.start + w, self.stop, W):
            yield self.make(step)


def make_loader(stream: StepStream, workers: int, pin: bool):
    if workers <= 0:
        return iter(stream)
    # The workers are forked after the tokenizer's thread pool has run; a forked child that uses
    # that pool deadlocks. Even an explicit TOKENIZERS_PARALLELISM=true is overridden: with it, the
    # first H100 run hung forever with every worker asleep (reproduced on CPU, see test_train.py).
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    return iter(torch.utils.data.DataLoader(stream, batch_size=None, num_workers=workers, pin_memory=pin,
                                            prefetch_factor=4, persistent_workers=False))
