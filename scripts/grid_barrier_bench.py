"""What a grid-wide barrier costs inside one persistent Triton kernel (GPU), the unit price of a
megakernel step: a b = 32 step needs ~5 barriers a layer (after the QKV projection, attention, the
output projection, the MLP's up and down projections) and ~2 for the head and the commit.

Each of P programs (one warp each, all resident at once) adds 1 to a counter in global memory and
spins until the counter reaches P times the barrier's number; the median time of N barriers, less
that of none, over N. The spin gives up after a bound (so a mistake cannot hang the GPU), and the
counter is checked afterwards.

    python scripts/grid_barrier_bench.py            # P = the SM count, and fewer
"""
import statistics
import sys

import torch
import triton
import triton.language as tl


@triton.jit
def _barriers(counter, failed, N: tl.constexpr, P: tl.constexpr, SPIN: tl.constexpr):
    for i in range(N):
        tl.atomic_add(counter, 1, sem="release", scope="gpu")
        target = (i + 1) * P
        seen = tl.atomic_add(counter, 0, sem="acquire", scope="gpu")
        k = 0
        while (seen < target) & (k < SPIN):
            seen = tl.atomic_add(counter, 0, sem="acquire", scope="gpu")
            k += 1
        if k >= SPIN:
            tl.atomic_add(failed, 1)


def time_barriers(P: int, n: int, reps: int = 20) -> tuple[float, bool]:
    counter = torch.zeros(1, dtype=torch.int32, device="cuda")
    failed = torch.zeros(1, dtype=torch.int32, device="cuda")
    ms = []
    for _ in range(reps):
        counter.zero_()
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        _barriers[(P,)](counter, failed, N=n, P=P, SPIN=1 << 20, num_warps=1)
        b.record()
        torch.cuda.synchronize()
        ms.append(a.elapsed_time(b))
    ok = int(counter.item()) == P * n and int(failed.item()) == 0
    return statistics.median(ms), ok


def main():
    if not torch.cuda.is_available():
        print("grid_barrier_bench: needs a CUDA GPU")
        return 1
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    print(f"{torch.cuda.get_device_name(0)}, {sms} SMs")
    time_barriers(sms, 10)  # compile
    for P in sorted({sms, 2 * sms, 64, 16, 1}, reverse=True):
        t0, ok0 = time_barriers(P, 0)
        t1, ok1 = time_barriers(P, 1000)
        print(f"P = {P:4d}: {1000 * (t1 - t0) / 1000:.3f} us a barrier (1,000 barriers {t1:.3f} ms, "
              f"none {t0:.3f} ms){'' if ok0 and ok1 else '  COUNTER WRONG'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
