"""Block-parallel denoising with an exact KV cache.

Block after block: the block starts as `block_size` masks; each step runs one forward over the
block (with the cached clean tokens), predicts every position, and commits the masked positions
whose confidence passes the commit rule (always at least one, so steps <= tokens: when none
passes, in block mode the leftmost masked position, see `SamplerConfig.fallback`). The finished
block's clean KV enters the cache in the same forward as the next block's first step. Stops
(stops.py) are checked after every step on the contiguous committed text, so a request ends as
soon as its answer is known.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from ..kernels import use_triton
from ..kernels.commit import FALLBACKS
from . import copy_prior
from .copy_prior import COPY
from .kv_cache import KVCache, common_prefix_len
from .prompt import MAX_HEAD_TOKENS, PromptWindow, build_healed_prompt
from .stops import StopContext, find_stop, statement_boundary
from .tokenizer import Tokenizer

RULES = ("threshold", "factor")
# the syntax guard in the core and the server (docs/results.md, "Syntax guard (issue 10)")
SERVER_SYNTAX_GUARD = True
SERVER_SYNTAX_GUARD_ALTERNATIVES = 8
# token healing in the core and the server (docs/results.md, "Token healing")
SERVER_TOKEN_HEALING = True
CONFIDENCES = ("maxprob", "margin", "entropy")


class CompletionCancelled(Exception):
    """Raised by `Sampler.complete` when its `should_stop` callback says so (between steps)."""


@dataclass(kw_only=True)
class SamplerConfig:
    block_size: int = 32
    max_tokens: int = 64
    rule: str = "threshold"  # "threshold": commit conf >= threshold; "factor": Fast-dLLM's (n+1)(1-c_n) < factor
    threshold: float = 0.9
    factor: float = 1.0
    confidence: str = "maxprob"  # "maxprob" p1, "margin" p1-p2, "entropy" 1-H/log V; all in [0, 1]
    window: PromptWindow = field(default_factory=PromptWindow)
    # tree-sitter syntax guard (syntax_guard.py): a step whose commits open a new syntax error is
    # remasked and redone with one commit; Python only (the request's language)
    syntax_guard: bool = False
    # when the one remaining commit still opens an error, try this many runner-up tokens at its
    # position (the same logits) before keeping it
    syntax_guard_alternatives: int = 0
    # token healing (prompt.build_healed_prompt): the cursor's line goes into the middle and the
    # prompt ends before its last token(s); the completion's first tokens must write their text
    # again (then it is cut off the answer)
    token_healing: bool = False
    # a step where no position passes the rule still commits one: the leftmost masked position
    # ("leftmost"), or the most confident ("confident", the only rule before session 23), or by
    # mode ("mode": leftmost in block mode, most confident in line mode). In a multi-line block the
    # most confident guess far to the right is often a token repeated ("fibonaccicicici"), which
    # then conditions the rest; in a line, it is often the line's end (docs/results.md, "The commit
    # fallback")
    fallback: str = "mode"
    # revision in block mode (Seed's edit stage trains the model to correct visible tokens): at
    # each step, a committed position of the current block whose argmax now differs from its
    # token, with confidence >= revise, takes the new token (never to or from eos). It costs no
    # forward: the step reads every position's logits (on a CPU the head then runs over the whole
    # block, not only the candidates, which single lines, where it gained nothing, are spared).
    # 0: off (docs/results.md, "Revising committed tokens")
    revise: float = 0.5
    # the copy prior in block mode (copy_prior.py): a masked position whose prediction equals a
    # draft copied from the context (prompt lookup), in a run from the committed head, commits at
    # this confidence instead of the rule's. 0: off (docs/results.md, "The copy prior")
    copy: float = COPY
    # the AR baseline only: greedy decoding with prompt lookup (copy_prior.draft_host), each forward
    # verifying up to this many drafted tokens and keeping those equal to its own greedy ones: the
    # greedy text in fewer steps (speculative decoding, lossless up to rounding). 0: off
    lookup: int = 0

    @classmethod
    def for_server(cls) -> "SamplerConfig":
        """The defaults of the core and the language server (see ARCHITECTURE.md, Decisions)."""
        return cls(syntax_guard=SERVER_SYNTAX_GUARD, syntax_guard_alternatives=SERVER_SYNTAX_GUARD_ALTERNATIVES,
                   token_healing=SERVER_TOKEN_HEALING)

    def __post_init__(self):
        if self.block_size < 1 or self.max_tokens < 1:
            raise ValueError("block_size and max_tokens must be >= 1")
        if self.rule not in RULES:
            raise ValueError(f"rule must be one of {RULES}, not {self.rule!r}")
        if self.confidence not in CONFIDENCES:
            raise ValueError(f"confidence must be one of {CONFIDENCES}, not {self.confidence!r}")
        if self.fallback not in FALLBACKS:
            raise ValueError(f"fallback must be one of {FALLBACKS}, not {self.fallback!r}")
        if not 0.0 <= self.revise <= 1.0:
            raise ValueError(f"revise must be in [0, 1] (0: off), not {self.revise!r}")
        if not 0.0 <= self.copy <= 1.0:
            raise ValueError(f"copy must be in [0, 1] (0: off), not {self.copy!r}")
        if not 0 <= self.lookup <= 64:
            raise ValueError(f"lookup must be in [0, 64] (0: off), not {self.lookup!r}")


@dataclass
class Trace:
    steps: int = 0
    tokens: int = 0  # tokens committed by the model (the work done); steps <= tokens
    per_step: list[int] = field(default_factory=list)  # tokens committed at each step
    blocks: int = 0
    prompt_tokens: int = 0
    reused_tokens: int = 0  # prompt tokens whose KV came from the cache
    ms: float = 0.0
    # syntax guard (cfg.syntax_guard): steps whose commits opened a new syntax error and were redone
    # with one commit; single commits that opened one and were kept; time spent in tree-sitter
    guard_redone: int = 0
    guard_replaced: int = 0  # single commits replaced by a runner-up token (cfg.syntax_guard_alternatives)
    guard_kept: int = 0
    guard_ms: float = 0.0
    healed: str = ""  # the prefix text left out of the prompt and written again (token healing)


@dataclass
class Completion:
    text: str
    stop: str  # "eos", "eol", "dedent", "brackets", "suffix", "repeat", "max_tokens"
    trace: Trace


def confidence(logits: torch.Tensor, kind: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-position (confidence, argmax token) from logits (..., V); the token is the first
    argmax on ties, as in kernels.commit."""
    logp = torch.log_softmax(logits.float(), dim=-1)
    if kind == "margin":
        p = logp.topk(2, dim=-1).values.exp()
        return p[..., 0] - p[..., 1], logp.argmax(dim=-1)
    best, tokens = logp.max(dim=-1)
    if kind == "maxprob":
        return best.exp(), tokens
    ent = -(logp.exp() * logp).nan_to_num(0.0).sum(-1)  # 0 log 0 = 0 for banned (-inf) tokens
    return 1.0 - ent / math.log(logits.shape[-1]), tokens


