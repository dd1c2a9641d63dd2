"""Kept tokens (the completion's text, tokenized) per step, for eval JSON files side by side."""
import json, sys
from dllm_ls.diffusion_core.tokenizer import Tokenizer
tok = Tokenizer.from_file("/work/main/diffusion_core/weights/default/tokenizer.json")
base = None
for f in sys.argv[1:]:
    d = json.load(open(f))
    t = d["tasks"]
    kept = sum(len(tok.encode(x["completion"])) for x in t)
    steps = sum(x["steps"] for x in t)
    same = "" if base is None else f" same text {sum(a['completion'] == b['completion'] for a, b in zip(base, t))}/{len(t)}"
    base = base or t
    print(f"{f.split('/')[-1]:36s} steps {steps / len(t):6.2f} kept {kept / len(t):6.2f} kept/step {kept / steps:.3f} "
          f"parses {d['syntax_valid_rate']:.3f} pass {d['n_passed']} edit {d['edit_similarity']:.3f}{same}")
