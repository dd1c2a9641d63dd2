"""When to run a Triton kernel, and small helpers shared by the launchers and benchmarks."""

from __future__ import annotations

import importlib.util
import os
from functools import lru_cache

import torch


@lru_cache(maxsize=1)
def has_triton() -> bool:
    """Triton is importable (it ships with CUDA builds of torch; CPU wheels lack it)."""
    if os.environ.get("DLLM_LS_NO_TRITON") == "1":
        return False
    return importlib.util.find_spec("triton") is not None


def interpreting() -> bool:
    """TRITON_INTERPRET=1: kernels run on CPU tensors through Triton's interpreter (tests)."""
    return os.environ.get("TRITON_INTERPRET") == "1"


_CHECKED: set = set()


def use_triton(t: torch.Tensor) -> bool:
    """The automatic choice: Triton for CUDA tensors when it is installed, the torch path elsewhere.
    (The interpreter is only for tests, which call the `*_triton` launchers directly.) The first
    time on a device, the inference kernels are run once against their references: a GPU or a
    Triton build they do not work on gets the references, with a warning, not a failing request."""
    if not (t.is_cuda and has_triton()):
        return False
    if t.device not in _CHECKED:
        _CHECKED.add(t.device)
        err = self_check(t.device, ("block_attention", "commit", "rope_kv", "block_update", "swiglu"))
        if err:
            import logging

            logging.getLogger("dllm_ls.kernels").warning("Triton kernels off, torch references instead: %s", err)
            disable_triton()
            return False
    return has_triton()


def next_pow2(n: int) -> int:
    return 1 << max(0, int(n) - 1).bit_length()


