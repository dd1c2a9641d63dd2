import sysconfig
from pathlib import Path

import pytest

from dllm_ls.diffusion_core.tokenizer import train_tokenizer
from dllm_ls.trainer.data import tokenize_split


def _tiny_data(root: Path) -> list[str]:
    """A 512-token tokenizer and tokenised train/val splits of the stdlib's json package, in root
    (tokenizer.json, data/); returns the texts."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    texts = [p.read_text(encoding="utf-8") for p in sorted((stdlib / "json").glob("*.py"))]
    tok = train_tokenizer(texts, 512)
    tok.save(root / "tokenizer.json")
    tokenize_split(texts[1:], tok, root / "data", "train", progress=False)
    tokenize_split(texts[:1], tok, root / "data", "val", progress=False)
    return texts


@pytest.fixture(scope="session")
def tiny_data():
    """tiny_data(root) writes the tiny training data into root (see _tiny_data)."""
    return _tiny_data
