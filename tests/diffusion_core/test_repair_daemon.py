"""The core's `repair` method over the real socket: a planted bug fixed, bad params answered."""

from __future__ import annotations

from dllm_ls.diffusion_core import rpc
from dllm_ls.diffusion_core.code_spans import TextEdit, apply_edits
from dllm_ls.diffusion_core.sampler import Sampler

from .scripted import JudgeModel
from .test_daemon import Client, start_daemon, stop_daemon
from .test_repair import FILE, GOOD


def test_repair_over_the_socket(tokenizer):
    target = tokenizer.encode(GOOD.rstrip("\n")) + [tokenizer.eos_id]
    d = start_daemon(Sampler(JudgeModel(tokenizer, target), tokenizer))
    try:
        c = Client(d.socket_path)
        buggy = FILE.replace("a + b", "a * b")
        line = buggy.count("\n", 0, buggy.index("total ="))
        err, res = c.call("repair", {"uri": "file:///a.py", "code": buggy, "position": [line, 4]})
        assert err is None, err
        edits = [TextEdit(**e) for e in res["edits"]]
        assert apply_edits(buggy, edits) == FILE and res["rounds"] >= 1 and res["ms"] > 0
        assert all(e.start_line == line for e in edits) and 0 < edits[0].confidence <= 1
        err, res = c.call("repair", {"uri": "file:///a.py", "code": FILE, "position": [line, 4]})
        assert err is None and res["edits"] == []
        # bad input: one clear error each, the connection goes on
        for params, words in [({"uri": "u", "code": FILE}, "exactly one of"),
                              ({"uri": "u", "code": FILE, "position": [0, 0]}, "not inside a function"),
                              ({"uri": "u", "code": FILE, "position": [99, 0]}, "outside the file"),
                              ({"uri": "u", "code": 3, "position": [0, 0]}, "'code' must be a string")]:
            err, res = c.call("repair", params)
            assert err is not None and err["code"] == rpc.INVALID_PARAMS and words in err["message"], (params, err)
        err, res = c.call("health")
        assert err is None and res["state"] == "ready"
        c.close()
    finally:
        stop_daemon(d)


def test_repair_in_process_and_cancel(tokenizer):
    import asyncio

    import pytest

    from dllm_ls.lsp_server.core_client import CompletionCancelled, CoreError, RepairQuery
    from dllm_ls.lsp_server.inprocess import InProcessCore

    target = tokenizer.encode(GOOD.rstrip("\n")) + [tokenizer.eos_id]
    core = InProcessCore(sampler=Sampler(JudgeModel(tokenizer, target), tokenizer))
    buggy = FILE.replace("a + b", "a * b")
    line = buggy.count("\n", 0, buggy.index("total ="))

    async def main():
        res = await core.repair(RepairQuery(id=1, uri="u", code=buggy, position=[line, 0]))
        assert apply_edits(buggy, [TextEdit(**e) for e in res["edits"]]) == FILE
        with pytest.raises(CoreError, match="not inside a function"):
            await core.repair(RepairQuery(id=2, uri="u", code=buggy, position=[0, 0]))
        task = asyncio.ensure_future(core.repair(RepairQuery(id=3, uri="u", code=buggy, position=[line, 0])))
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises((asyncio.CancelledError, CompletionCancelled)):
            await task
        await core.close()

    asyncio.run(main())
