"""Experiment: the copy prior in line mode too (it is built for block mode only)."""
import sys
import dllm_ls.diffusion_core.sampler as S
orig = S.DecodeState.__init__

def __init__(self, *a, **kw):
    orig(self, *a, **kw)
    self.copy = self.cfg.copy

S.DecodeState.__init__ = __init__
from dllm_ls.cli import main
sys.exit(main(sys.argv[1:]))
