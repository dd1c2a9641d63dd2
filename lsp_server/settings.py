"""The server's settings: one typed dataclass, read from `initializationOptions` and from
`workspace/didChangeConfiguration` (or pulled with `workspace/configuration`, section "dllm").

Keys may be camelCase (`maxTokens`, editors' convention) or snake_case (`max_tokens`), at the top
level or under a "dllm" object. A wrong value never stops the server: the field keeps its
previous value and `parse_settings` returns a warning naming the key and what it accepts.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field

MODES = ("auto", "line", "block")


@dataclass(kw_only=True)
class Settings:
    enable: bool = True
    """Offer inline completions at all (false: every request answers with no items)."""

    inline_completion: bool = False
    """Serve `textDocument/inlineCompletion` to a client that does not declare the capability
    (Neovim before 0.12 with a plugin that sends the request itself). Read at initialize only."""

    debounce_ms: int | None = None
    """Wait this long after a keystroke before completing (automatic triggers only); null or
    "auto": adaptive, from the user's typing rhythm and the model's speed (see debounce.py)."""

    max_tokens: int = 64
    """Most tokens a completion may have (1-1024)."""

    block_size: int = 32
    """Tokens denoised in parallel per block (1-256); 1 is autoregressive decoding."""

    line_block_size: int = 8
    """The block size of single-line completions (1-256): a line is ~13 tokens, and a smaller block
    makes each step cheaper (Q1, 300 tasks on CPU, side by side: 8 -> 23/300 at p50 350 ms,
    16 -> 21/300 at 388 ms; 32 -> 21/300, 18% slower than 16)."""

    threshold: float = 0.9
    """Commit every masked position at least this confident per step (0-1); lower is faster."""

    mode: str = "auto"
    """"auto" (tree-sitter decides single- or multi-line at the cursor), "line" or "block"."""

    modes: list[str] = field(default_factory=lambda: ["line", "block"])
    """The modes "auto" may choose from: ["line"] never writes more than the current line."""

    suggestion_cache: bool = True
    """Answer from the suggestion the user is typing into without asking the model (off: every
    request reaches the model; benchmarks of the model path turn it off)."""

    invoked_items: int = 3
    """Alternatives computed when the user asks explicitly (Invoked trigger), 1-5."""

    disabled_languages: list[str] = field(default_factory=list)
    """languageIds (e.g. "markdown", "plaintext") in which no completion is offered."""

    core_address: str = "inprocess"
    """Where the diffusion core runs: "inprocess" (in this server), "auto" (the shared core daemon
    on the default socket, started when none runs), or "unix:PATH" (the core daemon on PATH,
    started there when none runs)."""

    checkpoint: str | None = None
    """Model directory (config.json, model.safetensors, tokenizer.json); null: `--checkpoint`,
    else the default model shipped in the package."""

    device: str = "auto"
    """"cpu", "cuda", "cuda:N" or "auto" (a GPU when there is one)."""


# field -> (check, what it accepts) for values that pass the type check
_RANGES = {
    "debounce_ms": (lambda v: v is None or 0 <= v <= 5000, "null, \"auto\" or 0-5000"),
    "max_tokens": (lambda v: 1 <= v <= 1024, "1-1024"),
    "block_size": (lambda v: 1 <= v <= 256, "1-256"),
    "line_block_size": (lambda v: 1 <= v <= 256, "1-256"),
    "threshold": (lambda v: 0.0 <= v <= 1.0, "a number from 0 to 1"),
    "mode": (lambda v: v in MODES, " or ".join(f'"{m}"' for m in MODES)),
    "modes": (lambda v: bool(v) and all(m in ("line", "block") for m in v), 'a non-empty list of "line", "block"'),
    "invoked_items": (lambda v: 1 <= v <= 5, "1-5"),
    "core_address": (lambda v: v in ("inprocess", "auto") or (v.startswith("unix:/") and len(v) > 6),
                     '"inprocess", "auto" or "unix:/ABSOLUTE/PATH"'),
    "device": (lambda v: v in ("auto", "cpu", "cuda") or re.fullmatch(r"cuda:\d+", v) is not None,
               '"auto", "cpu", "cuda" or "cuda:N"'),
}


def _snake(key: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", key).lower()


def _coerce(name: str, value, current):
    """The value converted to the field's type, or raise ValueError."""
    if name == "debounce_ms":
        if value is None or value == "auto":
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError
        return int(value)
    if name == "checkpoint":
        if value is None or value == "":
            return None
        if not isinstance(value, str):
            raise ValueError
        return value
    kind = type(current)
    if kind is bool:
        if not isinstance(value, bool):
            raise ValueError
        return value
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value:
            raise ValueError
        return int(value)
    if kind is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError
        return float(value)
    if kind is list:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ValueError
        return list(value)
    if not isinstance(value, str):
        raise ValueError
    return value


def parse_settings(raw, base: Settings | None = None) -> tuple[Settings, list[str]]:
    """Settings from a client's JSON object, on top of `base`; and one warning per bad key."""
    base = base or Settings()
    if raw is None:
        return base, []
    if not isinstance(raw, dict):
        return base, [f"settings must be a JSON object, got {type(raw).__name__}; using the previous ones"]
    if "dllm" in raw:
        raw = raw["dllm"]
        if raw is None:
            return base, []
        if not isinstance(raw, dict):
            return base, [f"setting dllm must be a JSON object, got {type(raw).__name__}; using the previous ones"]
    known = {f.name: f for f in dataclasses.fields(Settings)}
    if not any(_snake(k) in known for k in raw):
        return base, []  # other servers' sections only: nothing for us
    changes, warnings = {}, []
    for key, value in raw.items():
        name = _snake(key)
        if name not in known:
            warnings.append(f"unknown setting dllm.{key} (ignored); known: "
                            + ", ".join(sorted(known)))
            continue
        current = getattr(base, name)
        try:
            value = _coerce(name, value, current)
            check = _RANGES.get(name)
            if check and not check[0](value):
                raise ValueError
        except ValueError:
            accepts = _RANGES[name][1] if name in _RANGES else type(current).__name__
            warnings.append(f"setting dllm.{key} = {value!r} is invalid (expected {accepts}); "
                            f"keeping {current!r}")
            continue
        changes[name] = value
    return dataclasses.replace(base, **changes), warnings
