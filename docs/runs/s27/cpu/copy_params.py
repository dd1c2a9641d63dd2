"""Experiment: the copy prior's n-gram lengths and draft length (NMIN, NMAX, K from the environment)."""
import os, sys
import dllm_ls.diffusion_core.copy_prior as C
for k in ("NMIN", "NMAX", "K"):
    if k in os.environ:
        setattr(C, k, int(os.environ[k]))
from dllm_ls.cli import main
sys.exit(main(sys.argv[1:]))
