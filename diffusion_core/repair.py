"""Repair: the model judges every token of a function and rewrites the ones it doubts.

The function is put in the denoising block after the clean prompt made of the rest of the file,
in the design's order `<|fim_suffix|> SUFFIX <|fim_prefix|> PREFIX <|fim_middle|> FUNCTION <|eos|>`,
with nothing masked. A Python function's signature and docstring (`docstring_range`) are context,
not suspects: they join the clean prompt (judged never, cached once) and the block is the code
after them. The model predicts every position (no carry-over), so one forward gives
log p(x_i | everything) for each present token x_i, and a whole distribution there: the judge
pass. Then, for a few rounds:

1. suspects: the positions whose present token has probability < `suspect_prob`, the least
   likely first, at most `max_spans` (the eos after the function is judged too);
2. candidates read off the judge pass at each suspect (`direct`): the judge's top
   `alternatives` tokens substituted there, the token deleted, the top token inserted before it,
   the token before it deleted (an extra token makes its neighbour unlikely); at a doubted eos the
   top token appended; a run of adjacent suspects deleted or replaced by the judge's tokens.
   (`masked_alternatives`, off by default: also the top tokens of one more pass with the
   suspects masked; they held the original token more often, but scored too low to be kept, and
   the tune split's fix rate did not rise.)
   Optionally (`remask`, which refactor's propagation turns on) each suspect span is also
   remasked with (span length + `length_deltas`) masks and re-denoised;
3. each candidate (re-tokenised canonically) must parse (`ast.parse` of the whole function,
   dedented; other languages are not checked) and is judged by a full pass over the edited
   function. Score `sum`: the sum of the log-probs of all its tokens and the eos, plus
   `length_cost` nats per token (so deleting a token is not free for dropping a negative term,
   nor inserting one a loss for adding one); the best candidate is kept when it raises the score
   by at least `margin` nats. `margin` and `length_cost` were calibrated on Q3's tune split (odd
   HumanEval problems, injector seed 1; the reported test split is the even problems, seed 0):
   the margin sits above the best candidate of every correct function of the tune split.

Why not the old search alone (remask + re-denoise, keep if the MEAN log-prob rises by 0.05): on
the shipped model the mean over a 300-token function moves by ~0.01 when the bug is undone, so
0.05 (15 nats of sum) rejected every right fix, and the re-denoised spans rarely held the original
token; the prose of the docstring drew most suspects.

AR baseline (`causal=True`): the same search; the judge's log-probs are next-token log-probs
given the prompt and the tokens before, and its "top token" at a position is its next-token
prediction there.

Refactor's propagation passes a `baseline` (the document before the user's edit): the function is
judged there as well, and only tokens whose log-prob fell by `min_drop` are suspects. When the
function and its prompt are the same token for token in both (the edit is outside the model's
window), no token can have fallen: it comes back unchanged without a model call.

The result is the minimal set of text edits between the old and new function (difflib on
characters), each with a confidence: the lowest probability, under the final judge pass, of the
tokens that carry the edit. A function with no suspect comes back unchanged.

Finding the function is the caller's job (the span is an input): the language server finds it
with tree-sitter (`lsp_server/syntax.py`); `python_function_span` here is an `ast` fallback for
the command line and the benchmark, so diffusion_core needs no tree-sitter.
"""

from __future__ import annotations

import difflib
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import torch

from .code_spans import (RepairError, TextEdit, docstring_range, line_col, offset_of, python_function_span,
                         python_parses)
from .kv_cache import KVCache
from .prompt import PromptWindow, build_prompt
from .sampler import CompletionCancelled
from .tokenizer import Tokenizer


