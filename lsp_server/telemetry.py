"""Local counters of what the server showed and what the user accepted.

Nothing leaves the machine: the counters answer the `dllm.telemetry` command (an editor can show
them, a benchmark reads them) and are written to the log at shutdown.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field


def percentile(values, q: float) -> float:
    """The q-th percentile (0-100) by linear interpolation; 0.0 for no values."""
    v = sorted(values)
    if not v:
        return 0.0
    k = (len(v) - 1) * q / 100
    lo = int(k)
    hi = min(lo + 1, len(v) - 1)
    return v[lo] + (v[hi] - v[lo]) * (k - lo)


@dataclass(kw_only=True)
class Telemetry:
    requests: int = 0  # inline completion requests answered
    shown: int = 0  # requests answered with at least one item
    cache_hits: int = 0  # answered from the suggestion the user is typing into
    superseded: int = 0  # dropped for a newer request on the same document
    cancelled: int = 0  # cancelled by the client
    errors: int = 0
    accepted: int = 0  # items the user accepted (the item's command ran)
    accepted_chars: int = 0
    latencies_ms: deque = field(default_factory=lambda: deque(maxlen=500))  # computed answers
    # the last core answer's trace: steps, tokens, prompt_tokens, reused_tokens (prompt KV taken
    # from the document's cache), queue_ms, compute_ms (a benchmark reads it after each request)
    last_core: dict = field(default_factory=dict)

    def snapshot(self) -> dict:
        lat = list(self.latencies_ms)
        return {
            "requests": self.requests, "shown": self.shown, "cache_hits": self.cache_hits,
            "superseded": self.superseded, "cancelled": self.cancelled, "errors": self.errors,
            "accepted": self.accepted, "accepted_chars": self.accepted_chars,
            "acceptance_rate": round(self.accepted / self.shown, 4) if self.shown else 0.0,
            "latency_p50_ms": round(percentile(lat, 50), 1), "latency_p95_ms": round(percentile(lat, 95), 1),
            "last_core": dict(self.last_core),
        }
