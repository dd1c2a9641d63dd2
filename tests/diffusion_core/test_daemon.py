"""The core daemon over its real unix socket: framing, errors, concurrency, cancellation, sessions,
permissions, TCP tokens. The daemon runs in a thread of the test process (a tiny random model)."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import stat
import tempfile
import threading
import time
from pathlib import Path

import msgpack
import pytest

from dllm_ls.diffusion_core import rpc
from dllm_ls.diffusion_core.daemon import Daemon, default_socket_path, private_dir, read_token
from dllm_ls.diffusion_core.sampler import Sampler, SamplerConfig
from dllm_ls.diffusion_core.service import CoreService, Sessions
from dllm_ls.errors import DllmError

PREFIX = "def mean(xs):\n    total = 0\n    for x in xs:\n        total += x\n    return "
SUFFIX = "\n\nprint(mean([1, 2, 3]))\n"


class Client:
    """A blocking msgpack-rpc client for tests."""

    def __init__(self, path=None, tcp=None):
        if tcp:
            self.s = socket.create_connection(tcp, timeout=10)
        else:
            self.s = socket.socket(socket.AF_UNIX)
            self.s.settimeout(10)
            self.s.connect(str(path))
        self.u = msgpack.Unpacker(raw=False)
        self.n = 0

    def send(self, data: bytes):
        self.s.sendall(data)

    def recv(self):
        while True:
            for obj in self.u:
                return obj
            data = self.s.recv(1 << 16)
            if not data:
                return None
            self.u.feed(data)

    def call(self, method, params=None):
        self.n += 1
        self.send(rpc.request(self.n, method, params))
        msg = self.recv()
        assert msg[0] == 1 and msg[1] == self.n, msg
        return msg[2], msg[3]

    def close(self):
        self.s.close()


class SlowModel:
    """Delegates to a model, sleeping before every step (so requests overlap)."""

    def __init__(self, model, step_ms):
        self.inner, self.step_ms, self.cfg = model, step_ms, model.cfg

    def parameters(self):
        return self.inner.parameters()

    def step(self, clean, block, cache):
        time.sleep(self.step_ms / 1000)
        return self.inner.step(clean, block, cache)


def start_daemon(sampler, *, tcp=None, token=None, session_bytes=512 << 20):
    d = Path(tempfile.mkdtemp(prefix="dllm-t"))
    service = CoreService(sampler=sampler, session_bytes=session_bytes).start()
    daemon = Daemon(service, d / "sub" / "core.sock", tcp=tcp, token=token)
    daemon.ready = threading.Event()
    t = threading.Thread(target=lambda: asyncio.run(daemon.serve()), daemon=True)
    t.start()
    assert daemon.ready.wait(10)
    daemon.thread, daemon.dir = t, d
    return daemon


def stop_daemon(daemon):
    daemon.stop()
    daemon.thread.join(10)
    shutil.rmtree(daemon.dir, ignore_errors=True)


@pytest.fixture
def sampler(tiny_model, tokenizer):
    return Sampler(tiny_model, tokenizer, SamplerConfig(block_size=4, max_tokens=12, threshold=1.0))


@pytest.fixture
def daemon(sampler):
    d = start_daemon(sampler)
    yield d
    stop_daemon(d)


@pytest.fixture
def slow_daemon(tiny_model, tokenizer):
    d = start_daemon(Sampler(SlowModel(tiny_model, 15), tokenizer, SamplerConfig(block_size=4, threshold=1.0)))
    yield d
    stop_daemon(d)


def complete(uri="file:///a.py", prefix=PREFIX, **kw):
    return {"uri": uri, "prefix": prefix, "suffix": SUFFIX, "mode": "block", "max_tokens": 12, **kw}


def test_complete_health_stats_and_the_socket_is_private(daemon, sampler):
    c = Client(daemon.socket_path)
    err, res = c.call("complete", complete(id=5))
    cold = sampler.complete(PREFIX, SUFFIX, mode="block")
    assert err is None and res["id"] == 5 and res["text"] == cold.text and res["stop"] == cold.stop
    assert 1 <= res["steps"] <= res["tokens"] and res["prompt_tokens"] > 0
    err, h = c.call("health")
    assert err is None and h["state"] == "ready" and h["completed"] == 1 and h["steps"] == res["steps"]
    err, st = c.call("stats")
    assert err is None and st["sessions"] == 1 and st["session_bytes"] > 0
    assert stat.S_IMODE(os.stat(daemon.socket_path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(daemon.socket_path.parent).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(str(daemon.socket_path) + ".lock").st_mode) == 0o600
    c.close()


def test_bad_input_gets_errors_and_the_connection_and_server_survive(daemon):
    c = Client(daemon.socket_path)
    c.send(msgpack.packb("hello"))  # msgpack, not a message
    assert c.recv()[2]["code"] == rpc.INVALID_REQUEST
    c.send(msgpack.packb([0, 1, "complete", "not an array"]))
    m = c.recv()
    assert m[1] == 1 and m[2]["code"] == rpc.INVALID_PARAMS
    err, _ = c.call("frobnicate")
    assert err["code"] == rpc.METHOD_NOT_FOUND and "complete" in err["message"]
    for bad in ({"uri": "u"}, complete(mode="paragraph"), complete(max_tokens=0), complete(prefix=b"x"),
                complete(threshold="high")):
        err, _ = c.call("complete", bad)
        assert err["code"] == rpc.INVALID_PARAMS, bad
    c.send(msgpack.packb([2, "cancel", [{"id": "x"}]]))  # a bad notification: logged, no answer
    c.send(msgpack.packb([1, 3, None, None]))  # a response: ignored
    err, res = c.call("complete", complete())
    assert err is None and "text" in res

    # bytes that are not msgpack: one parse_error, the connection closes, the server goes on
    c2 = Client(daemon.socket_path)
    c2.send(b"\xc1\xc1\xc1")
    m = c2.recv()
    assert m[:2] == [1, None] and m[2]["code"] == rpc.PARSE_ERROR
    assert c2.recv() is None
    # a huge frame: the same
    c3 = Client(daemon.socket_path)
    try:
        c3.send(msgpack.packb([0, 1, "complete", [{"prefix": "x" * (rpc.MAX_FRAME + 10)}]]))
    except (BrokenPipeError, ConnectionResetError):
        pass
    m = c3.recv()
    assert m is None or m[2]["code"] == rpc.PARSE_ERROR
    err, h = Client(daemon.socket_path).call("health")
    assert err is None and h["state"] == "ready"
    err, _ = c.call("health")  # the first connection still works
    assert err is None


def test_concurrent_clients_get_correct_independent_answers(daemon, sampler):
    docs = [("file:///a.py", PREFIX, SUFFIX), ("file:///b.py", "import os\n\ndef f(path):\n    return os.", "\n"),
            ("file:///c.py", "class A:\n    def __init__(self):\n        self.", "\n")]
    expected = {uri: sampler.complete(p, s, mode="block").text for uri, p, s in docs}
    results, errors = {}, []

    def worker(i):
        uri, p, s = docs[i % 3]
        try:
            c = Client(daemon.socket_path)
            for _ in range(2):
                err, res = c.call("complete", {"id": 1, "uri": uri, "prefix": p, "suffix": s, "mode": "block",
                                               "max_tokens": 12})
                assert err is None, err
                results.setdefault(i, []).append(res["text"])
            c.close()
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors
    for i, texts in results.items():
        assert texts == [expected[docs[i % 3][0]]] * 2
    assert len(results) == 6


def test_a_reused_session_equals_a_cold_answer(daemon, sampler):
    c = Client(daemon.socket_path)
    _, r1 = c.call("complete", complete(id=1))
    _, r2 = c.call("complete", complete(id=2, prefix=PREFIX + "tot"))  # a keystroke
    _, cold = c.call("complete", complete(id=3, uri="file:///cold.py", prefix=PREFIX + "tot"))
    assert r1["reused_tokens"] == 0 and cold["reused_tokens"] == 0
    assert r2["reused_tokens"] > 0.8 * r2["prompt_tokens"]
    assert r2["text"] == cold["text"] and r2["stop"] == cold["stop"] and r2["tokens"] == cold["tokens"]
    assert r2["text"] == sampler.complete(PREFIX + "tot", SUFFIX, mode="block").text
    c.call("close", {"uri": "file:///a.py"})
    _, r4 = c.call("complete", complete(id=4, prefix=PREFIX + "tot"))
    assert r4["reused_tokens"] == 0 and r4["text"] == cold["text"]


def test_sessions_are_an_lru_by_bytes():
    class C:
        def nbytes(self):
            return 100
    s = Sessions(max_bytes=250)
    a = s.take("a", C)
    s.take("b", C)
    assert s.take("a", C) is a  # a is now the most recent
    s.take("c", C)  # 300 bytes > 250: b (least recently used) goes
    assert "a" in s and "c" in s and "b" not in s and s.evicted == 1 and s.nbytes() == 200
    tiny = Sessions(max_bytes=10)
    tiny.take("x", C)  # the one in use is kept even over budget
    assert "x" in tiny


def test_cancel_and_supersede_and_disconnect(slow_daemon):
    c = Client(slow_daemon.socket_path)
    c.send(rpc.request(1, "complete", complete(id=1, max_tokens=64)))
    time.sleep(0.1)
    c.send(rpc.notification("cancel", {"id": 1}))
    m = c.recv()
    assert m[1] == 1 and m[2]["code"] == rpc.CANCELLED
    # a newer request for the same document supersedes the older
    c.send(rpc.request(2, "complete", complete(id=2, max_tokens=64)))
    time.sleep(0.05)
    c.send(rpc.request(3, "complete", complete(id=3, max_tokens=4)))
    answers = {m[1]: m for m in (c.recv(), c.recv())}
    assert answers[2][2]["code"] == rpc.CANCELLED and "superseded" in answers[2][2]["message"]
    assert answers[3][2] is None and answers[3][3]["id"] == 3
    # a client that disconnects mid-request: its request stops, the core goes on
    c2 = Client(slow_daemon.socket_path)
    c2.send(rpc.request(1, "complete", complete(id=1, uri="file:///z.py", max_tokens=64)))
    time.sleep(0.1)
    c2.close()
    t0 = time.time()
    while True:
        _, h = c.call("health")
        if h["running"] == 0 and h["queued"] == 0:
            break
        assert time.time() - t0 < 2, h
        time.sleep(0.02)
    assert h["cancelled_running"] + h["cancelled_queued"] == 3
    err, res = c.call("complete", complete(id=9, max_tokens=4))
    assert err is None and res["id"] == 9


def test_tcp_needs_a_token(sampler, tmp_path):
    with pytest.raises(DllmError, match="token"):
        Daemon(CoreService(sampler=sampler), tmp_path / "s.sock", tcp=("127.0.0.1", 0))
    token = "t" * 32
    d = start_daemon(sampler, tcp=("127.0.0.1", 0), token=token)
    try:
        c = Client(tcp=("127.0.0.1", d.tcp_port))
        err, _ = c.call("health")  # no auth first
        assert err["code"] == rpc.UNAUTHORIZED and c.recv() is None
        c = Client(tcp=("127.0.0.1", d.tcp_port))
        err, _ = c.call("auth", {"token": "wrong"})
        assert err["code"] == rpc.UNAUTHORIZED and c.recv() is None
        c = Client(tcp=("127.0.0.1", d.tcp_port))
        assert c.call("auth", {"token": token}) == (None, {"ok": True})
        err, h = c.call("health")
        assert err is None and h["state"] == "ready"
    finally:
        stop_daemon(d)


def test_token_file_and_private_dirs(tmp_path):
    f = tmp_path / "token"
    f.write_text("short")
    f.chmod(0o600)
    with pytest.raises(DllmError, match="16 characters"):
        read_token(str(f))
    f.write_text("x" * 40)
    f.chmod(0o644)
    with pytest.raises(DllmError, match="chmod 600"):
        read_token(str(f))
    f.chmod(0o600)
    assert read_token(str(f)) == "x" * 40
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o755)
    shared.chmod(0o755)
    with pytest.raises(DllmError, match="chmod 700"):
        private_dir(shared, fix_mode=False)
    private_dir(shared, fix_mode=True)
    assert stat.S_IMODE(shared.stat().st_mode) == 0o700
    assert default_socket_path().name == "core.sock"


def test_a_second_core_on_the_same_socket_is_refused(daemon, sampler):
    other = Daemon(CoreService(sampler=sampler), daemon.socket_path)
    with pytest.raises(DllmError, match="already serves"):
        asyncio.run(other.serve())
    assert Client(daemon.socket_path).call("health")[0] is None  # the first one still serves


def test_shutdown(sampler):
    d = start_daemon(sampler)
    assert Client(d.socket_path).call("shutdown") == (None, {"ok": True})
    d.thread.join(5)
    assert not d.thread.is_alive() and not d.socket_path.exists()
    shutil.rmtree(d.dir, ignore_errors=True)


def test_cli_refuses_tcp_without_a_token(tmp_path, capsys):
    from dllm_ls.cli import main

    assert main(["core", "--socket", str(tmp_path / "s.sock"), "--tcp", "127.0.0.1:0"]) == 2
    assert "--token-file" in capsys.readouterr().err
