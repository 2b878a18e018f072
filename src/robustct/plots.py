"""Matplotlib figures (Agg backend; written to files, never shown)."""
from __future__ import annotations

from pathlib import Path

import numpy as np


def _plt():
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    return plt


def roc_plot(roc: dict, auc: float, path: Path) -> None:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(4, 4))
    ax.plot(roc["fpr"], roc["tpr"], label=f"AUC = {auc:.3f}")
    ax.plot([0, 1], [0, 1], "k--", lw=0.8)
    ax.set(xlabel="1 - specificity", ylabel="sensitivity", title="ROC (test)")
    ax.legend(loc="lower right")
    fig.tight_layout(); fig.savefig(path, dpi=120); plt.close(fig)


def confusion_plot(cm: list[list[int]], labels: list[str], path: Path) -> None:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(3.6, 3.2))
    ax.imshow(np.asarray(cm), cmap="Blues")
    for i in range(2):
        for j in range(2):
            ax.text(j, i, str(cm[i][j]), ha="center", va="center")
    ax.set_xticks([0, 1], labels); ax.set_yticks([0, 1], labels)
    ax.set(xlabel="predicted", ylabel="true", title="confusion matrix (test)")
    fig.tight_layout(); fig.savefig(path, dpi=120); plt.close(fig)


def accuracy_vs_epsilon(curves: dict[str, list[dict]], path: Path, paper: dict | None = None,
                        title: str = "robust accuracy vs epsilon", key: str = "robust_accuracy",
                        log_x: bool = False) -> None:
    """One line per curve name; optional paper points ``{epsilon: accuracy}``."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 3.6))
    for name, pts in curves.items():
        ax.plot([p["epsilon"] for p in pts], [p[key] for p in pts], marker="o", ms=3, label=name)
    if paper:
        ax.plot(list(paper), list(paper.values()), "k--", marker="x", label="paper (non-COVID)")
    if log_x:
        ax.set_xscale("log")
    ax.set(xlabel="epsilon (L-inf, [0,1] pixel units)", ylabel=key.replace("_", " "), ylim=(-0.02, 1.02), title=title)
    ax.grid(alpha=0.3)
    if curves or paper:
        ax.legend(fontsize=7)
    fig.tight_layout(); fig.savefig(path, dpi=120); plt.close(fig)


def adversarial_grid(x, x_adv: dict, clean_prob, adv_prob: dict, labels, path: Path) -> None:
    """Rows: images; columns: original, then per epsilon the amplified perturbation and the adversarial image.

    Args:
        x: (K, 1, H, W) float in [0, 1]; x_adv: {epsilon: (K, 1, H, W)};
        clean_prob, adv_prob[eps]: (K,) P(COVID); labels: (K,) true class names.
    """
    plt = _plt()
    eps = list(x_adv)
    k = len(x)
    fig, axes = plt.subplots(k, 1 + 2 * len(eps), figsize=(1.6 * (1 + 2 * len(eps)), 1.7 * k), squeeze=False)
    for i in range(k):
        axes[i, 0].imshow(x[i, 0], cmap="gray", vmin=0, vmax=1)
        axes[i, 0].set_title(f"{labels[i]}\nP(covid)={clean_prob[i]:.2f}", fontsize=6)
        for j, e in enumerate(eps):
            d = (x_adv[e][i, 0] - x[i, 0]).numpy()
            scale = max(float(np.abs(d).max()), 1e-8)
            axes[i, 1 + 2 * j].imshow(0.5 + 0.5 * d / scale, cmap="gray", vmin=0, vmax=1)
            axes[i, 1 + 2 * j].set_title(f"delta x{0.5 / scale:.0f}\neps={e:.3g}", fontsize=6)
            axes[i, 2 + 2 * j].imshow(x_adv[e][i, 0], cmap="gray", vmin=0, vmax=1)
            axes[i, 2 + 2 * j].set_title(f"adversarial\nP(covid)={adv_prob[e][i]:.2f}", fontsize=6)
    for ax in axes.flat:
        ax.axis("off")
    fig.tight_layout(); fig.savefig(path, dpi=110); plt.close(fig)


def training_curves(history: list[dict], path: Path) -> None:
    plt = _plt()
    fig, ax = plt.subplots(1, 2, figsize=(8, 3))
    ep = [h["epoch"] for h in history]
    for k in ("train_loss", "val_loss"):
        ax[0].plot(ep, [h[k] for h in history], label=k)
    for k in ("train_accuracy", "val_accuracy", "val_auc", "val_robust_accuracy"):
        if k in history[0]:
            ax[1].plot(ep, [h[k] for h in history], label=k)
    for a in ax:
        a.set_xlabel("epoch"); a.legend(fontsize=7); a.grid(alpha=0.3)
    fig.tight_layout(); fig.savefig(path, dpi=110); plt.close(fig)


def original_vs_adversarial(x, x_adv: dict, clean_prob, adv_prob: dict, labels, path: Path, title: str = "") -> None:
    """The reference paper's figure 3: original and adversarial images with predictions and confidences.

    Args:
        x: (K, 1, H, W) float in [0, 1]; x_adv: {attack name: (K, 1, H, W)};
        clean_prob, adv_prob[name]: (K, 2) class probabilities (0 = non_covid, 1 = covid);
        labels: (K,) true class names.
    """
    from .models import LABELS  # noqa: PLC0415

    plt = _plt()
    names = list(x_adv)
    k = len(x)
    fig, axes = plt.subplots(k, 1 + len(names), figsize=(1.9 * (1 + len(names)), 2.0 * k), squeeze=False)
    for i in range(k):
        c = int(np.argmax(clean_prob[i]))
        axes[i, 0].imshow(x[i, 0], cmap="gray", vmin=0, vmax=1)
        axes[i, 0].set_title(f"original ({labels[i]})\n{LABELS[c]} {clean_prob[i][c]:.2f}", fontsize=6)
        for j, n in enumerate(names):
            a = int(np.argmax(adv_prob[n][i]))
            axes[i, 1 + j].imshow(x_adv[n][i, 0], cmap="gray", vmin=0, vmax=1)
            axes[i, 1 + j].set_title(f"{n}\n{LABELS[a]} {adv_prob[n][i][a]:.2f}", fontsize=6,
                                     color="red" if a != c else "black")
    for ax in axes.flat:
        ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=8)
    fig.tight_layout(); fig.savefig(path, dpi=110); plt.close(fig)
