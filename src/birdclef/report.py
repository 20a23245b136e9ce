"""What a person looks at after validation: ROC curves of the worst classes, and log-mel images of
validation windows with the model's top predictions. Written as PNGs (and logged to wandb)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: training machines have no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from sklearn.metrics import roc_curve  # noqa: E402


def worst_classes(per_class: dict[str, float], k: int) -> list[str]:
    """The k scored classes with the lowest AUC (NaN = unscored, never 'worst')."""
    scored = [(auc, name) for name, auc in per_class.items() if not math.isnan(auc)]
    return [name for _, name in sorted(scored)[:k]]


def roc_points(y_true: np.ndarray, y_score: np.ndarray, max_points: int = 50) -> dict[str, list[float]]:
    """ROC curve of one class, thinned to at most max_points (enough to draw, small for JSON)."""
    fpr, tpr, _ = roc_curve(y_true, y_score)
    keep = np.unique(np.linspace(0, len(fpr) - 1, min(max_points, len(fpr))).round().astype(int))
    return {"fpr": fpr[keep].round(4).tolist(), "tpr": tpr[keep].round(4).tolist()}


def worst_roc_curves(targets: np.ndarray, probs: np.ndarray, class_names: Sequence[str],
                     per_class: dict[str, float], k: int = 5) -> dict[str, dict]:
    """{class: {auc, fpr, tpr}} for the k worst classes."""
    index = {name: i for i, name in enumerate(class_names)}
    return {name: {"auc": per_class[name], **roc_points(targets[:, index[name]], probs[:, index[name]])}
            for name in worst_classes(per_class, k)}


def plot_roc_curves(curves: dict[str, dict], title: str, path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(5, 5))
    for name, curve in curves.items():
        ax.plot(curve["fpr"], curve["tpr"], label=f"{name} (AUC {curve['auc']:.3f})")
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title=title)
    ax.legend(loc="lower right", fontsize=8)
    return _save(fig, path)


@torch.no_grad()
def plot_windows(frontend: torch.nn.Module, windows: torch.Tensor, targets: np.ndarray, probs: np.ndarray,
                 class_names: Sequence[str], path: Path, top_k: int = 3) -> Path:
    """Log-mel images of a few windows [N, T], titled with true labels and the top-k predictions."""
    images = frontend(windows.float())[:, 0].cpu().numpy()  # [N, M, F]
    fig, axes = plt.subplots(len(images), 1, figsize=(8, 2.2 * len(images)), squeeze=False)
    for ax, image, target, prob in zip(axes[:, 0], images, targets, probs):
        ax.imshow(image, origin="lower", aspect="auto", cmap="magma")
        truth = ", ".join(class_names[c] for c in np.flatnonzero(target >= 0.5)) or "none"
        top = ", ".join(f"{class_names[c]} {prob[c]:.2f}" for c in np.argsort(prob)[::-1][:top_k])
        ax.set_title(f"true: {truth} | predicted: {top}", fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    return _save(fig, path)


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path
