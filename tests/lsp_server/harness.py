"""The real server (`create_server`) with test-only knobs, run as a subprocess by the e2e tests.

    python -m tests.lsp_server.harness --checkpoint DIR [--step-ms N] [--script TEXT]

--step-ms slows every model step (to cancel a request mid-flight); --script replaces the model
with tests/diffusion_core/scripted.py's ScriptedModel writing TEXT (with the checkpoint's
tokenizer); --judge FUNC with its JudgeModel, which takes FUNC for the right function (repair);
--judge-file FILE [--judge-before OLD] with its FileJudge, which takes FILE's blocks for the right
ones (refactor; OLD's where the edit is not in the context). It adds one test-only command, `test.document` [uri, line, character], answering
what the server's document store holds: the text, and the offset of the position and the text
before it in the negotiated encoding.
"""

from __future__ import annotations

import argparse
import sys
import time

import torch


class SlowModel(torch.nn.Module):
    """Delegates to a model, sleeping before every step."""

    def __init__(self, model, step_ms: float):
        super().__init__()
        self.inner, self.step_ms = model, step_ms
        self.cfg = model.cfg

    def step(self, clean, block, cache):
        time.sleep(self.step_ms / 1000)
        return self.inner.step(clean, block, cache)

    def extend(self, clean, cache):
        time.sleep(self.step_ms / 1000)
        return self.inner.extend(clean, cache)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--step-ms", type=float, default=0.0)
    p.add_argument("--script", default=None)
    p.add_argument("--judge", default=None, help="a scripted judge (repair) that knows this function is right")
    p.add_argument("--judge-file", default=None, help="a scripted judge of whole files (refactor): each block "
                   "is judged against the nearest block of this file")
    p.add_argument("--judge-before", default=None, help="with --judge-file: the file before the edit, right "
                   "where the edit is not in the context")
    args = p.parse_args()

    from dllm_ls.diffusion_core.checkpoint import load_checkpoint
    from dllm_ls.diffusion_core.sampler import Sampler
    from dllm_ls.lsp_server.cli import setup_logging
    from dllm_ls.lsp_server.inprocess import InProcessCore
    from dllm_ls.lsp_server.server import create_server

    torch.set_num_threads(1)
    model, tok = load_checkpoint(args.checkpoint)
    if args.script is not None:
        from tests.diffusion_core.scripted import ScriptedModel

        model = ScriptedModel(tok, tok.encode(args.script) + [tok.eos_id])
    if args.judge is not None:
        from tests.diffusion_core.scripted import JudgeModel

        model = JudgeModel(tok, tok.encode(args.judge.rstrip("\n")) + [tok.eos_id])
    if args.judge_file is not None:
        from tests.diffusion_core.scripted import FileJudge

        before = open(args.judge_before, encoding="utf-8").read() if args.judge_before else None
        with open(args.judge_file, encoding="utf-8") as f:
            model = FileJudge.for_file(tok, f.read(), before)
    if args.step_ms:
        model = SlowModel(model, args.step_ms)

    def factory(settings):
        if args.script is not None:  # a fresh script position per request
            return _ScriptedCore(tok, args.script)
        return InProcessCore(sampler=Sampler(model, tok))

    setup_logging(False, None)
    ls = create_server(factory)

    @ls.command("test.document")
    def document(*a):
        uri, line, character = a
        doc = ls.docs.get(uri)
        off = doc.offset(line, character, ls.docs.encoding)
        return {"text": doc.text, "offset": off, "before": doc.text[:off], "encoding": ls.docs.encoding}

    stdout = sys.stdout.buffer
    sys.stdout = sys.stderr
    ls.start_io(sys.stdin.buffer, stdout)


class _ScriptedCore:
    """An InProcessCore whose sampler gets a new ScriptedModel for every request."""

    def __init__(self, tok, script):
        from dllm_ls.lsp_server.inprocess import InProcessCore

        self.tok, self.script = tok, script
        self.inner = InProcessCore(sampler=self._sampler())

    def _sampler(self):
        from dllm_ls.diffusion_core.sampler import Sampler
        from tests.diffusion_core.scripted import ScriptedModel

        return Sampler(ScriptedModel(self.tok, self.tok.encode(self.script) + [self.tok.eos_id]), self.tok)

    async def complete(self, request):
        self.inner._sampler = self._sampler()
        self.inner._caches.clear()
        return await self.inner.complete(request)

    def __getattr__(self, name):
        return getattr(self.inner, name)


if __name__ == "__main__":
    main()
