"""PNG loss curves from metrics.jsonl (train.py): training loss (smoothed), validation loss, stages.

`plot_metrics(jsonl, png)` draws one run; `plot_runs({"diffusion": a, "ar": b}, png)` overlays
several runs against training tokens (the side-by-side figure for docs/). matplotlib's Agg backend,
so no display is needed.
"""

from __future__ import annotations

import json
from pathlib import Path


def read_metrics(path: str | Path) -> tuple[list[dict], list[dict]]:
    """(training records, validation records) of a metrics.jsonl."""
    train, val = [], []
    for line in Path(path).read_text().splitlines():
        if not line.strip():
            continue
        r = json.loads(line)
        (val if "val_loss" in r else train).append(r)
    return train, val


def _smooth(ys: list[float], k: int) -> list[float]:
    out, s = [], 0.0
    for i, y in enumerate(ys):
        s += y
        if i >= k:
            s -= ys[i - k]
        out.append(s / min(i + 1, k))
    return out


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_metrics(path: str | Path, png: str | Path, title: str = "") -> Path:
    """Loss curves of one run: loss, its mask (NELBO) and edit parts, validation, the stage switch."""
    plt = _plt()
    train, val = read_metrics(path)
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    if train:
        steps = [r["step"] for r in train]
        k = max(1, len(train) // 50)
        ax.plot(steps, _smooth([r["loss"] for r in train], k), label="train loss")
        if any(r.get("stage") != "ar" for r in train):
            ax.plot(steps, _smooth([r["mask_loss"] for r in train], k), label="masked NELBO part", alpha=0.7)
            edit = [r for r in train if r.get("stage") == "edit"]
            if edit:
                ax.plot([r["step"] for r in edit], _smooth([r["edit_loss"] for r in edit], k),
                        label="CE at corrupted tokens", alpha=0.7)
                before = [r["step"] for r in train if r["step"] < edit[0]["step"]]
                ax.axvline(before[-1] if before else edit[0]["step"], color="gray", ls="--", lw=1,
                           label="edit stage")
        ax2.plot(steps, [r["tokens_per_s"] for r in train], label="tokens/s")
        ax2b = ax2.twinx()
        ax2b.plot(steps, [100 * r["mfu"] for r in train], color="tab:orange", label="MFU %")
        ax2b.set_ylabel("MFU %")
    if val:
        ax.plot([r["step"] for r in val], [r["val_loss"] for r in val], "o-", label="validation")
    ax.set_xlabel("step")
    ax.set_ylabel("nats / token")
    ax.set_yscale("log")
    ax.legend(fontsize=8)
    ax.set_title(title or "loss")
    ax2.set_xlabel("step")
    ax2.set_ylabel("tokens/s")
    ax2.set_title("throughput")
    fig.tight_layout()
    png = Path(png)
    fig.savefig(png, dpi=110)
    plt.close(fig)
    return png


def plot_runs(runs: dict[str, str | Path], png: str | Path, title: str = "validation loss") -> Path:
    """Validation (and smoothed training) loss of several runs against training tokens."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for name, path in runs.items():
        train, val = read_metrics(path)
        if train:
            k = max(1, len(train) // 50)
            line, = ax.plot([r["tokens"] for r in train], _smooth([r["mask_loss"] for r in train], k),
                            alpha=0.4, label=f"{name} train")
            color = line.get_color()
        else:
            color = None
        if val:
            ax.plot([r["tokens"] for r in val], [r["val_loss"] for r in val], "o-", color=color,
                    label=f"{name} validation")
    ax.set_xlabel("training tokens")
    ax.set_ylabel("NELBO (diffusion) / CE (AR), nats per token")
    ax.set_yscale("log")
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    png = Path(png)
    fig.savefig(png, dpi=110)
    plt.close(fig)
    return png


def plot_post(path: str | Path, png: str | Path, title: str = "") -> Path:
    """Post-training (post.py): the speed-up of the inference decoder's rollouts against training
    step (steps per token at the first logged step over steps per token now, Seed's Figure 2a),
    with the rollouts' token accuracy against the data; and the validation NELBO."""
    plt = _plt()
    train, val = read_metrics(path)
    train = [r for r in train if "steps_per_token" in r]
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    if train:
        steps = [r["step"] for r in train]
        base = train[0]["steps_per_token"]
        k = max(1, len(train) // 30)
        ax.plot(steps, _smooth([base / r["steps_per_token"] for r in train], k), label="speed-up (steps/token)")
        ax.set_ylabel("speed-up over the starting model")
        axb = ax.twinx()
        axb.plot(steps, _smooth([r["token_acc"] for r in train], k), color="tab:green", alpha=0.6,
                 label="rollout token accuracy")
        axb.set_ylim(0, 1.05)
        axb.set_ylabel("token accuracy against the data")
        axb.legend(fontsize=8, loc="lower right")
    ax.set_xlabel("step")
    ax.legend(fontsize=8, loc="upper left")
    ax.set_title(title or "speed-up")
    if val:
        ax2.plot([r["step"] for r in val], [r["val_loss"] for r in val], "o-", label="validation NELBO")
    ax2.set_xlabel("step")
    ax2.set_ylabel("nats / token")
    ax2.set_title("validation")
    ax2.legend(fontsize=8)
    fig.tight_layout()
    png = Path(png)
    fig.savefig(png, dpi=110)
    plt.close(fig)
    return png


def main(argv: list[str] | None = None) -> int:
    import argparse

    p = argparse.ArgumentParser(description="plot metrics.jsonl files to a PNG")
    p.add_argument("png")
    p.add_argument("runs", nargs="+", help="metrics.jsonl, or NAME=metrics.jsonl to overlay runs")
    a = p.parse_args(argv)
    if len(a.runs) == 1 and "=" not in a.runs[0]:
        plot_metrics(a.runs[0], a.png)
    else:
        plot_runs(dict(r.split("=", 1) if "=" in r else (Path(r).parent.name, r) for r in a.runs), a.png)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
