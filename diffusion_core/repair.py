"""Repair: the model judges every token of a function and rewrites the ones it doubts.

The function is put in the denoising block after the clean prompt made of the rest of the file,
in the design's order `<|fim_suffix|> SUFFIX <|fim_prefix|> PREFIX <|fim_middle|> FUNCTION <|eos|>`,
with nothing masked. The model predicts every position (no carry-over), so one forward gives
log p(x_i | everything) for each present token x_i: the judge pass. Then, for a few rounds:

1. suspects: the positions whose present token has probability < `suspect_prob`, the least
   likely first, grouped into spans of adjacent positions;
2. each suspect span [i, j) is remasked with j-i-1, j-i and j-i+1 masks (so a token can be
   deleted or inserted as well as replaced) and re-denoised (most confident mask first);
   the judge's own argmax at the span is a free candidate too;
3. a candidate is kept only if the function parses (`ast.parse` of the dedented function for
   Python, so a syntax error elsewhere in the file does not block it; other languages are not
   checked here) and the judge's score rises by at least `margin`.

Score: diffusion models, the mean log-prob of the function's tokens (and the closing eos) under a
judge pass; the autoregressive baseline (`causal=True`), the sum of next-token log-probs of the
same tokens given the prompt. The search is the same for both.

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

import ast
import difflib
import textwrap
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import torch

from ..errors import DllmError
from .kv_cache import KVCache
from .prompt import PromptWindow, build_prompt
from .sampler import CompletionCancelled
from .tokenizer import Tokenizer


class RepairError(DllmError):
    """A repair request that cannot be served (no function there, too long, ...): one line."""


@dataclass(kw_only=True)
class RepairConfig:
    suspect_prob: float = 0.05  # a present token below this probability is a suspect
    margin: float = 0.05  # a candidate must raise the score by this much (nats; mean for diffusion)
    max_rounds: int = 3
    max_spans: int = 4  # suspect spans tried per round (least likely first)
    max_span_tokens: int = 3  # adjacent suspects are merged into spans of at most this many tokens
    length_deltas: tuple[int, ...] = (-1, 0, 1)  # remasked span length = span length + delta
    max_function_tokens: int = 1024
    min_drop: float = 1.0  # with a baseline (refactor): a suspect's log-prob must have fallen this much (nats)
    window: PromptWindow = field(default_factory=lambda: PromptWindow(max_prefix_tokens=384, max_suffix_tokens=128))

    def __post_init__(self):
        if not 0 < self.suspect_prob < 1 or self.max_rounds < 0 or self.max_spans < 1:
            raise ValueError("suspect_prob must be in (0, 1), max_rounds >= 0, max_spans >= 1")


@dataclass
class TextEdit:
    """Replace document characters [start, end) with `new_text`; lines/characters 0-based (code points)."""
    start: int
    end: int
    start_line: int
    start_character: int
    end_line: int
    end_character: int
    new_text: str
    confidence: float


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


def line_col(text: str, offset: int) -> tuple[int, int]:
    """0-based (line, character) of a character offset."""
    line = text.count("\n", 0, offset)
    return line, offset - (text.rfind("\n", 0, offset) + 1)


def offset_of(text: str, line: int, character: int) -> int:
    """Character offset of a 0-based (line, character); past the end of a line is its end."""
    lines = text.split("\n")
    if not 0 <= line < len(lines):
        raise RepairError(f"line {line + 1} is outside the file ({len(lines)} lines)")
    return sum(len(s) + 1 for s in lines[:line]) + min(max(character, 0), len(lines[line]))


def python_function_span(code: str, offset: int) -> tuple[int, int]:
    """[start, end) of the innermost Python function around `offset` (from its first decorator
    line to its last line, newline included). When the file does not parse, the function is
    found by indentation (the nearest `def` line above whose block holds the offset), so a
    syntax error can be repaired. Raises RepairError when no function encloses the offset."""
    line = code.count("\n", 0, offset) + 1
    lines = code.splitlines(keepends=True)
    try:
        tree = ast.parse(code)
    except SyntaxError as e:
        best = _indent_function(lines, line)
        if best is None:
            raise RepairError(f"the file does not parse (line {e.lineno}: {e.msg}) and line {line} is not "
                              "inside a `def` block") from None
    else:
        best = None
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                first = min([node.lineno] + [d.lineno for d in node.decorator_list])
                if first <= line <= node.end_lineno and (best is None or first >= best[0]):
                    best = (first, node.end_lineno)
    if best is None:
        raise RepairError(f"line {line} is not inside a function")
    start = sum(len(s) for s in lines[: best[0] - 1])
    return start, start + sum(len(s) for s in lines[best[0] - 1: best[1]])


def _indent_function(lines: list[str], line: int) -> tuple[int, int] | None:
    """1-based (first, last) line of the `def` block holding `line`, by indentation alone."""
    def indent(s: str) -> int:
        return len(s) - len(s.lstrip())

    for d in range(min(line, len(lines)), 0, -1):
        s = lines[d - 1]
        if s.lstrip().startswith(("def ", "async def ")):
            last = d
            for k in range(d + 1, len(lines) + 1):
                t = lines[k - 1]
                if t.strip() and indent(t) <= indent(s):
                    break
                if t.strip():
                    last = k
            if last >= line:
                return d, last
    return None


def python_parses(text: str) -> bool:
    """Whether a piece of Python (a function, possibly indented as a method) parses."""
    try:
        ast.parse(textwrap.dedent(text))
        return True
    except (SyntaxError, ValueError):
        return False


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
        score = float(lp.sum()) if self.causal else float(lp.mean())
        return lp, score

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

    def _suspect_spans(self, lp: torch.Tensor, n_func: int, trusted: tuple[int, int] | None = None,
                       base: torch.Tensor | None = None) -> list[tuple[int, int]]:
        """Spans [i, j) of adjacent suspect tokens, the least likely first (eos judged too: a
        doubted eos suggests a missing token at the end). Tokens in `trusted` [a, b) are never
        suspects, and a span never reaches into them (refactor: the user's own edit). With `base`
        (each token's log-prob before the edit, NaN where it has no counterpart), a token is a
        suspect only if its log-prob fell by more than `min_drop`: what the edit made unlikely."""
        p = lp.exp()
        ta, tb = trusted if trusted is not None else (0, 0)

        def fell(k: int) -> bool:
            return base is None or bool(torch.isnan(base[k])) or float(base[k] - lp[k]) > self.cfg.min_drop
        order = [int(k) for k in torch.argsort(p) if float(p[k]) < self.cfg.suspect_prob
                 and not ta <= min(int(k), n_func) < tb and fell(int(k))]
        spans: list[tuple[int, int]] = []
        for k in order:
            k = min(k, n_func)
            if any(a <= k < b for a, b in spans):
                continue
            a, b = k, k + 1
            while a - 1 >= 0 and (a - 1) in order and b - a < self.cfg.max_span_tokens:
                a -= 1
            while b in order and b < n_func and b - a < self.cfg.max_span_tokens:
                b += 1
            a, b = a, min(b, n_func)
            if trusted is not None and a < tb and ta < b:  # clip to the side of the suspect
                a, b = (max(a, tb), b) if k >= tb else (a, min(b, ta))
                if b <= a and not (a == b == n_func):
                    continue
            spans.append((a, b))
            if len(spans) >= self.cfg.max_spans:
                break
        return spans

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
        check = python_parses if language == "python" else (lambda _t: True)

        tt = None  # the trusted range as token indices of func [ta, tb), moved as spans change length
        if trusted is not None and trusted[0] < start + len(body) and start < trusted[1]:
            ta = tb = None
            pos = start
            for k in range(len(func)):
                nxt = start + len(self.tok.decode(func[: k + 1]))
                if pos < trusted[1] and trusted[0] < max(nxt, pos + 1):
                    ta = k if ta is None else ta
                    tb = k + 1
                pos = nxt
            if ta is not None:
                tt = (ta, tb)

        old_func = func
        lp, score = self.judge(func, cache, prompt)
        score0, n_cand, rounds = score, 0, 0
        for _ in range(self.cfg.max_rounds):
            base = self._align(base_ids, base_lp, func) if base_lp is not None else None
            spans = self._suspect_spans(lp, len(func), tt, base)
            if not spans:
                break
            rounds += 1
            best = None
            for a, b in spans:
                cands = []
                for d in self.cfg.length_deltas:
                    n = (b - a) + d
                    if n < 0 or (n == 0 and b == a):
                        continue
                    cands.append(self._denoise_span(func, a, b, n, cache, prompt, should_stop))
                for cand in cands:
                    if cand == func or len(cand) > cap:
                        continue
                    if not check(self.tok.decode(cand)):
                        continue
                    if should_stop is not None and should_stop():
                        raise CompletionCancelled
                    c_lp, c_score = self.judge(cand, cache, prompt)
                    n_cand += 1
                    if c_score >= score + self.cfg.margin and (best is None or _better(c_score, cand, best, len(func))):
                        best = (cand, c_lp, c_score, (a, b))
            if best is None:
                break
            func, lp, score, (a, b) = best
            if tt is not None and b <= tt[0]:
                shift = len(func) - len(old_func)
                tt = (tt[0] + shift, tt[1] + shift)
            old_func = func
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


TIE = 0.01  # nats: candidates this close score the same


def _better(c_score: float, cand: list[int], best: tuple, n: int) -> bool:
    """Whether a candidate beats the best so far: a higher score, or about the same score with a
    smaller change of length (a mean log-prob can rise by adding confident tokens: a repeated
    word must not win a tie)."""
    if abs(c_score - best[2]) <= TIE:
        return abs(len(cand) - n) < abs(len(best[0]) - n)
    return c_score > best[2]


def apply_edits(code: str, edits: list[TextEdit]) -> str:
    for e in sorted(edits, key=lambda e: e.start, reverse=True):
        code = code[: e.start] + e.new_text + code[e.end:]
    return code


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
