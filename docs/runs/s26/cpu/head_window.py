import os, sys
import dllm_ls.diffusion_core.sampler as S
near, W = float(os.environ["NEAR"]), int(os.environ["W"])
_last = {}
orig_cc = S.commit_count
def commit_count(conf_sorted, cfg):
    _last["c"] = conf_sorted.tolist(); _last["t"] = cfg.threshold
    return orig_cc(conf_sorted, cfg)
def choose(positions, order, n, fallback):
    c, far = _last["c"], _last["t"]
    head = positions[0]
    got = [positions[j] for k, j in enumerate(order) if c[k] >= (near if positions[j] - head < W else far)]
    if not got:
        return positions[:1] if fallback == "leftmost" else [positions[order[0]]]
    return got
S.commit_count, S.choose = commit_count, choose
from dllm_ls.cli import main
sys.exit(main(sys.argv[1:]))
