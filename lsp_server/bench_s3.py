"""`dllm-ls bench s3`: many simulated editors typing against one resident core (design S3).

    dllm-ls bench s3 --checkpoint DIR --editors 1,8,32 --seconds 15 --device cuda --json docs/results.json

Starts a real `dllm-ls core` on a socket in a private temporary directory (its log next to it,
removed at the end unless `--core-log PATH`), then for each N in `--editors` runs N simulated
editors at once, each an asyncio task with its own msgpack-rpc connection (`SocketCore`) and its
own document: a real Python source file of the standard library, the cursor at a seeded line in
it, the code after the region being typed as the suffix. Each editor "types" the file's real text
one character at a time, every 100-150 ms (uniformly jittered, seeded per editor), and after each
keystroke sends a `complete` for its document with the prompt window the language server would
send (`engine.prompt_window`). A newer request supersedes the older one in the core, as an editor's
does; superseded requests are counted, not timed. Each editor first sends one untimed request
(opening the document: the core builds its KV session), so the figures are the steady state of
typing. After `--seconds` the editors stop typing and the last requests are awaited.

Per N: latency of the answered requests (client send -> answer, through the socket) p50/p95;
completed requests/s and generated tokens/s over the phase's wall time (first keystroke to last
answer); counts of sent, superseded and failed requests; the core's denoising steps.

`--json PATH` merges S3.p50_ms_{N}_editors, S3.p95_ms_{N}_editors, S3.requests_per_s_{N}_editors,
S3.tokens_per_s_{N}_editors into PATH (the docs/results.json format, `bench.write_results`); the
machine field says which device ran it. Note: the names carry no device, so a CPU run and a GPU run
merged into the same file overwrite each other; keep CPU runs in another file.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import random
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

from .bench import BenchError, add_model_arguments, describe_machine, percentile, write_results
from .core_client import CompletionCancelled, CompletionRequest, CoreError, SocketCore
from .engine import prompt_window

# stdlib modules whose source the editors type (each editor its own file; more editors than files:
# the same file at another place, still a document of its own)
SOURCE_FILES = [
    "textwrap.py", "string.py", "bisect.py", "heapq.py", "colorsys.py", "fractions.py", "shlex.py",
    "glob.py", "fnmatch.py", "difflib.py", "queue.py", "sched.py", "statistics.py", "calendar.py",
    "csv.py", "ftplib.py", "gzip.py", "hmac.py", "imaplib.py", "ipaddress.py", "mailbox.py",
    "netrc.py", "numbers.py", "optparse.py", "pprint.py", "random.py", "secrets.py", "selectors.py",
    "smtplib.py", "socketserver.py", "tabnanny.py", "tempfile.py", "threading.py", "trace.py",
    "uuid.py", "wave.py", "zipapp.py", "argparse.py", "base64.py", "configparser.py",
]


def add_arguments(sub):
    help_ = "N simulated editors typing against one core: throughput and p50/p95 latency (S3)"
    b = sub.add_parser("s3", help=help_, description=help_)
    add_model_arguments(b, "CPU threads for the core's model")
    b.add_argument("--editors", default="1,8,32", metavar="N,N,...", help="numbers of editors, one phase each")
    b.add_argument("--seconds", type=float, default=15.0, metavar="S", help="typing time of each phase")
    b.add_argument("--interval-ms", default="100,150", metavar="LO,HI",
                   help="time between keystrokes, uniform in [LO, HI] ms")
    b.add_argument("--mode", choices=("line", "block"), default="line")
    b.add_argument("--max-tokens", type=int, default=64)
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--json", metavar="PATH", help="merge the figures into this JSON file (docs/results.json)")
    b.add_argument("--core-log", metavar="PATH", help="keep the core's log here")
    b.add_argument("--start-timeout", type=float, default=600.0, metavar="S",
                   help="wait this long for the core to load the model")


def parse_editors(s: str) -> list[int]:
    try:
        ns = [int(x) for x in s.split(",") if x.strip()]
    except ValueError:
        raise BenchError(f"--editors {s}: expected numbers separated by commas, e.g. 1,8,32") from None
    if not ns or any(n < 1 for n in ns):
        raise BenchError(f"--editors {s}: expected numbers >= 1, e.g. 1,8,32")
    return ns


def documents(n: int, seed: int, chars: int) -> list[tuple[str, int, int]]:
    """n (text, start, end): editor i types text[start:end] (chars long) into text[:start] +
    text[end:]; files from SOURCE_FILES in turn, start at a seeded line start in the file's middle."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    texts = []
    for name in SOURCE_FILES:
        try:
            t = (stdlib / name).read_text(encoding="utf-8")
        except OSError:
            continue
        if len(t) > 4 * chars:
            texts.append(t)
    if not texts:
        raise BenchError(f"no Python source found in {stdlib}")
    out = []
    for i in range(n):
        text = texts[i % len(texts)]
        rng = random.Random(f"s3-doc:{seed}:{i}")
        pos = rng.randrange(len(text) // 5, len(text) - 2 * chars)
        start = text.find("\n", pos) + 1
        out.append((text, start, start + chars))
    return out


class CoreProcess:
    """A private `dllm-ls core` subprocess; stopped (and its temp dir removed) by `stop`."""

    def __init__(self, args):
        self.args = args
        self.tmp = Path(tempfile.mkdtemp(prefix="dllm-s3-"))
        self.sock = self.tmp / "run" / "core.sock"
        self.log = Path(args.core_log) if args.core_log else self.tmp / "core.log"
        cmd = [sys.executable, "-m", "dllm_ls.cli", "core", "--socket", str(self.sock), "--device", args.device,
               "--no-watch", "--log-file", str(self.log)]
        if args.checkpoint:
            cmd += ["--checkpoint", str(args.checkpoint)]
        if args.threads:
            cmd += ["--threads", str(args.threads)]
        self.sock.parent.mkdir(mode=0o700)
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE)

    async def wait_listening(self, timeout: float = 60.0):
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode(errors="replace").strip().splitlines()[-1:] or [""]
                raise BenchError(f"the core exited at start (status {self.proc.returncode}): {err[0]}; see {self.log}")
            if self.sock.exists():
                try:
                    _, w = await asyncio.open_unix_connection(str(self.sock))
                    w.close()
                    return
                except OSError:
                    pass
            if time.monotonic() > deadline:
                raise BenchError(f"the core did not listen within {timeout:.0f} s; see {self.log}")
            await asyncio.sleep(0.05)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc.stderr.close()
        shutil.rmtree(self.tmp, ignore_errors=True)


