"""A lower bound for a megakernel step on this GPU (Triton): one persistent kernel that streams a
step's bytes of weights through P programs in PHASES phases with a grid-wide barrier between
phases, and does nothing else. A real megakernel (issue 8's 2x-floor target) does at least this
much: every phase reads its weights and waits for the previous phase's outputs, which other
programs wrote.

Phase i, program p: load its N weights of phase i (bf16), read one value that program p + 1
wrote in phase i - 1 (the data dependence), write sum(w) + that value; then the barrier. In the
"barrier + prefetch" rows each program issues the next phase's weight load before it spins on the
barrier (weights do not depend on activations), as a real megakernel would.

    python scripts/megakernel_skeleton_bench.py      # the b = 32 step's ~31 MB, 37, 23 and 8 phases
    python scripts/megakernel_skeleton_bench.py --mb 0   # no weights: the barriers and the dependence

Prints the median time of one kernel (CUDA events around a launch queued behind a sleep on the GPU,
L2 warm as in decoding and flushed), beside
the same bytes streamed with no barrier and the bytes-over-bandwidth floor. The output values are
checked against the same sums on the host, so a broken barrier cannot pass for a fast one.
"""
import argparse
import statistics
import sys

import torch
import triton
import triton.language as tl


@triton.jit
def _barrier(counter, target, failed, SPIN: tl.constexpr):
    tl.atomic_add(counter, 1, sem="release", scope="gpu")
    seen = tl.atomic_add(counter, 0, sem="acquire", scope="gpu")
    k = 0
    while (seen < target) & (k < SPIN):
        seen = tl.atomic_add(counter, 0, sem="acquire", scope="gpu")
        k += 1
    if k >= SPIN:
        tl.atomic_add(failed, 1)


@triton.jit
def _skeleton(w, act, counter, failed, PHASES: tl.constexpr, P: tl.constexpr, N: tl.constexpr,
              CHUNK: tl.constexpr, BARRIER: tl.constexpr, PREFETCH: tl.constexpr, SPIN: tl.constexpr):
    p = tl.program_id(0)
    offs = tl.arange(0, CHUNK)
    m = offs < N
    nxt = tl.load(w + p * N + offs, mask=m, other=0.0)
    for i in range(PHASES):
        cur = nxt
        if PREFETCH:
            if i + 1 < PHASES:
                nxt = tl.load(w + ((i + 1) * P + p) * N + offs, mask=m, other=0.0)
        else:
            cur = tl.load(w + (i * P + p) * N + offs, mask=m, other=0.0)
        a = tl.load(act + i * P + (p + 1) % P, cache_modifier=".cg")
        tl.store(act + (i + 1) * P + p, tl.sum(cur.to(tl.float32), axis=0) + a)
        if BARRIER:
            _barrier(counter, (i + 1) * P, failed, SPIN)


def expected(w: torch.Tensor, phases: int, P: int) -> torch.Tensor:
    s = w.float().view(phases, P, -1).sum(-1)  # (phases, P); zeros when there are no weights
    act = torch.zeros(phases + 1, P, dtype=torch.float64, device=w.device)
    for i in range(phases):
        act[i + 1] = s[i].double() + act[i].roll(-1)
    return act


def run(P, phases, n, barrier, prefetch, reps, flush):
    w = (torch.rand(max(1, phases * P * n), device="cuda") - 0.5).to(torch.bfloat16)
    act = torch.zeros((phases + 1) * P, dtype=torch.float32, device="cuda")
    counter = torch.zeros(1, dtype=torch.int32, device="cuda")
    failed = torch.zeros(1, dtype=torch.int32, device="cuda")
    junk = torch.empty(256 << 20, dtype=torch.uint8, device="cuda") if flush else None
    ms = []
    for r in range(reps + 3):
        counter.zero_()
        act.zero_()
        if junk is not None:
            junk.add_(1)  # 256 MB through the L2
        # the GPU busy while the host launches, so that the events time the kernel and not
        # Triton's launch on the host (~20 us)
        torch.cuda._sleep(200_000)
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        _skeleton[(P,)](w, act, counter, failed, PHASES=phases, P=P, N=n, CHUNK=max(16, triton.next_power_of_2(n)), BARRIER=barrier,
                        PREFETCH=prefetch, SPIN=1 << 22, num_warps=4)
        b.record()
        torch.cuda.synchronize()
        if r >= 3:
            ms.append(a.elapsed_time(b))
    ok = int(failed.item()) == 0
    if barrier:  # without the barrier the dependence is a race: only the timing means something
        want = expected(w[:phases * P * n], phases, P)
        ok = ok and torch.allclose(act.view(phases + 1, P).double(), want, rtol=1e-3, atol=1e-2)
    return 1000 * statistics.median(ms), ok, phases * P * n * 2


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mb", type=float, default=31.1, help="bytes a step streams, MB")
    ap.add_argument("--phases", default="37,23,8")
    ap.add_argument("--reps", type=int, default=30)
    args = ap.parse_args()
    if not torch.cuda.is_available():
        print("megakernel_skeleton_bench: needs a CUDA GPU")
        return 1
    props = torch.cuda.get_device_properties(0)
    P = props.multi_processor_count
    print(f"{torch.cuda.get_device_name(0)}, {P} SMs, L2 {props.L2_cache_size >> 20} MB")
    for phases in [int(x) for x in args.phases.split(",")]:
        n = round(args.mb * 1e6 / 2 / phases / P)  # weights a program streams a phase
        for flush in (False, True):
            rows = []
            for name, barrier, prefetch in (("no barrier", False, False), ("barrier", True, False),
                                            ("barrier + prefetch", True, True)):
                us, ok, nbytes = run(P, phases, n, barrier, prefetch, args.reps, flush)
                rows.append(f"{name} {us:.1f} us{'' if ok else ' WRONG'}")
            gb = nbytes / 1e9
            print(f"{phases} phases x {P} programs x {n * 2 / 1024:.1f} KB = {gb * 1000:.1f} MB, "
                  f"L2 {'flushed' if flush else 'warm'}: " + "; ".join(rows)
                  + f"  (bytes / 3.35 TB/s = {gb / 3.35e3 * 1e6:.1f} us)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