@dataclass(kw_only=True)
class RepairConfig:
    suspect_prob: float = 0.5  # a present token below this probability is a suspect
    # margin and length_cost were calibrated on Q3's tune split (odd HumanEval problems, injector seed 1)
    margin: float = 4.0  # a candidate must raise the score by this much (nats; see `score`); the model's own:
    # 6 for the first shipped model, 12 for its continued pre-training (session 5), 4 for its stage-3
    # distillation (docs/results.md, session 13)
    length_cost: float = 2.0  # score "sum": nats credited per token (a deletion must gain more than this)
    score: str = "sum"  # "sum": sum of the tokens' log-probs + length_cost * tokens; "mean": mean log-prob
    max_rounds: int = 2
    max_spans: int = 4  # suspects tried per round (least likely first)
    max_span_tokens: int = 3  # remask: adjacent suspects are merged into spans of at most this many tokens
    alternatives: int = 1  # direct candidates: the judge's top tokens substituted at a suspect
    # and the top tokens there of one more pass with the suspects masked (diffusion models): off by
    # default, it held the original token more often but did not raise the tune split's fix rate
    masked_alternatives: int = 0
    direct: bool = True  # candidates read off the judge pass (substitute, delete, insert before, delete previous)
    remask: bool = False  # candidates from remasking a suspect span and re-denoising it (length_deltas)
    length_deltas: tuple[int, ...] = (-1, 0, 1)  # remasked span length = span length + delta
    trust_docstring: bool = True  # the function's docstring is prose: never a suspect, never edited
    max_function_tokens: int = 1024
    min_drop: float = 1.0  # with a baseline (refactor): a suspect's log-prob must have fallen this much (nats)
    window: PromptWindow = field(default_factory=lambda: PromptWindow(max_prefix_tokens=384, max_suffix_tokens=128))

    def __post_init__(self):
        if not 0 < self.suspect_prob <= 1 or self.max_rounds < 0 or self.max_spans < 1:
            raise ValueError("suspect_prob must be in (0, 1], max_rounds >= 0, max_spans >= 1")
        if self.score not in ("sum", "mean"):
            raise ValueError("score must be 'sum' or 'mean'")


@dataclass
class RepairResult:
    edits: list[TextEdit]
    text: str  # the repaired function
    span: tuple[int, int]  # the function's [start, end) in the document (characters)
    rounds: int
    candidates: int  # candidates scored
    score_before: float
    score_after: float
    ms: float = 0.0
    judged: bool = True  # False: with a baseline whose context is the same, no model call was needed

    def to_params(self) -> dict:
        return dict(edits=[asdict(e) for e in self.edits], text=self.text, span=list(self.span), rounds=self.rounds,
                    candidates=self.candidates, score_before=self.score_before, score_after=self.score_after,
                    ms=self.ms)


