"""A decoding step against its physical floor, for `dllm-ls bench speed` (S1) and the scripts that
profile a step: the machine's peaks (spec sheet or measured), the launch overheads, the floor of
one step (`step_floor`), and a graphed decoder's measured step (`time_steps`) and kernel count.
"""

from __future__ import annotations

import time

# dense bf16 FLOP/s and HBM bytes/s by device name (spec sheets); others are measured
SPECS = [("H200", 989e12, 4.8e12), ("H100 NVL", 835e12, 3.9e12), ("H100 PCIe", 756e12, 2.0e12),
         ("H100", 989e12, 3.35e12), ("A100-SXM4-80GB", 312e12, 2.039e12), ("A100", 312e12, 1.555e12),
         ("L40S", 362e12, 0.864e12), ("L4", 121e12, 0.3e12)]


def machine_peaks(device) -> dict:
    """HBM bandwidth and bf16 peak: the spec sheet when the GPU is known, else measured here."""
    import torch

    out = {"name": "cpu", "source": "measured"}
    if device.type == "cuda":
        out["name"] = torch.cuda.get_device_name(device)
        for key, flops, bw in SPECS:
            if key in out["name"]:
                out.update(peak_flops=flops, hbm_bytes_per_s=bw, source=f"spec sheet ({key})")
                break
    m = measure_peaks(device)
    out["measured_bytes_per_s"], out["measured_flops"] = m
    out.setdefault("peak_flops", m[1])
    out.setdefault("hbm_bytes_per_s", m[0])
    return out


def measure_peaks(device) -> tuple[float, float]:
    """(copy bandwidth in bytes/s, matmul FLOP/s) measured on the device."""
    import torch

    from ..kernels._triton import bench_ms

    cuda = device.type == "cuda"
    n = (256 if cuda else 32) << 20
    x = torch.empty(n, dtype=torch.uint8, device=device)
    y = torch.empty_like(x)
    bw = 2 * n / (bench_ms(lambda: y.copy_(x)) / 1000)
    k = 8192 if cuda else 512
    dt = torch.bfloat16 if cuda else torch.float32
    a = torch.randn(k, k, device=device, dtype=dt)
    flops = 2 * k ** 3 / (bench_ms(lambda: a @ a) / 1000)
    return bw, flops


def launch_overheads(device) -> dict:
    """ms of one CUDA-graph replay of one tiny kernel, per extra kernel in a graph, and per eager launch."""
    import torch

    if device.type != "cuda":
        return {"graph_launch_ms": 0.0, "per_kernel_in_graph_ms": 0.0, "eager_launch_ms": 0.0}
    x = torch.zeros(1, device=device)

    def graph_of(n):
        s = torch.cuda.Stream()
        s.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(s):
            x.add_(1)
        torch.cuda.current_stream().wait_stream(s)
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g):
            for _ in range(n):
                x.add_(1)
        return g

    def per_call(fn, n=200):
        for _ in range(10):
            fn()
        torch.cuda.synchronize()
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        for _ in range(n):
            fn()
        b.record()
        b.synchronize()
        return a.elapsed_time(b) / n

    g1, g100 = graph_of(1), graph_of(100)
    one, hundred = per_call(g1.replay), per_call(g100.replay, 50)
    return {"graph_launch_ms": one, "per_kernel_in_graph_ms": max(0.0, (hundred - one) / 99),
            "eager_launch_ms": per_call(lambda: x.add_(1))}


def count_kernels(dec) -> int | None:
    """CUDA kernels (and memcpy/memset) one eager step of a graphed decoder launches."""
    import torch

    if not dec.cuda:
        return None
    try:
        from torch.profiler import ProfilerActivity, profile

        dec._scratch_state()
        with torch.no_grad():
            dec._step()
            torch.cuda.synchronize()
            with profile(activities=[ProfilerActivity.CUDA]) as prof:
                dec._step()
                torch.cuda.synchronize()
        dec.cache.reset()
        return sum(1 for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA)
    except Exception:  # noqa: BLE001 - the count is informative only
        return None


def step_floor(model, tokens_per_step: int, head_rows: int, context: float, peaks: dict, launch_ms: float) -> dict:
    """The physical floor of one step (ms): max(bytes / bandwidth, FLOPs / peak) + one graph launch."""
    cfg = model.cfg
    elt = next(model.parameters()).element_size()
    weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    kv_bytes = 2 * cfg.n_layer * cfg.dim * context * elt
    dense = cfg.n_params(include_embedding=False) - cfg.dim  # the layers' matmuls (norm weights aside)
    flops = (2 * dense * tokens_per_step + 2 * cfg.vocab_size * cfg.dim * head_rows
             + 4 * cfg.n_layer * cfg.dim * tokens_per_step * (context + tokens_per_step))
    mem_ms = (weight_bytes + kv_bytes) / peaks["hbm_bytes_per_s"] * 1000
    compute_ms = flops / peaks["peak_flops"] * 1000
    return {"weight_bytes": weight_bytes, "kv_bytes": int(kv_bytes), "flops": flops, "memory_ms": mem_ms,
            "compute_ms": compute_ms, "launch_ms": launch_ms, "floor_ms": max(mem_ms, compute_ms) + launch_ms}


def time_steps(dec, context: int, n: int = 50) -> float:
    """Device milliseconds per step, back to back (CUDA events; wall clock on CPU), at `context`
    cached tokens, on scratch state (what runs is the same graph whatever the tokens)."""
    import torch

    from ..diffusion_core.graphed import GraphedDecoder

    dec._capture()
    with torch.no_grad():
        def reset():  # no live block (b_eff = 0): the context stays put, the work per step is the same
            dec._scratch_state()
            if isinstance(dec, GraphedDecoder):
                dec._set_block(0, 0, 0)
            dec.cache.pos.fill_(max(1, min(context, dec.max_seq_len - 1)))

        reset()
        for _ in range(3):
            dec._run_step()
        reset()
        if dec.cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            torch.cuda.synchronize()
            start.record()
            for _ in range(n):
                dec._run_step()
            end.record()
            end.synchronize()
            ms = start.elapsed_time(end) / n
        else:
            t0 = time.perf_counter()
            for _ in range(n):
                dec._run_step()
            ms = (time.perf_counter() - t0) * 1000 / n
        dec.cache.reset()
        return ms