def bench_ms(fn, warmup: int = 5, rep: int = 50, graph: bool = False) -> float:
    """Median milliseconds per call: triton.testing.do_bench on CUDA, wall clock elsewhere. `graph`:
    the calls replayed from a CUDA graph (do_bench_cudagraph), as the decoders run them: the device
    time without the host's launch cost (Python launchers cost more than these kernels run)."""
    if torch.cuda.is_available() and has_triton():
        from triton.testing import do_bench, do_bench_cudagraph

        if graph:
            try:
                return float(do_bench_cudagraph(fn, rep=rep, return_mode="median"))
            except Exception:  # noqa: BLE001 - not capturable (a host sync): timed eagerly
                torch.cuda.synchronize()
        return float(do_bench(fn, warmup=warmup, rep=rep, return_mode="median"))
    import statistics
    import time

    for _ in range(warmup):
        fn()
    times = []
    for _ in range(max(3, rep // 10)):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def time_providers(key: dict, providers: dict, nbytes: int | None = None, peak: bool = False,
                   warmup: int = 5, rep: int = 50, graph: bool = False) -> list[dict]:
    """The rows of a kernel's bench(): one per provider (a falsy one: not available here), `key` (kernel and
    shape) with the median ms (`graph`: replayed from a CUDA graph, see bench_ms), GB/s over `nbytes`
    and, with `peak` on CUDA, the peak MiB allocated during the runs; a provider that fails gets
    its error and the others still run."""
    rows = []
    for name, fn in providers.items():
        if not fn:
            continue
        row = {**key, "provider": name}
        cuda = peak and torch.cuda.is_available()
        try:
            if cuda:
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
                base = torch.cuda.memory_allocated()
            ms = bench_ms(fn, warmup=warmup, rep=rep, graph=graph)
        except Exception as e:  # noqa: BLE001 - report, keep benchmarking the others
            rows.append({**row, "error": str(e)[:200]})
            continue
        row["ms"] = round(ms, 4)
        if nbytes:
            row["GB/s"] = round(nbytes / ms / 1e6, 1)
        if cuda:
            row["peak_MiB"] = round((torch.cuda.max_memory_allocated() - base) / 2**20, 1)
        rows.append(row)
    return rows


def compiled(fn):
    """torch.compile(fn) for the benchmarks' third provider; None where compile is unusable."""
    try:
        return torch.compile(fn)  # recompiles once as dynamic when the shape changes
    except Exception:  # noqa: BLE001 - a benchmark provider that cannot run is skipped
        return None


def disable_triton():
    """Use the torch references from now on (a failed self-check)."""
    os.environ["DLLM_LS_NO_TRITON"] = "1"
    has_triton.cache_clear()


def self_check(device, kernels=("block_attention", "commit", "rope_kv", "block_update", "swiglu", "fused_ce")
               ) -> str | None:
    """Run each Triton kernel once on small inputs against its reference; None when all agree, else
    what went wrong (the caller then runs the references rather than not at all). "copy_prior" is
    checked on its own, by the graphed decoder that uses it, so that it alone falls back."""
    if not (has_triton() and torch.device(device).type == "cuda"):
        return None
    try:
        from .block_attention import block_attention_reference, block_attention_triton
        from .commit import fused_commit_reference, fused_commit_triton
        from .fused_ce import fused_linear_cross_entropy, fused_linear_cross_entropy_reference
        from .rope_kv import rope_kv_reference, rope_kv_triton

        g = torch.Generator(device="cpu").manual_seed(0)
        if "block_attention" in kernels:
            q, k, v = (torch.randn(1, 2, n, 64, generator=g).to(device) for n in (5, 300, 300))
            sm = torch.ones(5, 5, dtype=torch.bool, device=device).tril()
            for cache_len in (290, torch.tensor([290], device=device)):
                got = block_attention_triton(q, k, v, cache_len, sm)
                if not torch.allclose(got, block_attention_reference(q, k, v, 290, sm), atol=1e-4, rtol=1e-4):
                    return "block_attention disagrees with its reference"
        if "commit" in kernels:
            x = torch.randn(6, 1000, generator=g).to(device)
            m = torch.tensor([1, 1, 0, 1, 0, 1], dtype=torch.bool, device=device)
            a, b = fused_commit_triton(x, m, threshold=0.01), fused_commit_reference(x, m, threshold=0.01)
            if not (torch.equal(a[0], b[0]) and torch.equal(a[2], b[2]) and torch.allclose(a[1], b[1], atol=1e-5)):
                return "fused_commit disagrees with its reference"
        if "rope_kv" in kernels:
            qkv = torch.randn(5, 3 * 2 * 64, generator=g).to(device)
            ang = torch.rand(5, 32, generator=g)
            cos, sin = ang.cos().to(device), ang.sin().to(device)
            caches = [torch.zeros(2, 2, 9, 64, device=device) for _ in range(2)]
            slots = torch.tensor([8, 0, 3, 4, 1], device=device)
            x = torch.randn(5, 2 * 64, generator=g).to(device)  # the norm rides along, as decoding runs it
            qa = rope_kv_triton(qkv, cos, sin, caches[0][0], caches[0][1], slots, 2, x=x)
            qb = rope_kv_reference(qkv, cos, sin, caches[1][0], caches[1][1], slots, 2, x=x)
            if not (torch.allclose(qa, qb, atol=1e-5) and torch.allclose(caches[0], caches[1], atol=1e-5)):
                return "rope_kv disagrees with its reference"
        if "block_update" in kernels:
            from .block_update import (BlockState, block_update_reference, block_update_triton,
                                       step_inputs_reference, step_inputs_triton)

            def state():
                z = torch.zeros((), dtype=torch.long, device=device)
                return BlockState(torch.tensor([5, 6, 7, 3, 3, 3], device=device),
                                  torch.tensor([True, True, True], device=device),
                                  torch.tensor([True, True, False], device=device), z + 1, z + 4, z + 9, z + 20,
                                  torch.tensor(False, device=device), torch.zeros(16, dtype=torch.bool, device=device),
                                  torch.zeros(8, dtype=torch.long, device=device))

            sa, sb = state(), state()
            toks, conf = torch.tensor([9, 2, 4], device=device), torch.tensor([0.3, 0.95, 0.2], device=device)
            block_update_triton(toks, conf, sa, eos_id=2, mask_id=3, max_seq_len=100)
            block_update_reference(toks, conf, sb, eos_id=2, mask_id=3, max_seq_len=100)
            if not all(torch.equal(getattr(sa, k), getattr(sb, k)) for k in vars(sa)):
                return "block_update disagrees with its reference"
            args = (sa.pos, sa.n_prev, sa.active, 100, 104)
            if not all(torch.equal(x, y) for x, y in zip(step_inputs_triton(*args), step_inputs_reference(*args))):
                return "step_inputs disagrees with its reference"
        if "swiglu" in kernels:
            from .swiglu import swiglu_reference, swiglu_triton

            gu, x = torch.randn(3, 2 * 70, generator=g).to(device), torch.randn(3, 50, generator=g).to(device)
            if not torch.allclose(swiglu_triton(gu, x), swiglu_reference(gu, x), atol=1e-5, rtol=1e-5):
                return "swiglu disagrees with its reference"
        if "copy_prior" in kernels:
            from .copy_prior import copy_boost_reference, copy_boost_triton

            # the text 5 6 7 8 5 6 | block [7 ? ?]: the draft 8 5 6; the predictions agree on 8 and 5
            t = lambda x: torch.tensor(x, device=device)
            args = (t([5, 6, 7, 8, 0, 0, 0, 0, 0, 0, 0]), t(4), t(2), t([5, 6, 0, 7, 3, 3]), t([False, True, True]),
                    t([7, 8, 5]), t([0.2, 0.6, 0.7]), t(False))
            kw = dict(threshold=0.5, first=False, nmin=2, nmax=4, k=16)
            a = copy_boost_triton(args[0].clone(), *args[1:6], args[6].clone(), args[7], **kw)
            if not torch.equal(a, copy_boost_reference(args[0].clone(), *args[1:], **kw)) or a.tolist() != [0.2, 1, 1]:
                return "copy_boost disagrees with its reference"
            from .copy_prior import draft_triton

            hist = t([5, 6, 7, 8, 5, 0, 0, 0, 0])  # 5 6 7 8 5, then 6: the draft 7 8 5 6
            d, n = draft_triton(hist, t([6]), t(5), nmin=2, nmax=4, k=8)
            if int(n) != 4 or d[:4].tolist() != [7, 8, 5, 6] or hist[5].item() != 6:
                return "draft disagrees with its reference"
        if "fused_ce" in kernels:
            h = torch.randn(40, 64, generator=g).to(device)
            w = torch.randn(1000, 64, generator=g).to(device) * 0.1
            t = torch.randint(0, 1000, (40,), generator=g).to(device)
            if not torch.allclose(fused_linear_cross_entropy(h, w, t), fused_linear_cross_entropy_reference(h, w, t),
                                  atol=1e-4, rtol=1e-4):
                return "fused_linear_cross_entropy disagrees with its reference"
        torch.cuda.synchronize()
    except Exception as e:  # noqa: BLE001 - reported to the caller
        return f"{type(e).__name__}: {e}"[:500]
    return None
