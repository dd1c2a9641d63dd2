"""Write a checkpoint again in another dtype: python scripts/convert_export.py SRC DST [--dtype int8].

int8 halves a bf16 export (each matrix int8 with per-row scales, see diffusion_core/checkpoint.py),
so a model of ~30M parameters fits the package's 32 MB budget.
"""

import argparse

from dllm_ls.diffusion_core.checkpoint import EXPORT_DTYPES, convert_checkpoint

p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
p.add_argument("src")
p.add_argument("dst")
p.add_argument("--dtype", choices=EXPORT_DTYPES, default="int8")
a = p.parse_args()
convert_checkpoint(a.src, a.dst, a.dtype)