class SimEditor:
    """One editor: its own connection and document, typing and asking for completions."""

    _ids = itertools.count(1)

    def __init__(self, sock: Path, uri: str, doc: tuple[str, int, int], rng: random.Random, args):
        self.client = SocketCore(sock, spawn=False)
        self.uri, self.rng, self.args = uri, rng, args
        self.text, self.start, self.end = doc
        self.lat_ms: list[float] = []
        self.tokens = self.sent = self.superseded = self.failed = 0
        self.errors: list[str] = []

    def request(self, typed: int) -> CompletionRequest:
        before = self.text[:self.start + typed]
        prefix, suffix, _ = prompt_window(before, self.text[self.end:])
        return CompletionRequest(id=next(self._ids), uri=self.uri, prefix=prefix, suffix=suffix,
                                 mode=self.args.mode, max_tokens=self.args.max_tokens)

    async def open(self):
        """The untimed first request: the core builds the document's session."""
        await self.client._ensure()
        try:
            await self.client.complete(self.request(0))
        except CompletionCancelled:
            pass

    async def _one(self, req: CompletionRequest):
        self.sent += 1
        t0 = time.perf_counter()
        try:
            res = await self.client.complete(req)
        except CompletionCancelled:
            self.superseded += 1
            return
        except CoreError as e:
            self.failed += 1
            self.errors.append(e.message)
            return
        self.lat_ms.append((time.perf_counter() - t0) * 1000)
        self.tokens += res.tokens

    async def type(self, t_start: float, seconds: float, lo: float, hi: float):
        loop = asyncio.get_running_loop()
        pending = []
        t_next, typed = t_start, 0
        while t_next < t_start + seconds and self.start + typed < self.end:
            await asyncio.sleep(max(0.0, t_next - loop.time()))
            typed += 1
            pending.append(asyncio.ensure_future(self._one(self.request(typed))))
            t_next += self.rng.uniform(lo, hi)  # absolute schedule: event-loop lag does not slow typing
        await asyncio.gather(*pending)

    async def close(self):
        self.client.close_document(self.uri)
        await asyncio.sleep(0)
        await self.client.close()


