"""SocketCore against a real `dllm-ls core` subprocess: started on demand (once, even when two
servers race), answers equal to the in-process sampler, kill -9 of the core during a request ->
an error within a second, the core restarted, the next request works."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import shutil
import signal
import tempfile
import time
from pathlib import Path

import pytest

from dllm_ls.diffusion_core.checkpoint import load_checkpoint
from dllm_ls.diffusion_core.sampler import Sampler, SamplerConfig
from dllm_ls.lsp_server.core_client import CompletionRequest, CoreError, SocketCore
from dllm_ls.lsp_server.settings import parse_settings

PREFIX = "def mean(xs):\n    total = 0\n    for x in xs:\n        total += x\n    return "
SUFFIX = "\n\nprint(mean([1, 2, 3]))\n"


def req(id, uri="file:///a.py", prefix=PREFIX, **kw):
    return CompletionRequest(id=id, uri=uri, prefix=prefix, suffix=SUFFIX, mode="block", **{"max_tokens": 12, **kw})


@pytest.fixture
def sock():
    d = Path(tempfile.mkdtemp(prefix="dllm-s"))
    yield d / "run" / "core.sock"
    pid_file = d / "run" / "core.sock.lock"
    if pid_file.exists() and pid_file.read_text().strip().isdigit():
        try:
            os.kill(int(pid_file.read_text()), signal.SIGKILL)
        except ProcessLookupError:
            pass
    shutil.rmtree(d, ignore_errors=True)


def test_starts_one_core_for_two_racing_servers_then_recovers_from_kill_9(sock, tiny_checkpoint):
    model, tok = load_checkpoint(tiny_checkpoint)
    s = Sampler(model, tok, SamplerConfig.for_server())  # the core's decoder
    expected = s.complete(PREFIX, SUFFIX, mode="block", cfg=dataclasses.replace(s.cfg, max_tokens=12))

    async def go():
        a = SocketCore(sock, checkpoint=tiny_checkpoint, device="cpu", threads=1)
        b = SocketCore(sock, checkpoint=tiny_checkpoint, device="cpu", threads=1)
        ha, hb = await asyncio.gather(a.wait_ready(), b.wait_ready())
        assert ha.state == hb.state == "ready", (ha, hb)
        ra, rb = await asyncio.gather(a.complete(req(1)), b.complete(req(1, uri="file:///b.py")))
        assert ra.text == rb.text == expected.text and ra.stop == expected.stop
        h = await a.wait_ready()  # refreshed: complete() refreshes health in the background
        pid = int((sock.parent / "core.sock.lock").read_text())
        assert h.completed >= 1 and (await b.wait_ready()).started == 2
        assert oct(os.stat(sock).st_mode & 0o777) == "0o600"

        # kill -9 during a request: stop the core so the request is surely in flight, then kill it
        os.kill(pid, signal.SIGSTOP)
        task = asyncio.ensure_future(a.complete(req(2)))
        await asyncio.sleep(0.1)
        os.kill(pid, signal.SIGKILL)
        t0 = time.monotonic()
        with pytest.raises(CoreError, match="exited"):
            await task
        assert time.monotonic() - t0 < 1.0
        r = await a.complete(req(3, prefix=PREFIX + "tot"))  # the core was restarted
        new_pid = int((sock.parent / "core.sock.lock").read_text())
        assert new_pid != pid and r.id == 3 and a.restarts == 1
        r = await b.complete(req(4))  # the other server reconnects too
        await a.close()
        await b.close()
        return r
    r = asyncio.run(go())
    assert r.text == expected.text


def test_without_spawn_an_absent_core_is_a_clear_error(sock):
    async def go():
        c = SocketCore(sock, spawn=False)
        h = await c.wait_ready()
        with pytest.raises(CoreError, match="no core answers"):
            await c.complete(req(1))
        await c.close()
        return h
    h = asyncio.run(go())
    assert h.state == "error" and "dllm-ls core" in h.fix


def test_core_address_setting():
    s, w = parse_settings({"coreAddress": "auto"})
    assert s.core_address == "auto" and not w
    s, w = parse_settings({"coreAddress": "unix:/run/user/1/x.sock"})
    assert s.core_address == "unix:/run/user/1/x.sock" and not w
    s, w = parse_settings({"coreAddress": "tcp:1.2.3.4:5"})
    assert s.core_address == "inprocess" and "unix:" in w[0]
