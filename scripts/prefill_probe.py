"""The first-use cost of a prompt length on the GPU (issue 8: S1's first settings were 4-10x slower
per step than later ones with the same prompts).

    python3 scripts/prefill_probe.py [CHECKPOINT]      (on the GPU machine, the package installed)

Times the cold first step of a completion (`Transformer.step`: the prompt and a block of 32 in one
eager forward) at 30 prompt lengths never seen before, then at the same lengths again, once with
PyTorch's SDPA backends as they come (cuDNN on) and once with cuDNN attention off (fresh lengths for each).
A first pass much slower than the second says some layer builds something per shape."""
import random
import statistics
import sys
import time

import torch

from dllm_ls.diffusion_core.checkpoint import load_checkpoint, resolve_checkpoint
from dllm_ls.diffusion_core.kv_cache import KVCache


def main() -> None:
    dev = torch.device("cuda")
    model, tok = load_checkpoint(resolve_checkpoint(sys.argv[1] if len(sys.argv) > 1 else None), device=dev,
                                 dtype=torch.bfloat16)
    print("torch", torch.__version__, "cudnn sdp enabled after load:", torch.backends.cuda.cudnn_sdp_enabled(),
          "flash:", torch.backends.cuda.flash_sdp_enabled(), "mem-efficient:", torch.backends.cuda.mem_efficient_sdp_enabled())
    cache = KVCache.for_model(model)
    rng = random.Random(0)
    lengths = rng.sample(range(200, model.cfg.max_seq_len - 32), 60)  # prompt + block fit the model

    def one(n: int) -> float:
        cache.reset()
        clean = torch.randint(10, 1000, (1, n), device=dev)
        block = torch.full((1, 32), tok.mask_id, device=dev)
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        with torch.no_grad():
            model.step(clean, block, cache)
        torch.cuda.synchronize()
        return (time.perf_counter() - t0) * 1000

    torch.backends.cuda.enable_cudnn_sdp(True)
    one(500), one(500)  # the process's own warm-up
    for label, lens in (("SDPA as is", lengths[:30]), ("cuDNN attention off", lengths[30:])):
        torch.backends.cuda.enable_cudnn_sdp(label == "SDPA as is")  # (load_checkpoint turns it off)
        first = [one(n) for n in lens]
        again = [one(n) for n in lens]
        print(f"{label:22s} new length: median {statistics.median(first):7.2f} ms  max {max(first):7.2f}  |"
              f"  seen again: median {statistics.median(again):6.2f} ms  max {max(again):6.2f}")


if __name__ == "__main__":
    main()
