"""The inline-completion logic, free of LSP: queries and suggestions are plain dataclasses.

For one request: apply the selected completion-widget item (if any), cut the prompt window,
answer from the suggestion the user is typing into when possible, otherwise supersede the
document's older request, debounce (automatic triggers), choose single- or multi-line with
tree-sitter, ask the core (several variants when invoked), post-process and remember the result.

Latency machinery, per document:
- newest wins: a new request marks the older one superseded, wakes it from its debounce and
  cancels its core request; the older answers with no items;
- at most one request per document is in the core: the newer one waits for the older to leave
  it (it stops at its next denoising step) before submitting;
- a client's `$/cancelRequest` cancels the handler's task; the CancelledError reaches
  `core.complete`, which stops the request in the core.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from . import syntax
from .core_client import CompletionCancelled, CompletionRequest, CoreClient, CoreError
from .debounce import AdaptiveDebounce
from .postprocess import detect_indent, normalize_eol, postprocess, to_eol
from .settings import Settings
from .telemetry import Telemetry

log = logging.getLogger(__name__)

PREFIX_CHARS = 16_384  # the prompt window sent to the core (the sampler cuts it to its token budget)
SUFFIX_CHARS = 4_096
ANCHOR_CHARS = 4_096  # the window's start moves in steps of this many characters


@dataclass(kw_only=True)
class InlineQuery:
    uri: str
    text: str  # the document
    offset: int  # the cursor, an index into text
    language_id: str = ""
    eol: str = "\n"  # the document's line ending
    invoked: bool = False  # the user asked (Invoked trigger) rather than typed (Automatic)
    selected: tuple[int, int, str] | None = None  # completion-widget item: (start, end, text) it would insert


@dataclass(kw_only=True)
class Suggestion:
    text: str  # replaces text[start:end] of the document (the document's line endings)
    start: int
    end: int
    id: str  # names the suggestion in the accept command
    mode: str  # "line" or "block"
    cached: bool = False  # answered from an earlier suggestion the user is typing into


@dataclass(kw_only=True)
class Variant:
    mode: str
    block_size: int
    threshold: float


def prompt_window(before: str, after: str) -> tuple[str, str, int]:
    """(prefix, suffix, start offset of prefix in the document): anchored, LF line endings.

    The window starts at a line start found from a multiple of ANCHOR_CHARS, so it stays put
    while the user types and the core's cached prompt stays a prefix of the next one.
    """
    start = max(0, len(before) - PREFIX_CHARS)
    start -= start % ANCHOR_CHARS
    if start:
        nl = before.find("\n", start, start + ANCHOR_CHARS)
        start = nl + 1 if nl != -1 else start
    suffix = after
    if len(suffix) > SUFFIX_CHARS:
        cut = suffix.rfind("\n", 0, SUFFIX_CHARS)
        suffix = suffix[:cut + 1] if cut > 0 else suffix[:SUFFIX_CHARS]
    return normalize_eol(before[start:]), normalize_eol(suffix), start


@dataclass(kw_only=True)
class _Shown:
    start: int
    prefix: str
    suffix: str
    texts: list[str]
    modes: list[str]
    invoked: bool  # computed for an Invoked request: holds the alternatives


class SuggestionCache:
    """The last suggestions per document, still valid while the user types into them."""

    def __init__(self):
        self._shown: dict[str, _Shown] = {}

    def store(self, uri: str, start: int, prefix: str, suffix: str, texts: list[str], modes: list[str],
              invoked: bool = False):
        self._shown[uri] = _Shown(start=start, prefix=prefix, suffix=suffix, texts=texts, modes=modes, invoked=invoked)

    def lookup(self, uri: str, start: int, prefix: str, suffix: str, invoked: bool = False) -> list[tuple[str, str]] | None:
        """(remaining text, mode) of each shown suggestion that what was typed since agrees with.
        An Invoked request (the user asks for alternatives) only takes suggestions computed for one."""
        s = self._shown.get(uri)
        if s is None or s.start != start or s.suffix != suffix or not prefix.startswith(s.prefix):
            return None
        if invoked and not s.invoked:
            return None
        typed = prefix[len(s.prefix):]
        rest = [(t[len(typed):], m) for t, m in zip(s.texts, s.modes) if t.startswith(typed) and len(t) > len(typed)]
        return rest or None

    def forget(self, uri: str):
        self._shown.pop(uri, None)


@dataclass(eq=False)
class _Slot:
    """The newest request of a document."""

    superseded: bool = False
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    core_id: int | None = None


class CompletionEngine:
    def __init__(self, core: CoreClient, settings: Settings | None = None, *,
                 on_status: Callable[[str, str, str], None] | None = None, clock=time.monotonic):
        self.core = core
        self.settings = settings or Settings()
        self.debounce = AdaptiveDebounce(self.settings.debounce_ms)
        self.telemetry = Telemetry()
        self.cache = SuggestionCache()
        self.on_status = on_status or (lambda state, message, fix: None)
        self.clock = clock
        self._slots: dict[str, _Slot] = {}
        self._in_core: dict[str, asyncio.Event] = {}  # uri -> set when its core request is over
        self._ids = itertools.count(1)
        self._busy = 0
        self._error: CoreError | None = None

    def configure(self, settings: Settings):
        self.settings = settings
        self.debounce.fixed_ms = settings.debounce_ms

    def keystroke(self, uri: str):
        """The document changed (didChange)."""
        self.debounce.keystroke(self.clock())

    def forget(self, uri: str):
        """The document was closed."""
        self.cache.forget(uri)
        slot = self._slots.pop(uri, None)
        if slot is not None:
            self._supersede(slot)
        self.core.close_document(uri)

    def _supersede(self, slot: _Slot):
        slot.superseded = True
        slot.wake.set()
        if slot.core_id is not None:
            self.core.cancel(slot.core_id)

    async def complete(self, q: InlineQuery) -> list[Suggestion]:
        """The suggestions at the cursor; [] when superseded, disabled or the core cannot answer.

        Raises asyncio.CancelledError when the caller's task is cancelled ($/cancelRequest).
        """
        s = self.settings
        self.telemetry.requests += 1
        if not s.enable or q.language_id in s.disabled_languages:
            return []
        before, after, start, end = q.text[:q.offset], q.text[q.offset:], q.offset, q.offset
        if q.selected is not None:
            start, end, sel = q.selected
            before, after = q.text[:start] + sel, q.text[end:]
        prefix, suffix, window_start = prompt_window(before, after)
        seq = next(self._ids)

        hit = self.cache.lookup(q.uri, window_start, prefix, suffix, q.invoked) if s.suggestion_cache else None
        if hit is not None:
            hit = hit if q.invoked else hit[:1]  # Automatic: one item
            self.telemetry.cache_hits += 1
            self.telemetry.shown += 1
            return self._suggestions(q, hit, start, end, seq, cached=True)

        old = self._slots.get(q.uri)
        slot = _Slot()
        self._slots[q.uri] = slot
        if old is not None:
            self._supersede(old)
        try:
            t0 = self.clock()
            if not q.invoked:
                delay = self.debounce.delay_ms() / 1000
                try:
                    await asyncio.wait_for(slot.wake.wait(), delay)
                except asyncio.TimeoutError:
                    pass
            if slot.superseded:
                self.telemetry.superseded += 1
                return []
            self._set_busy(+1)
            try:
                results = await self._sample(q, slot, prefix, suffix)
            finally:
                self._set_busy(-1)
            if results is None:
                return []
            texts = [t for t, _ in results]
            self.cache.store(q.uri, window_start, prefix, suffix, texts, [m for _, m in results], q.invoked)
            if results:
                self.telemetry.shown += 1
                self.telemetry.latencies_ms.append((self.clock() - t0) * 1000)
            return self._suggestions(q, results, start, end, seq)
        except asyncio.CancelledError:
            self.telemetry.cancelled += 1
            raise
        finally:
            if self._slots.get(q.uri) is slot:
                del self._slots[q.uri]

    async def _sample(self, q: InlineQuery, slot: _Slot, prefix: str, suffix: str) -> list[tuple[str, str]] | None:
        """[(post-processed text, mode)] of every variant, duplicates and empties dropped; None
        when superseded or the core cannot answer."""
        s = self.settings
        lang = syntax.language_id_for(q.uri, q.language_id)
        grammar = syntax.grammar_for(lang)
        modes = tuple(s.modes) if s.mode == "auto" else (s.mode,)
        mode = syntax.choose_mode(prefix, suffix, grammar, modes)
        indent = detect_indent(prefix[-8000:] + suffix[:2000])
        out: list[tuple[str, str]] = []
        for v in self.variants(mode, q.invoked):
            while (gate := self._in_core.get(q.uri)) is not None:  # one request per document in the core
                await gate.wait()
            if slot.superseded:
                self.telemetry.superseded += 1
                return None
            req = CompletionRequest(id=next(self._ids), uri=q.uri, prefix=prefix, suffix=suffix, mode=v.mode,
                                    max_tokens=s.max_tokens, block_size=v.block_size, threshold=v.threshold,
                                    language=lang)
            gate = self._in_core[q.uri] = asyncio.Event()
            slot.core_id = req.id
            try:
                res = await self.core.complete(req)
                self._error = None
            except CompletionCancelled:
                self.telemetry.superseded += slot.superseded
                return None
            except CoreError as e:
                self.telemetry.errors += 1
                if self._error is None or self._error.message != e.message:
                    log.error("%s", e.message)
                self._error = e
                return None
            finally:
                slot.core_id = None
                if self._in_core.get(q.uri) is gate:
                    del self._in_core[q.uri]
                gate.set()
            self.debounce.model_time(res.queue_ms + res.compute_ms)
            self.telemetry.last_core = {k: getattr(res, k) for k in (
                "steps", "tokens", "prompt_tokens", "reused_tokens", "queue_ms", "compute_ms")}
            text = postprocess(res.text, prefix=prefix, suffix=suffix, indent=indent,
                               line_comment=syntax.line_comment_for(lang))
            text = syntax.trim_to_parse(grammar, prefix, text, suffix)
            if text.strip() and text not in [t for t, _ in out]:
                out.append((text, v.mode))
            if slot.superseded:
                self.telemetry.superseded += 1
                return None
        return out

    def variants(self, mode: str, invoked: bool) -> list[Variant]:
        """Automatic: the settings' decode in the chosen mode. Invoked: also the other mode (when
        allowed) and a more careful decode (smaller blocks, a higher threshold)."""
        s = self.settings
        size = {"line": s.line_block_size, "block": s.block_size}
        base = Variant(mode=mode, block_size=size[mode], threshold=s.threshold)
        if not invoked:
            return [base]
        out = [base]
        other = "block" if mode == "line" else "line"
        if s.mode == "auto" and other in s.modes:
            out.append(Variant(mode=other, block_size=size[other], threshold=s.threshold))
        out.append(Variant(mode=mode, block_size=max(1, size[mode] // 4),
                           threshold=round(s.threshold + (1 - s.threshold) / 2, 4)))
        return out[: s.invoked_items]

    def _suggestions(self, q: InlineQuery, results, start: int, end: int, seq: int, cached: bool = False):
        sel = q.selected[2] if q.selected is not None else ""
        return [Suggestion(text=to_eol(sel + text, q.eol), start=start, end=end, id=f"{seq}:{i}", mode=mode,
                           cached=cached) for i, (text, mode) in enumerate(results)]

    @property
    def busy(self) -> bool:
        return self._busy > 0

    def _set_busy(self, delta: int):
        """Status: "busy" while the core works for us, then "ready", or "error" after a failure."""
        was = self._busy
        self._busy += delta
        if was == 0 and self._busy > 0 and self._error is None:
            self.on_status("busy", "", "")
        elif was > 0 and self._busy == 0:
            if self._error is None:
                self.on_status("ready", "", "")
            else:
                self.on_status("error", self._error.message, self._error.fix)

    def accept(self, suggestion_id: str, length: int):
        """The user accepted a suggestion (its command ran)."""
        self.telemetry.accepted += 1
        self.telemetry.accepted_chars += max(0, int(length))
