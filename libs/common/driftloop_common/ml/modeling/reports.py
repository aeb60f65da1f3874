"""Figures and markdown that people read next to the numbers (MLflow artifacts)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from sklearn.metrics import confusion_matrix


def _pyplot():  # type: ignore[no-untyped-def]
    import matplotlib

    matplotlib.use("Agg")  # no display in a service
    import matplotlib.pyplot as plt

    return plt


def confusion_matrix_png(
    y_true: Sequence[str], y_pred: Sequence[str], labels: Sequence[str], path: Path
) -> Path:
    """Row-normalized confusion matrix (each row: where that true class went)."""
    plt = _pyplot()
    labels = list(labels)
    matrix = confusion_matrix(list(y_true), list(y_pred), labels=labels).astype(float)
    rows = matrix.sum(axis=1, keepdims=True)
    shares = np.divide(matrix, rows, out=np.zeros_like(matrix), where=rows > 0)
    size = min(4 + 0.28 * len(labels), 30)
    fig, ax = plt.subplots(figsize=(size, size))
    image = ax.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(labels)), labels, rotation=90, fontsize=7)
    ax.set_yticks(range(len(labels)), labels, fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title("confusion matrix (share of each true class)")
    fig.colorbar(image, ax=ax, fraction=0.046)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def per_class_f1_png(
    challenger: Mapping[str, float], champion: Mapping[str, float] | None, path: Path
) -> Path:
    """F1 per class, challenger next to champion, worst challenger classes first."""
    plt = _pyplot()
    labels = sorted(challenger, key=lambda label: challenger[label])
    y = np.arange(len(labels))
    fig, ax = plt.subplots(figsize=(7, min(3 + 0.22 * len(labels), 30)))
    height = 0.4 if champion else 0.8
    ax.barh(y, [challenger[label] for label in labels], height, label="challenger")
    if champion:
        values = [champion.get(label, 0.0) for label in labels]
        ax.barh(y + height, values, height, label="champion", alpha=0.7)
    ax.set_yticks(y + (height / 2 if champion else 0), labels, fontsize=7)
    ax.set_xlim(0, 1)
    ax.set_xlabel("F1 on the test window")
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    def cell(value: object) -> str:
        return f"{value:.4f}" if isinstance(value, float) else str(value)

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)
