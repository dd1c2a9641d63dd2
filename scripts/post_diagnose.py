"""Where does a post-trained model differ from its stage-2 model? (issue 10, CPU, a minute)

    python scripts/post_diagnose.py STAGE2_EXPORT POST_EXPORT

On 8 x 512 tokens of this Python's stdlib (http/, logging/) in the training layout: both models'
greedy threshold-0.9 rollouts (steps per token, token accuracy, agreement), then at the states of
the stage-2 model's trajectory (a random step per block) the argmax agreement, the confidence, the
data's CE, KL(post || stage-2) and the temperature of the stage-2 model that fits the post-trained
one best (is the change a sharper softmax, or other predictions?); and both at a 15%-masked state.
"""

import glob
import sys
import sysconfig

import numpy as np
import torch
import torch.nn.functional as F

from dllm_ls.diffusion_core.checkpoint import load_checkpoint
from dllm_ls.trainer.objectives import TrainModule, batch_mask, batch_positions
from dllm_ls.trainer.rollouts import block_layout, generated_positions, random_steps, rollout, state_at


def main(base_dir: str, post_dir: str):
    torch.set_num_threads(2)
    base, tok = load_checkpoint(base_dir, dtype=torch.float32)
    post, _ = load_checkpoint(post_dir, dtype=torch.float32)
    std = sysconfig.get_paths()["stdlib"]
    ids = []
    for f in sorted(glob.glob(std + "/http/*.py")) + sorted(glob.glob(std + "/logging/*.py")):
        ids += tok.encode(open(f).read())
    B, L, bs = 8, 512, 32
    x0 = torch.tensor(ids[:B * L]).view(B, L)
    bid, nblk = block_layout(L, bs, torch.zeros(B, dtype=torch.long))
    special = [i for i in tok.special_ids if i != tok.eos_id]
    gen = generated_positions(x0, special)
    mask = batch_mask({"offset": torch.zeros(B, dtype=torch.long), "bs": bs}, L, False, "cpu", False)
    pos = batch_positions(B, L, False, "cpu")
    ban = torch.zeros(base.cfg.vocab_size, dtype=torch.bool)
    ban[special] = True
    ban[tok.vocab_size:] = True

    def fn(m, temperature=1.0):
        return lambda xt: TrainModule(m).logits(torch.cat([xt, x0], 1), pos, mask, L).masked_fill(ban, -1e4) / temperature

    def spt(r):
        return float(r.steps.sum() / r.tokens.sum())

    def acc(y):
        return float(((y == x0) & gen).sum() / gen.sum())

    def kl(a, b):
        return float((a.exp() * (a - b)).sum(-1).mean())

    with torch.no_grad():
        rb = rollout(fn(base), x0, gen, bid, nblk, mask_id=tok.mask_id, ban=ban, threshold=0.9)
        rp = rollout(fn(post), x0, gen, bid, nblk, mask_id=tok.mask_id, ban=ban, threshold=0.9)
        print(f"rollouts: steps/token {spt(rb):.3f} -> {spt(rp):.3f}, token accuracy {acc(rb.y):.3f} -> "
              f"{acc(rp.y):.3f}, outputs agree {float(((rb.y == rp.y) & gen).sum() / gen.sum()):.3f}")
        m = state_at(rb, gen, bid, random_steps(rb.steps, torch.Generator().manual_seed(0)))
        xt = torch.where(m, torch.full_like(x0, tok.mask_id), x0)
        lb, lp = fn(base)(xt)[m].log_softmax(-1), fn(post)(xt)[m].log_softmax(-1)
        cb, cp = lb.max(-1).values.exp(), lp.max(-1).values.exp()
        print(f"at {int(m.sum())} masked positions of the stage-2 trajectory's states: argmax agree "
              f"{float((lb.argmax(-1) == lp.argmax(-1)).float().mean()):.3f}, confidence {float(cb.mean()):.3f} -> "
              f"{float(cp.mean()):.3f} (>= 0.9: {float((cb >= 0.9).float().mean()):.3f} -> "
              f"{float((cp >= 0.9).float().mean()):.3f}), data CE {float(F.nll_loss(lb, x0[m])):.3f} -> "
              f"{float(F.nll_loss(lp, x0[m])):.3f}")
        fits = [(kl(lp, (lb / t).log_softmax(-1)), t) for t in np.linspace(0.3, 1.2, 19)]
        best, t = min(fits)
        print(f"KL(post || stage-2) {kl(lp, lb):.3f}; the best temperature for stage-2, {t:.2f}, leaves {best:.3f}")
        m2 = gen & (torch.rand(x0.shape, generator=torch.Generator().manual_seed(3)) < 0.15)
        xt2 = torch.where(m2, torch.full_like(x0, tok.mask_id), x0)
        for name, model in (("stage-2", base), ("post", post)):
            lq = fn(model)(xt2)[m2].log_softmax(-1)
            print(f"{name}, 15% masked: data CE {float(F.nll_loss(lq, x0[m2])):.3f}, "
                  f"accuracy {float((lq.argmax(-1) == x0[m2]).float().mean()):.3f}")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2])