class Repairer:
    def __init__(self, model, tokenizer: Tokenizer, cfg: RepairConfig | None = None):
        self.model, self.tok, self.cfg = model, tokenizer, cfg or RepairConfig()
        self.device = next(model.parameters()).device
        self.causal = bool(model.cfg.causal)
        V = model.cfg.vocab_size
        ban = torch.zeros(V, dtype=torch.bool)
        ban[list(tokenizer.special_ids)] = True  # inside a function: no mask, eos, fim tokens
        ban[tokenizer.vocab_size:] = True
        self.ban = ban.to(self.device)
        self.trace: list[dict] | None = None  # set to a list to record every candidate scored (calibration)
        self._last_logp: torch.Tensor | None = None

    # --- the judge -------------------------------------------------------------------------------

    def _forward(self, block: list[int], cache: KVCache, prompt: list[int]) -> torch.Tensor:
        """Logits (len(block), V) with the prompt's KV cached once (the first call fills it)."""
        dev = self.device
        clean = prompt if cache.length == 0 else []
        if self.causal:  # the last prompt token is re-fed so its logits predict the first block token
            clean = (prompt[:-1] if cache.length == 0 else [])
            block = [prompt[-1]] + block
        clean_t = torch.tensor([clean], dtype=torch.long, device=dev).view(1, -1)
        block_t = torch.tensor([block], dtype=torch.long, device=dev)
        logits = self.model.step(clean_t, block_t, cache)[0]
        if clean:
            cache.append_tokens(clean)
        return logits

    def judge(self, func: list[int], cache: KVCache, prompt: list[int]) -> tuple[torch.Tensor, float]:
        """Per-token log-probs of func + [eos] and the score (mean for diffusion, sum for AR)."""
        block = func + [self.tok.eos_id]
        logits = self._forward(block, cache, prompt)
        if self.causal:
            logits = logits[:-1]  # logits[i] predicts block[i]
        logp = torch.log_softmax(logits.float(), dim=-1)
        lp = logp.gather(1, torch.tensor(block, device=logp.device)[:, None])[:, 0]
        self._last_logp = logp  # the whole judgement (the direct candidates read its top tokens)
        return lp, self._score(lp)

    def _score(self, lp: torch.Tensor) -> float:
        """"sum": sum of log-probs + length_cost per token (so a deletion is not free: it drops a
        negative term); "mean": the mean log-prob (AR models: the sum, as before)."""
        if self.cfg.score == "mean":
            return float(lp.sum()) if self.causal else float(lp.mean())
        return float(lp.sum()) + self.cfg.length_cost * len(lp)

    def _denoise_span(self, func: list[int], i: int, j: int, n: int, cache, prompt, should_stop) -> list[int]:
        """func with [i, j) replaced by n tokens the model fills (most confident first, one a step)."""
        if n == 0:
            return func[:i] + func[j:]
        mask_id = self.tok.mask_id
        cand = func[:i] + [mask_id] * n + func[j:]
        if self.causal:  # AR: greedy left to right (the scorer does the judging)
            for k in range(i, i + n):
                if should_stop is not None and should_stop():
                    raise CompletionCancelled
                logits = self._forward(cand[:k], cache, prompt)[-1]
                cand[k] = int(logits.masked_fill(self.ban, float("-inf")).argmax())
            return cand
        todo = set(range(i, i + n))
        while todo:
            if should_stop is not None and should_stop():
                raise CompletionCancelled
            logits = self._forward(cand + [self.tok.eos_id], cache, prompt)
            logits = logits.masked_fill(self.ban, float("-inf"))
            conf, pred = torch.softmax(logits, -1).max(-1)
            k = max(todo, key=lambda p: float(conf[p]))
            cand[k] = int(pred[k])
            todo.discard(k)
        return cand

    def _context(self, code: str, span: tuple[int, int]):
        """(body, tail, func token ids, prompt ids, cap) of the function at code[span]."""
        start, end = span
        if not 0 <= start <= end <= len(code):
            raise RepairError(f"span {span} is outside the file ({len(code)} characters)")
        prefix, old, suffix = code[:start], code[start:end], code[end:]
        body = old.rstrip("\n")
        tail = old[len(body):]  # the function's closing newlines stay as they are
        func = self.tok.encode(body)
        cap = min(self.cfg.max_function_tokens, self.model.cfg.max_seq_len - 64)
        if len(func) > cap:
            raise RepairError(f"the function is {len(func)} tokens long; repair handles at most {cap} "
                              "(select a part of it)")
        w = self.cfg.window
        room = self.model.cfg.max_seq_len - len(func) - 8 - max(self.cfg.length_deltas + (0,))
        if w.max_prefix_tokens + w.max_suffix_tokens > room:
            w = PromptWindow(max_prefix_tokens=room * 3 // 4, max_suffix_tokens=room // 4,
                             anchor_chars=w.anchor_chars, chars_per_token=w.chars_per_token)
        return body, tail, func, build_prompt(self.tok, prefix, tail + suffix, w), cap

    @staticmethod
    def _align(base_ids: list[int], base_lp: torch.Tensor, func: list[int]) -> torch.Tensor:
        """base_lp (over base_ids + eos) carried onto func + eos: equal runs (difflib) map token to
        token, the rest is NaN."""
        out = torch.full((len(func) + 1,), float("nan"), device=base_lp.device)
        sm = difflib.SequenceMatcher(None, base_ids, func, autojunk=False)
        for i, j, n in sm.get_matching_blocks():
            if n:
                out[j:j + n] = base_lp[i:i + n]
        out[len(func)] = base_lp[len(base_ids)]  # eos
        return out

    # --- the search ------------------------------------------------------------------------------

    def _token_ends(self, func: list[int]) -> list[int]:
        """Character end of each token of func in decode(func)."""
        return [len(self.tok.decode(func[: k + 1])) for k in range(len(func))]

    def _trusted_mask(self, func: list[int], ranges: list[tuple[int, int]]) -> list[bool]:
        """Per token of func (and the eos after it, never trusted): whether it overlaps a trusted
        character range of decode(func)."""
        out, prev = [], 0
        if ranges:
            for e in self._token_ends(func):
                out.append(any(prev < rb and ra < max(e, prev + 1) for ra, rb in ranges))
                prev = e
        else:
            out = [False] * len(func)
        return out + [False]

    def _suspects(self, lp: torch.Tensor, trusted: list[bool], base: torch.Tensor | None) -> list[int]:
        """Positions (eos included, at len(func)) whose present token has probability below
        `suspect_prob`, not trusted, and (with a baseline) whose log-prob fell by `min_drop`; the
        least likely first, at most `max_spans`."""
        p = lp.exp()

        def fell(k: int) -> bool:
            return base is None or bool(torch.isnan(base[k])) or float(base[k] - lp[k]) > self.cfg.min_drop
        out = [int(k) for k in torch.argsort(p) if float(p[k]) < self.cfg.suspect_prob
               and not trusted[int(k)] and fell(int(k))]
        return out[: self.cfg.max_spans]

    def _spans(self, sus: list[int], n_func: int, trusted: list[bool]) -> list[tuple[int, int]]:
        """Spans [i, j) of adjacent suspects around each suspect (remask candidates)."""
        spans: list[tuple[int, int]] = []
        ok = set(sus)
        for k in sus:
            k = min(k, n_func)
            if any(a <= k < b for a, b in spans):
                continue
            a, b = k, k + 1
            while a - 1 >= 0 and (a - 1) in ok and b - a < self.cfg.max_span_tokens:
                a -= 1
            while b in ok and b < n_func and b - a < self.cfg.max_span_tokens:
                b += 1
            b = min(b, n_func)
            spans.append((a, b))
        return spans

    def _direct(self, func: list[int], k: int, logp: torch.Tensor, trusted: list[bool],
                mlogp: torch.Tensor | None = None) -> list[tuple[str, list[int]]]:
        """Edits read off the judge pass at suspect k: its top tokens substituted there (and those
        of the masked pass `mlogp`, where the suspects are masks), the token deleted, the top token
        inserted before it, the token before it deleted (an extra token makes its neighbour
        unlikely). At the eos (k == len(func)): the top token appended."""
        n = len(func)
        present = func[k] if k < n else self.tok.eos_id

        def top(lg: torch.Tensor, m: int) -> list[int]:
            row = lg[k].masked_fill(self.ban, float("-inf"))
            return [int(t) for t in torch.topk(row, m + 1).indices if int(t) != present][:m]
        alts = top(logp, self.cfg.alternatives)
        subs = list(alts)
        if mlogp is not None and k < n:
            subs += [t for t in top(mlogp, self.cfg.masked_alternatives) if t not in subs]
        out = []
        if k == n:
            if alts:
                out.append(("append", func + [alts[0]]))
            return out
        for t in subs:
            out.append(("substitute" if t in alts else "substitute_masked", func[:k] + [t] + func[k + 1:]))
        out.append(("delete", func[:k] + func[k + 1:]))
        if alts:
            out.append(("insert", func[:k] + [alts[0]] + func[k:]))
        if k > 0 and not trusted[k - 1]:
            out.append(("delete_previous", func[:k - 1] + func[k:]))
        return out

    @torch.no_grad()
    def repair(self, code: str, span: tuple[int, int], *, language: str = "python",
               should_stop: Callable[[], bool] | None = None,
               trusted: tuple[int, int] | None = None,
               baseline: tuple[str, tuple[int, int]] | None = None) -> RepairResult:
        """Repair the function at code[span[0]:span[1]]; see the module docstring. `trusted`: a
        character range of the document that is never edited (the tokens that overlap it stay).
        `baseline` (refactor): the document before an edit and this function's span in it; it is
        judged there too, and only tokens whose log-prob fell by `min_drop` since are suspects."""
        t0 = time.perf_counter()
        code = code.replace("\r\n", "\n")
        start, end = span
        if baseline is None and self.cfg.trust_docstring and language == "python":
            # the signature and docstring are context, not suspects: they join the clean prompt
            # (judged once, cached), and the block is the code after them
            whole = code[start:end].rstrip("\n")
            doc = docstring_range(whole)
            if doc is not None and 0 < doc[1]:
                if not whole[doc[1]:].strip():  # nothing but a docstring: nothing to repair
                    return RepairResult(edits=[], text=code[start:end], span=span, rounds=0, candidates=0,
                                        score_before=0.0, score_after=0.0,
                                        ms=(time.perf_counter() - t0) * 1000, judged=False)
                res = self._search(code, (start + doc[1], end), language, should_stop, trusted, None, t0,
                                   head=whole[:doc[1]])
                res.text, res.span = code[start:start + doc[1]] + res.text, span
                return res
        return self._search(code, span, language, should_stop, trusted, baseline, t0)

    def _search(self, code, span, language, should_stop, trusted, baseline, t0, head: str = "") -> RepairResult:
        """The search over code[span]; `head` (the signature and docstring before it) is only used
        to check that a candidate parses as a whole function."""
        start, end = span
        body, tail, func, prompt, cap = self._context(code, span)
        cache = KVCache.for_model(self.model)
        base_ids = base_lp = None
        if baseline is not None:
            try:
                _b, _t, base_ids, base_prompt, _c = self._context(baseline[0].replace("\r\n", "\n"), baseline[1])
            except RepairError:
                base_ids = None  # too long before the edit: judge without a baseline
            if base_ids == func and base_prompt == prompt:  # the model sees exactly what it saw before
                return RepairResult(edits=[], text=body + tail, span=(start, end), rounds=0, candidates=0,
                                    score_before=0.0, score_after=0.0, ms=(time.perf_counter() - t0) * 1000,
                                    judged=False)
            if base_ids is not None:
                if should_stop is not None and should_stop():
                    raise CompletionCancelled
                base_lp, _ = self.judge(base_ids, KVCache.for_model(self.model), base_prompt)
        check = (lambda t: python_parses(head + t)) if language == "python" else (lambda _t: True)

        # trusted character ranges of the function's text (moved as edits change lengths before them)
        ranges: list[tuple[int, int]] = []
        if trusted is not None and trusted[0] < start + len(body) and start < trusted[1]:
            ranges.append((max(trusted[0], start) - start, min(trusted[1], start + len(body)) - start))
        if baseline is not None and self.cfg.trust_docstring and language == "python":
            doc = docstring_range(body)  # (without a baseline the docstring is in the prompt already)
            if doc is not None:
                ranges.append(doc)

        cur = body
        lp, score = self.judge(func, cache, prompt)
        logp = self._last_logp
        score0, n_cand, rounds = score, 0, 0
        seen = {body}
        for _ in range(self.cfg.max_rounds):
            tmask = self._trusted_mask(func, ranges)
            base = self._align(base_ids, base_lp, func) if base_lp is not None else None
            sus = self._suspects(lp, tmask, base)
            if not sus:
                break
            rounds += 1
            cands: list[tuple[str, int, list[int]]] = []
            if self.cfg.direct:
                mlogp = None
                if self.cfg.masked_alternatives > 0 and not self.causal and any(k < len(func) for k in sus):
                    # one pass with every suspect masked: its predictions there carry no copy of
                    # the present token (the unmasked judge tends to repeat what it sees)
                    if should_stop is not None and should_stop():
                        raise CompletionCancelled
                    masked = [self.tok.mask_id if k in sus else t for k, t in enumerate(func)]
                    mlogp = torch.log_softmax(self._forward(masked + [self.tok.eos_id], cache, prompt).float(), -1)
                for k in sus:
                    cands += [(kind, k, c) for kind, c in self._direct(func, k, logp, tmask, mlogp)]
                top = logp.masked_fill(self.ban, float("-inf")).argmax(-1).tolist()
                for a, b in self._spans(sus, len(func), tmask):
                    if b - a >= 2:  # a run of suspects: all deleted, or all replaced by the judge's tokens
                        cands.append(("delete_span", a, func[:a] + func[b:]))
                        cands.append(("substitute_span", a, func[:a] + top[a:b] + func[b:]))
            if self.cfg.remask:
                for a, b in self._spans(sus, len(func), tmask):
                    for d in self.cfg.length_deltas:
                        n = (b - a) + d
                        if n < 0 or (n == 0 and b == a):
                            continue
                        cands.append((f"remask{d:+d}", a, self._denoise_span(func, a, b, n, cache, prompt,
                                                                             should_stop)))
            best = None
            credit = self.cfg.length_cost if self.cfg.score == "sum" else 0.0
            for kind, k, cand in cands:
                text = self.tok.decode(cand)
                if text in seen or not check(text):
                    continue
                seen.add(text)
                ids = self.tok.encode(text)  # the canonical tokens of the edited text
                if len(ids) > cap:
                    continue
                moved = _moved(ranges, cur, text)
                if moved is None:  # the edit reaches into a trusted range
                    continue
                if should_stop is not None and should_stop():
                    raise CompletionCancelled
                c_lp, c_score = self.judge(ids, cache, prompt)
                n_cand += 1
                if self.trace is not None:
                    self.trace.append(dict(round=rounds, kind=kind, pos=k, rank=sus.index(k) if k in sus else -1,
                                           delta=c_score - score, dsum=float(c_lp.sum() - lp.sum()),
                                           dlen=len(ids) - len(func), text=head + text))
                if c_score >= score + self.cfg.margin and (best is None or _better(c_score, ids, best, len(func), credit)):
                    best = (ids, c_lp, c_score, self._last_logp, text, moved)
            if best is None:
                break
            func, lp, score, logp, cur, ranges = best
        new_body = self.tok.decode(func)
        if new_body == body:
            new_body = body  # unchanged: no edits
        edits = self._edits(code, start, body, new_body, func, lp)
        return RepairResult(edits=edits, text=new_body + tail, span=(start, end), rounds=rounds,
                            candidates=n_cand, score_before=score0, score_after=score,
                            ms=(time.perf_counter() - t0) * 1000)

    def _edits(self, code: str, start: int, old: str, new: str, func: list[int], lp: torch.Tensor) -> list[TextEdit]:
        if old == new:
            return []
        ends, acc = [], 0  # character end of each token of `new`
        for k in range(len(func)):
            acc = len(self.tok.decode(func[: k + 1]))
            ends.append(acc)
        probs = lp.exp().tolist()
        edits = []
        sm = difflib.SequenceMatcher(None, old, new, autojunk=False)
        for op, i1, i2, j1, j2 in sm.get_opcodes():
            if op == "equal":
                continue
            toks = [k for k, e in enumerate(ends) if e > j1 and (k == 0 or ends[k - 1] < max(j2, j1 + 1))]
            conf = min((probs[k] for k in toks), default=probs[-1])
            a, b = start + i1, start + i2
            (l1, c1), (l2, c2) = line_col(code, a), line_col(code, b)
            edits.append(TextEdit(start=a, end=b, start_line=l1, start_character=c1, end_line=l2, end_character=c2,
                                  new_text=new[j1:j2], confidence=round(float(conf), 4)))
        return edits