async def phase(sock: Path, n: int, args, lo: float, hi: float, stats) -> dict:
    chars = int(args.seconds / lo) + 2
    editors = [SimEditor(sock, f"file:///s3/n{n}/editor{i}.py", doc, random.Random(f"s3-typing:{args.seed}:{n}:{i}"), args)
               for i, doc in enumerate(documents(n, args.seed, chars))]
    await asyncio.gather(*(e.open() for e in editors))
    before = await stats()
    loop = asyncio.get_running_loop()
    t0 = loop.time() + 0.05
    await asyncio.gather(*(e.type(t0, args.seconds, lo, hi) for e in editors))
    wall = loop.time() - t0
    after = await stats()
    for e in editors:
        await e.close()
    lat = [x for e in editors for x in e.lat_ms]
    errors = [m for e in editors for m in e.errors]
    if errors and not lat:
        raise BenchError(f"{n} editors: every request failed: {errors[0]}")
    done, tokens = len(lat), sum(e.tokens for e in editors)
    return dict(editors=n, wall_s=round(wall, 2), sent=sum(e.sent for e in editors), completed=done,
                superseded=sum(e.superseded for e in editors), failed=len(errors),
                p50_ms=round(percentile(lat, 50), 1), p95_ms=round(percentile(lat, 95), 1),
                mean_ms=round(sum(lat) / done, 1) if done else 0.0,
                requests_per_s=round(done / wall, 2), tokens_per_s=round(tokens / wall, 1),
                core_steps=after.get("steps", 0) - before.get("steps", 0))


async def bench_s3(args) -> dict:
    ns = parse_editors(args.editors)
    try:
        lo, hi = (float(x) / 1000 for x in args.interval_ms.split(","))
    except ValueError:
        raise BenchError(f"--interval-ms {args.interval_ms}: expected LO,HI in ms, e.g. 100,150") from None
    if not 0 < lo <= hi or args.seconds <= 0:
        raise BenchError("--interval-ms needs 0 < LO <= HI and --seconds > 0")
    core = CoreProcess(args)
    try:
        await core.wait_listening()
        probe = SocketCore(core.sock, spawn=False)
        try:
            h = await asyncio.wait_for(probe.wait_ready(), args.start_timeout)
        except asyncio.TimeoutError:
            raise BenchError(f"the core did not load the model within {args.start_timeout:.0f} s; "
                             f"see {core.log}") from None
        if h.state != "ready":
            raise BenchError(f"the core has no model: {h.message}" + (f"; {h.fix}" if h.fix else ""))

        async def stats() -> dict:
            err, res = await probe._call("stats", timeout=10)
            return res if err is None and isinstance(res, dict) else {}

        # one-time initialisation is not counted: one request in an unrelated document first
        await probe.complete(CompletionRequest(id=0, uri="file:///s3/warmup.py", prefix="def f(x):\n    return ",
                                               mode=args.mode, max_tokens=args.max_tokens))
        rows = []
        for n in ns:
            print(f"s3: {n} editors, {args.seconds:g} s ...", file=sys.stderr, flush=True)
            rows.append(await phase(core.sock, n, args, lo, hi, stats))
        await probe.close()
        return {"rows": rows, "model": h.model, "device": h.device}
    finally:
        core.stop()


def table(rows: list[dict]) -> str:
    out = ["| editors | sent | answered | superseded | failed | p50 ms | p95 ms | requests/s | tokens/s | core steps |",
           "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        out.append(f"| {r['editors']} | {r['sent']} | {r['completed']} | {r['superseded']} | {r['failed']} "
                   f"| {r['p50_ms']} | {r['p95_ms']} | {r['requests_per_s']} | {r['tokens_per_s']} | {r['core_steps']} |")
    return "\n".join(out)


def figures(rows: list[dict]) -> dict:
    f = {}
    for r in rows:
        n = r["editors"]
        f[f"S3.p50_ms_{n}_editors"] = (r["p50_ms"], "ms")
        f[f"S3.p95_ms_{n}_editors"] = (r["p95_ms"], "ms")
        f[f"S3.requests_per_s_{n}_editors"] = (r["requests_per_s"], "requests/s")
        f[f"S3.tokens_per_s_{n}_editors"] = (r["tokens_per_s"], "tokens/s")
    return f


def run(args) -> int:
    out = asyncio.run(bench_s3(args))
    print(f"s3: model {out['model']} on {out['device']}, {args.seconds:g} s of typing per phase, "
          f"mode {args.mode}, max {args.max_tokens} tokens")
    print(table(out["rows"]))
    if args.json:
        command = "dllm-ls bench " + " ".join(sys.argv[2:] if len(sys.argv) > 2 else ["s3"])
        write_results(args.json, figures(out["rows"]), describe_machine(out["device"]), command)
    return 0
