"""PNG figures of the training layer: loss curves and base-vs-fine-tuned comparisons."""

from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")  # files only, never a window
import matplotlib.pyplot as plt  # noqa: E402


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def loss_curve_png(history: list[dict[str, float]], title: str) -> bytes:
    """Training and eval loss against the optimiser step."""
    fig, ax = plt.subplots(figsize=(6, 3.5))
    train = [(h["step"], h["loss"]) for h in history if "loss" in h]
    evals = [(h["step"], h["eval_loss"]) for h in history if "eval_loss" in h]
    if train:
        ax.plot(*zip(*train, strict=True), label="train loss", marker=".")
    if evals:
        ax.plot(*zip(*evals, strict=True), label="eval loss", marker="o")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    return _png(fig)


def comparison_png(groups: list[str], base: list[float], tuned: list[float], ylabel: str, title: str,
                   labels: tuple[str, str] = ("base", "fine-tuned")) -> bytes:
    """Side-by-side bars of base and fine-tuned (or ``labels``) per group (task or language)."""
    fig, ax = plt.subplots(figsize=(max(5, 0.9 * len(groups) + 2), 3.5))
    x = range(len(groups))
    ax.bar([i - 0.2 for i in x], base, width=0.4, label=labels[0])
    ax.bar([i + 0.2 for i in x], tuned, width=0.4, label=labels[1])
    ax.set_xticks(list(x), groups, rotation=30, ha="right")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend()
    ax.grid(axis="y", alpha=0.3)
    return _png(fig)