def _moved(ranges: list[tuple[int, int]], old: str, new: str) -> list[tuple[int, int]] | None:
    """The trusted ranges of `old` carried onto `new` (one contiguous change: the common prefix and
    suffix trimmed), or None when the change touches one of them."""
    if not ranges:
        return []
    p = 0
    while p < min(len(old), len(new)) and old[p] == new[p]:
        p += 1
    q = 0
    while q < min(len(old), len(new)) - p and old[-1 - q] == new[-1 - q]:
        q += 1
    a_old, b_old = p, len(old) - q  # old[a_old:b_old] became new[p:len(new) - q]
    out = []
    for ra, rb in ranges:
        if rb <= a_old:
            out.append((ra, rb))
        elif ra >= b_old:
            d = len(new) - len(old)
            out.append((ra + d, rb + d))
        else:
            return None
    return out

TIE = 0.01  # nats: candidates this close score the same


def _better(c_score: float, cand: list[int], best: tuple, n: int, length_cost: float = 0.0) -> bool:
    """Whether a candidate beats the best so far (both passed the margin): a higher score, or
    about the same score with a smaller change of length (a mean log-prob can rise by adding
    confident tokens: a repeated word must not win a tie). Between candidates, tokens beyond the
    function's length n earn no `length_cost` credit: the credit offsets a sum's bias against
    length so that an insertion can pass the margin at all, but it must not make the longer of two
    passing candidates win (a judge that is sure of a repeated token would otherwise grow the text:
    "size" -> "sizeize")."""
    def rank(score, ids):
        return score - length_cost * max(0, len(ids) - n)
    a, b = rank(c_score, cand), rank(best[2], best[0])
    if abs(a - b) <= TIE:
        return abs(len(cand) - n) < abs(len(best[0]) - n)
    return a > b


