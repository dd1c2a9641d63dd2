"""Hot reload: a new valid checkpoint is swapped in between requests; a broken one is refused
with a logged reason and the old model keeps serving."""

from __future__ import annotations

import dataclasses
import logging
import threading
import time

import torch

from dllm_ls.diffusion_core.checkpoint import save_checkpoint
from dllm_ls.diffusion_core.daemon import watch_checkpoint
from dllm_ls.diffusion_core.model import ModelConfig, Transformer
from dllm_ls.diffusion_core.sampler import Sampler, SamplerConfig
from dllm_ls.diffusion_core.service import CoreService

PREFIX = "def mean(xs):\n    total = 0\n    for x in xs:\n        "


def cold(model, tokenizer):
    s = Sampler(model, tokenizer, SamplerConfig.for_server())  # the core's decoder
    return s.complete(PREFIX, mode="line", cfg=dataclasses.replace(s.cfg, max_tokens=16))


def wait_for(cond, timeout=10):
    t0 = time.time()
    while not cond():
        assert time.time() - t0 < timeout, "timed out"
        time.sleep(0.02)


def test_hot_reload_swaps_a_valid_checkpoint_and_refuses_a_broken_one(tiny_checkpoint, tiny_model, tokenizer, caplog):
    service = CoreService(checkpoint=tiny_checkpoint, device="cpu", threads=1).start()
    stop = threading.Event()
    watcher = threading.Thread(target=watch_checkpoint, args=(service, tiny_checkpoint, stop, 100), daemon=True)
    watcher.start()
    owner = object()

    def ask(i):
        return service.submit({"uri": "file:///a.py", "prefix": PREFIX, "mode": "line", "max_tokens": 16},
                              owner, i).result(10)
    try:
        wait_for(lambda: service.health()["state"] == "ready")
        first = ask(1)
        assert first["text"] == cold(tiny_model, tokenizer).text
        time.sleep(0.3)  # the watcher is up

        with caplog.at_level(logging.WARNING, logger="dllm_ls.diffusion_core.service"):
            (tiny_checkpoint / "model.safetensors").write_bytes(b"not safetensors")
            wait_for(lambda: service.health()["reload_error"])
        h = service.health()
        assert "model.safetensors" in h["reload_error"] and h["reloads"] == 0 and h["state"] == "ready"
        assert any("refused" in r.getMessage() for r in caplog.records)
        again = ask(2)  # the old model keeps serving, its session too
        assert again["text"] == first["text"] and again["reused_tokens"] > 0

        torch.manual_seed(1)
        new_model = Transformer(ModelConfig.from_name("test")).eval()
        save_checkpoint(tiny_checkpoint, new_model, tokenizer)
        wait_for(lambda: service.health()["reloads"] >= 1 and not service.health()["reload_error"])
        swapped = ask(3)
        want = cold(new_model, tokenizer)
        assert want.text != first["text"]
        assert swapped["text"] == want.text and swapped["reused_tokens"] == 0  # sessions dropped with the old model
    finally:
        stop.set()
        service.stop()
        service.join(5)
        watcher.join(5)
