"""Q2 completions of an earlier run, cut again by today's stops (diffusion_core/stops.py and
`Sampler._cut`), and scored: parse rate and edit similarity, as run and as cut.

For runs made before those stops: a stop only cuts, and the text before it does not depend on
where decoding ended, so the cut texts are today's, with one exception: the old cut stripped the
line break after a text's last line, so for a text that ran out of tokens a last line that was
complete is dropped too (rare: the last token would have had to be a line break). Speed is not
exact (a decoder that stops sooner spends fewer steps), so no tokens/s figure is given.

    python scripts/restop_texts.py REPORT [REPORT ...]

REPORT: a `bench speed` report (`--report`, .json or .json.gz: its Q2 rows per setting) or an
`eval q2 --json` file (.json or .json.gz).
"""

from __future__ import annotations

import gzip
import json
import sys

from dllm_ls.diffusion_core.sampler import Sampler
from dllm_ls.diffusion_core.stops import StopContext
from dllm_ls.trainer.eval import edit_similarity, syntax_valid
from dllm_ls.trainer.humaneval import q2_tasks


def load(path: str) -> dict:
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as f:
        return json.load(f)


def settings(report: dict):
    """(label, [(task id, text, stop)]) per Q2 setting of the report."""
    if "results" in report:  # bench speed
        for r in report["results"]:
            if r["bench"] == "Q2":
                label = r["kind"] if r["threshold"] is None else f"{r['kind']} t {r['threshold']:g}"
                yield label, [(row["task"], row["text"], row["stop"]) for row in r["rows"]]
    else:  # eval q2 --json
        yield report.get("model", "?"), [(t["task_id"], t["completion"], t["stop"]) for t in report["tasks"]]


def cut(task, text: str, stop: str) -> str:
    """The text as today's decoders would have given it (`Sampler._cut`: the stops that wait for a
    final text, and the cut at the token limit)."""
    ctx = StopContext.from_text("block", task.prefix, task.suffix)
    return Sampler._cut(None if stop == "max_tokens" else (len(text), "eos"), text, ctx)[1]


def main(paths: list[str]) -> int:
    tasks = {t.task_id: t for t in q2_tasks()}
    print(f"{'run':40s} {'n':>4s} {'parses':>13s} {'edit sim':>15s} {'cut':>4s}")
    for path in paths:
        for label, rows in settings(load(path)):
            n = len(rows)
            before = after = sim_before = sim_after = changed = 0
            for task_id, text, stop in rows:
                task = tasks[task_id]
                new = cut(task, text, stop)
                changed += new.rstrip() != text.rstrip()
                before += syntax_valid(task, text)
                after += syntax_valid(task, new)
                sim_before += edit_similarity(text, task.target)
                sim_after += edit_similarity(new, task.target)
            print(f"{label[:40]:40s} {n:4d} {before / n:6.1%} -> {after / n:5.1%} "
                  f"{sim_before / n:.3f} -> {sim_after / n:.3f} {changed:4d}")
    return 0


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    sys.exit(main(sys.argv[1:]))