# --- the core method `repair` (daemon, service and in-process core share it) --------------------

@dataclass(kw_only=True)
class RepairRequest:
    """The params map of the core's `repair`: the document, and the function's span
    `[line, character, end_line, end_character]` or a `position` `[line, character]` inside it
    (0-based, code points). With a position, the enclosing function is found by `ast`
    (`python_function_span`); the language server sends the span it found with tree-sitter."""
    id: int
    uri: str
    code: str
    span: tuple[int, int, int, int] | None = None
    position: tuple[int, int] | None = None
    language: str = "python"

    @classmethod
    def parse(cls, p: dict, default_id: int) -> "RepairRequest":
        def ints(name, n):
            v = p.get(name)
            if v is None:
                return None
            if (not isinstance(v, (list, tuple)) or len(v) != n
                    or not all(isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in v)):
                raise ValueError(f"repair: {name} = {v!r:.60} is invalid (expected {n} ints >= 0)")
            return tuple(v)
        for name in ("uri", "code"):
            if not isinstance(p.get(name), str):
                raise ValueError(f"repair: {name!r} must be a string")
        lid = p.get("id", default_id)
        if not isinstance(lid, int) or isinstance(lid, bool):
            raise ValueError("repair: id must be an int")
        req = cls(id=lid, uri=p["uri"], code=p["code"], span=ints("span", 4), position=ints("position", 2),
                  language=p.get("language", "python") if isinstance(p.get("language"), str) else "python")
        if (req.span is None) == (req.position is None):
            raise ValueError("repair: give exactly one of span [l, c, l, c] or position [l, c]")
        return req

    def to_params(self) -> dict:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items() if v is not None}

    def char_span(self) -> tuple[int, int]:
        code = self.code.replace("\r\n", "\n")
        if self.span is not None:
            a, b = offset_of(code, self.span[0], self.span[1]), offset_of(code, self.span[2], self.span[3])
            if b < a:
                raise RepairError("the span ends before it starts")
            return a, b
        if self.language != "python":
            raise RepairError(f"no function finder for {self.language}; send the function's span")
        return python_function_span(code, offset_of(code, *self.position))


def run_repair(repairer: Repairer, req: RepairRequest, should_stop=None) -> dict:
    """The result map of `repair`: {id, edits: [{start_line, start_character, end_line,
    end_character, new_text, confidence, ...}], text, span, rounds, candidates, scores, ms}."""
    res = repairer.repair(req.code, req.char_span(), language=req.language, should_stop=should_stop)
    return {"id": req.id, **res.to_params()}
