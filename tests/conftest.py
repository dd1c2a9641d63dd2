"""Shared fixtures: a tiny byte-level BPE trained on a few stdlib files, tiny random models."""

from __future__ import annotations

import os
import sysconfig
from pathlib import Path

import pytest
import torch

if not torch.cuda.is_available():
    # Triton kernels run on CPU tensors through Triton's interpreter in tests/kernels; the flag is
    # read when a kernel is defined, so it is set before anything imports triton
    os.environ.setdefault("TRITON_INTERPRET", "1")

STDLIB = Path(sysconfig.get_paths()["stdlib"])
FIXTURE_FILES = ["textwrap.py", "string.py", "bisect.py", "heapq.py", "keyword.py", "colorsys.py"]


def pytest_collection_modifyitems(config, items):
    if not torch.cuda.is_available():
        skip = pytest.mark.skip(reason="needs a CUDA device")
        for item in items:
            if "gpu" in item.keywords:
                item.add_marker(skip)


@pytest.fixture(scope="session")
def tokenizer():
    from dllm_ls.diffusion_core.tokenizer import train_tokenizer

    texts = [(STDLIB / f).read_text(encoding="utf-8") for f in FIXTURE_FILES]
    return train_tokenizer(texts, vocab_size=512)


@pytest.fixture
def one_thread():
    """Tiny matmuls run fastest on one torch thread, and the machine is shared (restored after)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def session_checkpoint(tmp_path_factory, tokenizer):
    """The "test" model (seed 0) saved once per session: the servers the end-to-end tests start
    (LSP, Neovim, VS Code) load it; none writes to it."""
    from dllm_ls.diffusion_core.checkpoint import save_checkpoint
    from dllm_ls.diffusion_core.model import ModelConfig, Transformer

    torch.manual_seed(0)
    d = tmp_path_factory.mktemp("session") / "ckpt"
    save_checkpoint(d, Transformer(ModelConfig.from_name("test")).eval(), tokenizer)
    return d


@pytest.fixture
def tiny_model():
    from dllm_ls.diffusion_core.model import ModelConfig, Transformer

    torch.manual_seed(0)
    return Transformer(ModelConfig.from_name("test")).eval()


@pytest.fixture
def tiny_checkpoint(tmp_path, tokenizer, tiny_model):
    from dllm_ls.diffusion_core.checkpoint import save_checkpoint

    d = tmp_path / "ckpt"
    save_checkpoint(d, tiny_model, tokenizer)
    return d
