"""The kernel benchmark runner: every kernel's bench() runs (torch providers on a CPU) and the
markdown has a table per kernel."""

from dllm_ls.kernels.bench import markdown, run


def test_benchmarks_run_and_tabulate():
    rows = run("cpu", quick=False, compile_=False, tiny=True)
    assert {r["kernel"] for r in rows} == {"block_attention", "commit", "fused_ce", "rope_kv", "block_update",
                                              "swiglu", "copy_prior"}
    assert all(r["ms"] > 0 for r in rows if "ms" in r) and not any("error" in r for r in rows)
    md = markdown(rows, "CPU")
    for k in ("block_attention", "commit", "fused_ce", "rope_kv", "block_update", "swiglu", "copy_prior"):
        assert f"**{k}**" in md
    fake = [{"kernel": "commit", "provider": p, "T": 4, "V": 8, "ms": ms}
            for p, ms in (("torch", 2.0), ("triton", 0.5))]
    assert "| 4 | 8 | 0.5000 | 2.0000 | 4.00x |" in markdown(fake, "GPU")


def test_disable_triton_switches_the_dispatch_to_the_references(monkeypatch, request):
    import torch

    from dllm_ls.kernels._triton import disable_triton, has_triton, self_check, use_triton

    monkeypatch.setenv("DLLM_LS_NO_TRITON", "0")  # restored (unset) after the test
    request.addfinalizer(has_triton.cache_clear)
    has_triton.cache_clear()
    disable_triton()
    assert not has_triton() and not use_triton(torch.zeros(1))
    assert self_check("cpu") is None  # nothing to check without CUDA
