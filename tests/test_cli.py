"""The command line: lazy imports, `complete` at 1-based positions, `batch` never stops on bad input."""

import json
import subprocess
import sys

import pytest

from dllm_ls.diffusion_core.cli_complete import split_at
from dllm_ls.errors import DllmError


def dllm(*args, input=None, check=False):
    return subprocess.run([sys.executable, "-m", "dllm_ls.cli", *args], input=input,
                          capture_output=True, timeout=300, check=check)


def test_help_does_not_import_torch():
    code = ("import sys\nfrom dllm_ls.cli import main\n"
            "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            "assert 'torch' not in sys.modules, 'torch imported'\nprint('ok')")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0 and "complete" in r.stdout and r.stdout.strip().endswith("ok"), r.stderr


def test_split_at_is_one_based():
    text = "ab\r\ncd\nef"
    assert split_at(text, 1, 1, "f") == ("", text)
    assert split_at(text, 2, 2, "f") == ("ab\r\nc", "d\nef")
    assert split_at(text, 1, 3, "f") == ("ab", "\r\ncd\nef")  # end of a CRLF line, before the \r
    assert split_at(text, 3, 3, "f") == (text, "")
    with pytest.raises(DllmError, match="line 4 is out of range"):
        split_at(text, 4, 1, "f")
    with pytest.raises(DllmError, match="column 4 is out of range"):
        split_at(text, 1, 4, "f")


def test_complete_prints_a_completion(tiny_checkpoint, tmp_path):
    src = tmp_path / "a.py"
    src.write_text("def add(a, b):\n    return \n")
    r = dllm("complete", str(src), "--line", "2", "--col", "12", "--checkpoint", str(tiny_checkpoint),
             "--max-tokens", "8", "--trace")
    assert r.returncode == 0, r.stderr
    trace = json.loads(r.stderr.decode().strip().splitlines()[-1])
    assert trace["mode"] == "line" and 1 <= trace["steps"] <= trace["tokens"] <= 8


@pytest.mark.parametrize("args,message", [
    (["--line", "9", "--col", "1"], b"line 9 is out of range"),
    (["--line", "1", "--col", "99"], b"column 99 is out of range"),
])
def test_complete_bad_position_is_one_clear_line(tiny_checkpoint, tmp_path, args, message):
    src = tmp_path / "a.py"
    src.write_text("x = 1\n")
    r = dllm("complete", str(src), *args, "--checkpoint", str(tiny_checkpoint))
    assert r.returncode == 2 and message in r.stderr and b"Traceback" not in r.stderr


def test_complete_errors_name_the_problem(tiny_checkpoint, tmp_path):
    bad = tmp_path / "latin1.py"
    bad.write_bytes(b"x = '\xe9'\n")
    r = dllm("complete", str(bad), "--line", "1", "--col", "1", "--checkpoint", str(tiny_checkpoint))
    assert r.returncode == 2 and b"not UTF-8" in r.stderr and b"Traceback" not in r.stderr
    (tiny_checkpoint / "model.safetensors").write_bytes(b"junk")
    good = tmp_path / "ok.py"
    good.write_text("x = 1\n")
    r = dllm("complete", str(good), "--line", "1", "--col", "1", "--checkpoint", str(tiny_checkpoint))
    assert r.returncode == 2 and b"model.safetensors" in r.stderr and b"Traceback" not in r.stderr


def test_batch_answers_every_line_in_order(tiny_checkpoint):
    lines = [
        json.dumps({"prefix": "def f(x):\n    return ", "suffix": "\n", "mode": "line", "max_tokens": 8}).encode(),
        b"{this is not json",
        json.dumps({"prefix": "", "suffix": "", "max_tokens": 4}).encode(),  # empty prefix
        json.dumps({"prefix": "x = 1\n" * 175_000, "mode": "line", "max_tokens": 4}).encode(),  # ~1 MB
        b'{"prefix": "x = \xff\xfe"}',  # not UTF-8
        json.dumps({"prefix": "s = '\udc80'"}).encode(),  # a lone surrogate, valid JSON
        json.dumps({"prefix": 42}).encode(),
        json.dumps({"prefix": "a", "mode": "poem"}).encode(),
        json.dumps({"prefix": "a", "max_tokens": 10**9}).encode(),
        b"",
        json.dumps(["prefix"]).encode(),
        json.dumps({"prefix": "import os\n", "mode": "block", "max_tokens": 6}).encode(),
    ]
    assert len(lines[3]) > 1_000_000
    r = dllm("batch", "--checkpoint", str(tiny_checkpoint), input=b"\n".join(lines) + b"\n")
    assert r.returncode == 0, r.stderr
    out = [json.loads(x) for x in r.stdout.decode().splitlines()]
    assert len(out) == len(lines)
    ok = {0, 2, 3, 11}
    for i, answer in enumerate(out):
        if i in ok:
            assert set(answer) >= {"completion", "steps", "tokens", "ms"}, (i, answer)
            assert 1 <= answer["steps"] <= answer["tokens"]
        else:
            assert set(answer) == {"error"} and answer["error"].startswith(f"line {i + 1}:"), (i, answer)
    assert "UTF-8" in out[4]["error"] and "surrogate" in out[5]["error"] and "JSON" in out[1]["error"]


def test_the_shipped_model_serves_complete_and_batch_without_a_checkpoint(tmp_path):
    """The default model in the package (diffusion_core/weights/default/) answers when no
    --checkpoint is given: README's run command."""
    from dllm_ls.diffusion_core.checkpoint import DEFAULT_CHECKPOINT

    assert sum(f.stat().st_size for f in DEFAULT_CHECKPOINT.iterdir()) < 32 * 2**20  # ships under 32 MB
    src = tmp_path / "fib.py"
    src.write_text("def fibonacci(n):\n    ")
    r = dllm("complete", str(src), "--line", "2", "--col", "5", "--max-tokens", "8", "--trace")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stderr.decode().strip().splitlines()[-1])["tokens"] >= 1
    # README's command itself prints a completion (it printed nothing while a block's fallback
    # commit wrote `"""Return the fibonaccicicici...` to the token limit: docs/results.md)
    r = dllm("complete", str(src), "--line", "2", "--col", "5", "--mode", "block")
    assert r.returncode == 0 and r.stdout.decode().strip(), r.stderr
    r = dllm("batch", input=json.dumps({"prefix": "import os\n", "max_tokens": 4}).encode() + b"\n")
    assert r.returncode == 0 and "completion" in json.loads(r.stdout), r.stderr