def commit_count(conf_sorted: torch.Tensor, cfg: SamplerConfig) -> int:
    """How many of the masked positions (confidences sorted descending) pass the rule; may be 0."""
    if cfg.rule == "threshold":
        return int((conf_sorted >= cfg.threshold).sum())
    # Fast-dLLM factor rule: largest n with (n + 1) * (1 - c_n) < factor
    ranks = torch.arange(2, len(conf_sorted) + 2, device=conf_sorted.device)
    ok = (ranks * (1 - conf_sorted) < cfg.factor).nonzero()
    return int(ok.max()) + 1 if len(ok) else 0


def choose(positions: list[int], order: list[int], n: int, fallback: str) -> list[int]:
    """The positions a step commits, most confident first: of `positions` (ascending) ranked by
    `order` (indices into them, most confident first), the n that pass the rule; with none, the
    leftmost one or the most confident one, as `fallback` says."""
    if n == 0:
        return positions[:1] if fallback == "leftmost" else [positions[order[0]]]
    return [positions[j] for j in order[:n]]


class Sampler:
    def __init__(self, model, tokenizer: Tokenizer, cfg: SamplerConfig | None = None):
        self.model, self.tok, self.cfg = model, tokenizer, cfg or SamplerConfig()
        self.device = next(model.parameters()).device
        # graphed_step.GraphedStep: `step` replays it for the calls it fits (CUDA; `use_cuda_graph`)
        self.graphed = None
        self.graphed_steps = 0
        V = model.cfg.vocab_size
        ban = torch.zeros(V, dtype=torch.bool)
        ban[[i for i in tokenizer.special_ids if i != tokenizer.eos_id]] = True
        ban[tokenizer.vocab_size:] = True  # padding rows of the embedding
        self.ban = ban.to(self.device)
        # tokens holding a line break: in line mode, positions after a committed one are not needed
        self.token_text = [tokenizer.decode([i]) for i in range(tokenizer.vocab_size)]
        nl = torch.zeros(V, dtype=torch.bool)
        nl[[i for i, t in enumerate(self.token_text) if "\n" in t]] = True
        self.newline = nl.to(self.device)
        self.newline_ids = frozenset(nl.nonzero().squeeze(1).tolist())
        self._heal_masks: dict[str, torch.Tensor] = {}

    def heal_mask(self, left: str) -> torch.Tensor:
        """bool (V,): the tokens that may come next while `left` (the rest of the healed text) is
        still to be written: those whose text starts with all of it; only when there is none, the
        non-empty starts of it (a word split into pieces the tokenizer would not make, `ret` +
        `ur`, is one the model then fails to recognise: it wrote `return` after them)."""
        m = self._heal_masks.get(left)
        if m is None:
            banned = self.ban.cpu()
            m = torch.zeros(len(banned), dtype=torch.bool)
            for whole in (True, False):
                m[: len(self.token_text)] = torch.tensor(
                    [t.startswith(left) if whole else (t != "" and left.startswith(t)) for t in self.token_text])
                m &= ~banned
                m[self.tok.eos_id] = False
                if m.any():
                    break
            m = m.to(self.device)
            if len(self._heal_masks) >= 256:
                self._heal_masks.clear()
            self._heal_masks[left] = m
        return m

    def heal_rest(self, left: str, token: int) -> str:
        """What of the healed text `left` is still to be written after `token` (a heal_mask token)."""
        written = self.token_text[token]
        return "" if written.startswith(left) else left[len(written):]

    def new_cache(self) -> KVCache:
        return KVCache.for_model(self.model)

    def use_cuda_graph(self) -> bool:
        """Serve the decoding steps that fit it from a captured CUDA graph of the forward
        (`graphed_step.graphed_step`): what the core and the language server do on CUDA. False (and
        eager steps) where there is none: CPU, causal and shift models, DLLM_LS_GRAPHED_STEP=0,
        a failed capture."""
        from .graphed_step import graphed_step

        self.graphed = graphed_step(self)
        return self.graphed is not None

    def step(self, clean: torch.Tensor, block: torch.Tensor, cache: KVCache,
             rows: torch.Tensor | None = None) -> torch.Tensor:
        """`model.step`, through the graphed step when there is one and it fits the call."""
        g = self.graphed
        if g is not None and rows is None and g.fits(clean, block, cache):
            self.graphed_steps += 1
            return g.step(clean, block, cache)
        return self.model.step(clean, block, cache) if rows is None else self.model.step(clean, block, cache, rows=rows)

    def _prepare(self, prefix: str, suffix: str, mode: str, cache: KVCache | None, cfg: SamplerConfig,
                 heal: bool | None = None, device_pos: bool = True):
        """The prompt and the cache reuse shared by `complete` and `begin`; `heal` (default
        `cfg.token_healing`): token healing, its text in `trace.healed` (the stops and the syntax
        guard then see the prefix without it, and the generated text with it). `device_pos`
        False: the cache's device position is left for the caller to set.

        Returns (ctx, crlf, clean token ids not yet cached, max_tokens, cache, trace)."""
        crlf = "\r\n" in prefix or "\r\n" in suffix
        prefix_lf, suffix_lf = prefix.replace("\r\n", "\n"), suffix.replace("\r\n", "\n")
        max_tokens = min(cfg.max_tokens, self.model.cfg.max_seq_len // 2)
        heal = cfg.token_healing if heal is None else heal
        w = cfg.window
        budget = self.model.cfg.max_seq_len - max_tokens - 3 - (MAX_HEAD_TOKENS if heal else 0)
        if w.max_prefix_tokens + w.max_suffix_tokens > budget:  # fit the window to the model
            w = PromptWindow(max_prefix_tokens=budget * 3 // 4, max_suffix_tokens=budget // 4,
                             anchor_chars=w.anchor_chars, chars_per_token=w.chars_per_token)
        prompt, healed = build_healed_prompt(self.tok, prefix_lf, suffix_lf, w, heal=heal)
        ctx = StopContext.from_text(mode, prefix_lf[: len(prefix_lf) - len(healed)], suffix_lf)
        trace = Trace(prompt_tokens=len(prompt), healed=healed)

        cache = cache if cache is not None else self.new_cache()
        reuse = common_prefix_len(cache.tokens, prompt)
        cache.truncate(reuse, device_pos)
        trace.reused_tokens = reuse
        clean = prompt[reuse:]
        # the logits of the last prompt token are not cached (AR: the first token's; shift: the block's first)
        if (self.model.cfg.causal or self.model.cfg.shift) and reuse == len(prompt):
            cache.truncate(reuse - 1, device_pos)
            clean = prompt[reuse - 1:]
        return ctx, crlf, clean, max_tokens, cache, trace

    def begin(self, prefix: str, suffix: str = "", mode: str = "line", cache: KVCache | None = None,
              cfg: SamplerConfig | None = None, language: str = "python") -> "DecodeState":
        """Start a block-diffusion completion as a resumable `DecodeState` (for the core's scheduler,
        which interleaves the steps of many requests). Not for causal (AR baseline) models.
        `language` (an LSP languageId) decides whether `cfg.syntax_guard` applies (Python only)."""
        if self.model.cfg.causal:
            raise ValueError("Sampler.begin: the AR baseline decodes with complete()")
        cfg = cfg or self.cfg
        t0 = time.perf_counter()
        ctx, crlf, clean, max_tokens, cache, trace = self._prepare(prefix, suffix, mode, cache, cfg)
        guard = None
        if cfg.syntax_guard:
            from .syntax_guard import SyntaxGuard

            guard = SyntaxGuard.for_request(prefix[: len(prefix) - len(trace.healed)], suffix, language)
            if guard is not None:
                trace.guard_ms = guard.ms
        return DecodeState(self, clean=clean, max_tokens=max_tokens, cache=cache, ctx=ctx, cfg=cfg,
                           trace=trace, crlf=crlf, t0=t0, guard=guard)

    @torch.no_grad()
    def complete(self, prefix: str, suffix: str = "", mode: str = "line", cache: KVCache | None = None,
                 cfg: SamplerConfig | None = None, should_stop: Callable[[], bool] | None = None,
                 language: str = "python") -> Completion:
        """Fill the text between prefix and suffix. mode: "line" or "block" (see stops.py).

        `cache` holds the KV of an earlier prompt of the same document; the longest common token
        prefix is reused and the rest computed, with results equal to a cold start.
        `should_stop` is polled before every model step; when it returns True the call raises
        CompletionCancelled, leaving `cache` valid (it holds only finished clean tokens).
        `language` (an LSP languageId): the syntax guard (`cfg.syntax_guard`) applies to Python only.
        """
        cfg = cfg or self.cfg
        if not self.model.cfg.causal:
            state = self.begin(prefix, suffix, mode, cache, cfg, language)
            while not state.done:
                if should_stop is not None and should_stop():
                    raise CompletionCancelled
                clean, block = state.next_inputs()
                rows = state.rows()
                state.advance(self.step(clean, block, state.cache, rows)[0], rows)
            return state.result()
        t0 = time.perf_counter()
        ctx, crlf, clean, max_tokens, cache, trace = self._prepare(prefix, suffix, mode, cache, cfg)
        stop, text = self._decode_ar(clean, max_tokens, cache, ctx, trace, should_stop, cfg.lookup)
        return self._finish(stop, text, ctx, crlf, trace, t0)

    @staticmethod
    def _cut(stop, text: str, ctx: StopContext) -> tuple[tuple[int, str], str]:
        """The final (stop, LF text) of a finished decoding: what the editor gets (before CRLF)."""
        if stop is None or stop[1] == "eos":  # the text is complete: apply the stops that wait for it
            reason = "max_tokens" if stop is None else "eos"
            stop = find_stop(text, ctx, final=True) or (len(text), reason)
            if stop[1] == "max_tokens" and ctx.mode == "block":
                # out of tokens mid-statement: the editor gets the statements that are whole, or
                # with none (the entries of a literal the prefix opened: `'a': 1,`) the whole lines
                stop = (statement_boundary(text) or text.rfind("\n") + 1, "max_tokens")
        text = text[: stop[0]]
        if text.strip():  # trailing blank lines and spaces are noise in an editor
            text = text.rstrip()
        return stop, text

    def _finish(self, stop, text: str, ctx: StopContext, crlf: bool, trace: Trace, t0: float) -> Completion:
        stop, text = self._cut(stop, text, ctx)
        # the healed text is the user's own: the answer is what follows it (nothing when the
        # decoding ended before writing all of it)
        text = text[len(trace.healed):] if text.startswith(trace.healed) else ""
        if crlf:
            text = text.replace("\n", "\r\n")
        trace.ms = (time.perf_counter() - t0) * 1000
        return Completion(text=text, stop=stop[1], trace=trace)

    def _text(self, ids: list[int]) -> str:
        return self.tok.decode(ids).replace("\r\n", "\n")

    def _decode_ar(self, clean, max_tokens, cache, ctx, trace, should_stop=None, lookup: int = 0):
        """Greedy next-token decoding for the autoregressive baseline (causal=True models). With
        `lookup` > 0 each forward also verifies up to that many tokens drafted from the context
        (`copy_prior.draft_host`): the drafted tokens equal to the greedy ones are kept, with the
        model's own next token after them (`trace.per_step`: the tokens of each step)."""
        generated: list[int] = []
        text = ""
        heal_left = trace.healed  # token healing: the next tokens must write this text again
        eos = self.tok.eos_id
        while len(generated) < max_tokens:
            if should_stop is not None and should_stop():
                raise CompletionCancelled
            room = min(max_tokens - len(generated) - 1, self.model.cfg.max_seq_len - cache.length - len(clean))
            draft = (copy_prior.draft_host(cache.tokens + clean, lookup)[:room]  # (not in the prompt's step)
                     if lookup and generated and not heal_left and room > 0 else [])
            start = cache.length
            inp = torch.tensor([clean + draft], device=self.device)
            logits = (self.model.extend(inp, cache, all_logits=True)[0, len(clean) - 1:] if draft
                      else self.model.extend(inp, cache))  # (1 + len(draft), V)
            cache.append_tokens(clean + draft)
            logits.masked_fill_(self.ban, float("-inf"))
            trace.steps += 1
            n = 0
            for i in range(len(draft) + 1):  # the model's token after clean and draft[:i]
                if heal_left:
                    logits[i].masked_fill_(~self.heal_mask(heal_left), float("-inf"))
                t = int(logits[i].argmax())
                if heal_left:
                    heal_left = self.heal_rest(heal_left, t)
                n += 1
                trace.tokens += 1
                if t == eos:
                    trace.per_step.append(n)
                    return (len(text), "eos"), text
                generated.append(t)
                text = self._text(generated)
                s = find_stop(text, ctx, final=False)
                if s is not None:
                    trace.per_step.append(n)
                    return s, text
                if i == len(draft) or draft[i] != t:  # the next drafted token is not the model's: stop
                    break
            trace.per_step.append(n)
            cache.truncate(start + len(clean) + n - 1)  # clean and the drafted tokens kept (= generated)
            clean = [generated[-1]]
        return None, text


class DecodeState:
    """One request's block decoding as a resumable state machine, so that a scheduler can run the
    denoising steps of many requests in one batched forward (service.py) and `Sampler.complete`
    is a thin loop over it:

        while not state.done:
            clean, block = state.next_inputs()    # (1, n) clean ids to append, (1, b) the block
            state.advance(model.step(clean, block, state.cache)[0])   # logits (b, V)
        completion = state.result()

    Block after block: a block starts as b masks; each step commits the masked positions whose
    confidence passes the rule (>= 1). The previous block (or the prompt) is the `clean` input of
    the next block's first step, so its exact KV enters the cache in that forward. Between steps
    the cache holds only finished clean tokens (`cache.length == len(cache.tokens)`), so a
    request can be dropped there and its cache kept.
    """

    def __init__(self, sampler: Sampler, *, clean: list[int], max_tokens: int, cache: KVCache,
                 ctx: StopContext, cfg: SamplerConfig, trace: Trace, crlf: bool, t0: float, guard=None):
        self.sampler, self.cache, self.ctx, self.cfg, self.trace = sampler, cache, ctx, cfg, trace
        self.max_tokens, self.crlf, self.t0 = max_tokens, crlf, t0
        self.guard = guard  # syntax_guard.SyntaxGuard, or None
        # the commit fallback of this request, "mode" resolved ("leftmost" or "confident")
        self.fallback = cfg.fallback if cfg.fallback != "mode" else "confident" if ctx.mode == "line" else "leftmost"
        self.revise = cfg.revise if ctx.mode == "block" else 0.0  # block mode only
        self.copy = cfg.copy if ctx.mode == "block" else 0.0  # block mode only
        self.generated: list[int] = []
        self.stop: tuple[int, str] | None = None
        self.text = ""
        self.done = False
        # token healing: the healed text still to be written; until it is, blocks are one token
        # long and that token's logits are limited to heal_mask, so each healed token is clean
        # context (in the cache) for the rest: in a block, the weak model repeated it ("return" +
        # "return result")
        self.heal_left = trace.healed
        self._new_block(clean)

    def _new_block(self, clean: list[int]):
        # the block's state lives on the host: b small ints read and changed every step, where
        # tensors would cost a launch per operation and a device sync per read on CUDA
        self.b = min(1 if self.heal_left else self.cfg.block_size, self.max_tokens - len(self.generated))
        self.clean = clean  # enters the cache in the block's first step
        self.block = [self.sampler.tok.mask_id] * self.b
        self.masked = [True] * self.b
        self.first = True

    def next_inputs(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The next forward's inputs: clean ids (1, n) to append to the cache, the block (1, b)."""
        n = len(self.clean) if self.first else 0
        dev = self.sampler.device
        clean_t = torch.tensor([self.clean[:n]], dtype=torch.long, device=dev).view(1, n)
        return clean_t, torch.tensor([self.block], dtype=torch.long, device=dev)

    def _candidates(self) -> list[int]:
        """The masked positions this step may commit, ascending; in line mode those before the
        first committed line break (as `kernels.block_update.line_candidates`)."""
        cand = [i for i, m in enumerate(self.masked) if m]
        if self.ctx.mode == "line":
            nl = self.sampler.newline_ids
            brk = next((i for i, (t, m) in enumerate(zip(self.block, self.masked)) if not m and t in nl), None)
            if brk is not None and cand and brk > cand[0]:
                cand = [i for i in cand if i < brk]
        return cand

    def rows(self) -> torch.Tensor | None:
        """The block positions whose logits the next `advance` reads (the commit candidates,
        ascending), for `model.step(..., rows=)`, which then runs its head over those only;
        None when it needs them all (on CUDA, where the fused commit takes the whole block, with
        a graphed step, a model without `step_rows`, or revising or the copy prior, which read
        the committed positions too)."""
        s = self.sampler
        if (s.device.type == "cuda" or s.graphed is not None or not getattr(s.model, "step_rows", False)
                or self.revise > 0 or self.copy > 0):
            return None
        return torch.tensor(self._candidates(), dtype=torch.long)

    def advance(self, logits: torch.Tensor, rows: torch.Tensor | None = None) -> bool:
        """Take the block's logits (b, V) from the forward over `next_inputs()`, or with `rows`
        (this step's `rows()`) the logits of those positions (len(rows), V); returns `done`."""
        s, cfg, trace = self.sampler, self.cfg, self.trace
        if self.first:
            self.cache.append_tokens(self.clean)
            self.first = False
        cand = self._candidates()
        if self.heal_left:  # a one-token block: it may only write the healed text on
            logits[0].masked_fill_(~s.heal_mask(self.heal_left), float("-inf"))
        # chosen: the positions to commit, most confident first; pred: the token per position
        if rows is not None:  # the candidates' logits only: the same numbers, fewer rows
            conf, pred_rows = confidence(logits.masked_fill(s.ban, float("-inf")), cfg.confidence)
            order = conf.argsort(descending=True, stable=True)
            at = rows.tolist()
            chosen = choose(at, order.tolist(), commit_count(conf[order], cfg), self.fallback)
            pred = list(self.block)
            for r, t in zip(at, pred_rows.tolist()):
                pred[r] = t
        elif use_triton(logits) and not self.copy:  # one fused pass over the vocabulary (kernels/commit.py)
            from ..kernels.commit import fused_commit

            mask = torch.zeros(self.b, dtype=torch.bool)
            mask[cand] = True
            pred_t, conf_t, chosen_t = fused_commit(logits, mask.to(logits.device, non_blocking=True), ban=s.ban,
                                                    kind=cfg.confidence, rule=cfg.rule, threshold=cfg.threshold,
                                                    factor=cfg.factor, fallback=self.fallback)
            # one read back: the tokens (exact in float64), the confidences, the commit mask
            pred, conf, chose = torch.stack([pred_t.double(), conf_t.double(), chosen_t.double()]).tolist()
            pred = [int(t) for t in pred]
            chosen = sorted((i for i in range(self.b) if chose[i]), key=lambda i: -conf[i])  # stable
        else:
            conf, pred_t = confidence(logits.masked_fill(s.ban, float("-inf")), cfg.confidence)
            pred = pred_t.tolist()
            if self.copy > 0 and not self.heal_left:  # the copy prior's positions pass the rule
                extra = copy_prior.extra_host(self.cache.tokens, self.block, self.masked, pred, conf.tolist(),
                                              self.copy)
                if extra:
                    conf = conf.clone()
                    conf[extra] = 1.0
            idx = torch.tensor(cand, dtype=torch.long, device=logits.device)
            order = conf[idx].argsort(descending=True, stable=True)
            chosen = choose(cand, order.tolist(), commit_count(conf[idx][order], cfg), self.fallback)
        n = len(chosen)
        if self.revise > 0 and rows is None:  # after the commit rule: this step's candidates stay
            self._revise(pred, conf)
        saved = (list(self.block), list(self.masked)) if self.guard is not None else None
        stop = self._commit(chosen, pred)
        if self.guard is not None and self.guard.check(*self._judged(stop)):
            # the step's commits open a new syntax error: remask them and redo the step (same
            # logits) committing only the most confident position
            fired = True
            if n > 1:
                self._restore(saved)
                n = 1
                stop = self._commit(chosen[:1], pred)
                trace.guard_redone += 1
                fired = self.guard.check(*self._judged(stop))
            if fired:  # one commit, and it opens an error too: its runner-up tokens, else keep it
                stop = self._guard_alternatives(logits, rows, chosen[0], pred, saved, stop)
        if self.guard is not None:
            trace.guard_ms = self.guard.ms
        if self.heal_left:
            self.heal_left = s.heal_rest(self.heal_left, self.block[0])
        return self._end_step(n, stop)

    def _end_step(self, n: int, stop) -> bool:
        """Count a step that committed n positions; when its block is finished (or `stop` ends the
        text), keep the block and start the next one, or end. Returns `done`."""
        trace = self.trace
        trace.steps += 1
        trace.tokens += n
        trace.per_step.append(n)
        if stop is None and True in self.masked:
            return False
        # the block is finished (or the text stops inside it)
        ids = list(self.block)
        self.generated += ids
        trace.blocks += 1
        self.stop = stop
        if stop is not None or len(self.generated) >= self.max_tokens:
            self.done = True
        else:
            self._new_block(ids)
        return self.done

    def _revise(self, pred: list[int], conf) -> None:
        """Committed positions whose argmax now differs, with confidence >= self.revise, take it
        (as `kernels.block_update`; eos neither replaced nor written, so the text's end stays)."""
        eos = self.sampler.tok.eos_id
        conf = conf.tolist() if torch.is_tensor(conf) else conf
        for i in range(self.b):
            if (not self.masked[i] and pred[i] != self.block[i]
                    and self.block[i] != eos and pred[i] != eos and conf[i] >= self.revise):
                self.block[i] = pred[i]

    def _restore(self, saved: tuple[list[int], list[bool]]):
        self.block, self.masked = list(saved[0]), list(saved[1])

    def _commit(self, chosen: list[int], pred: list[int]) -> tuple[int, str] | None:
        """Commit pred at `chosen`, fill after a committed eos, set `self.text` (the contiguous
        committed text) and return the stop found on it (or None)."""
        s, block, masked = self.sampler, self.block, self.masked
        eos_id = s.tok.eos_id
        for i in chosen:
            block[i] = pred[i]
            masked[i] = False
        # an eos ends the text: positions after the first committed eos are not needed
        j = next((i for i, (t, m) in enumerate(zip(block, masked)) if t == eos_id and not m), None)
        if j is not None:
            block[j + 1:] = [eos_id] * (self.b - j - 1)
            masked[j + 1:] = [False] * (self.b - j - 1)
        # stops on the contiguous committed text
        done = masked.index(True) if True in masked else self.b
        head = block[:done]
        if eos_id in head:
            self.text = s._text(self.generated + head[: head.index(eos_id)])
            return (len(self.text), "eos")
        self.text = s._text(self.generated + head)
        return find_stop(self.text, self.ctx, final=False)

    def _guard_alternatives(self, logits, rows, p: int, pred: list[int], saved, stop):
        """The single commit at position `p` opens a new syntax error: try the position's next most
        likely tokens (`cfg.syntax_guard_alternatives` of them, same logits) and keep the first
        that opens none; when none does, keep the model's token (decoding must progress)."""
        s, trace, k = self.sampler, self.trace, self.cfg.syntax_guard_alternatives
        if k > 0:
            row = logits[p] if rows is None else logits[rows.tolist().index(p)]
            row = row.float().masked_fill(s.ban, float("-inf"))
            top = row.topk(min(k + 1, row.numel()))
            for t, v in zip(top.indices.tolist(), top.values.tolist()):
                if t == pred[p]:
                    continue
                if v == float("-inf"):
                    break
                self._restore(saved)
                alt = list(pred)
                alt[p] = t
                st = self._commit([p], alt)
                # only a token whose text is judged and passes: not one that merely postpones the
                # judgement (a line break replaced by more text)
                if not self.guard.check(*self._judged(st)) and self.guard.judged_now:
                    trace.guard_replaced += 1
                    return st
            self._restore(saved)
            stop = self._commit([p], pred)
            self.guard.check(*self._judged(stop))  # fires again: the same text as before
        self.guard.accept()
        trace.guard_kept += 1
        return stop

    def _judged(self, stop) -> tuple[str, bool]:
        """(text, final) for the syntax guard: the completion as the editor gets it once the
        decoding ends with this step (a stop, or the last block finished), else the committed text."""
        final = stop is not None or (True not in self.masked and len(self.generated) + self.b >= self.max_tokens)
        if final:
            return self.sampler._cut(stop, self.text, self.ctx)[1], True
        return self.text, False

    def result(self) -> Completion:
        if not self.done:
            raise RuntimeError("DecodeState.result() before the decoding is done")
        return self.sampler._finish(self.stop, self.text, self.ctx, self.crlf, self.trace, self.t0)
