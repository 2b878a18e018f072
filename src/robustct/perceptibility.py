"""Perceptibility of adversarial perturbations (the reference paper's figures 3 to 5).

Per image: L-infinity, L2 and L0 norms of ``x_adv - x`` (pixel units, [0, 1] scale; L0 counts
pixels changed by more than ``tol``, also given as a fraction), PSNR in dB and SSIM between
original and adversarial image. PSNR and SSIM come from scikit-image
(``skimage.metrics.peak_signal_noise_ratio`` / ``structural_similarity``, data_range 1).
"""
from __future__ import annotations

import math

import numpy as np
import torch

FIELDS = ("linf", "l2", "l0", "l0_fraction", "psnr", "ssim")


def per_sample(x: torch.Tensor, x_adv: torch.Tensor, tol: float = 1e-6) -> dict[str, np.ndarray]:
    """Per-image perceptibility numbers.

    Args:
        x, x_adv: (N, C, H, W) float in [0, 1] (any device).
        tol: smallest change counted by L0.

    Returns:
        ``{field: float64 array (N,)}`` for every field in ``FIELDS``; PSNR is ``inf`` for an
        unchanged image.

    Raises:
        ValueError: shapes differ.
    """
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity  # noqa: PLC0415

    if x.shape != x_adv.shape:
        raise ValueError(f"shapes differ: {tuple(x.shape)} vs {tuple(x_adv.shape)}")
    a = x.detach().double().cpu().numpy()
    b = x_adv.detach().double().cpu().numpy()
    d = (b - a).reshape(len(a), -1)
    out = {
        "linf": np.abs(d).max(1) if d.size else np.zeros(len(a)),
        "l2": np.linalg.norm(d, axis=1),
        "l0": (np.abs(d) > tol).sum(1).astype(float),
    }
    out["l0_fraction"] = out["l0"] / max(d.shape[1], 1)
    psnr, ssim = [], []
    for i in range(len(a)):
        if not np.any(d[i]):
            psnr.append(math.inf)
            ssim.append(1.0)
            continue
        psnr.append(peak_signal_noise_ratio(a[i], b[i], data_range=1.0))
        # channel-first images: compare each channel's 2-D image, average over channels
        ssim.append(float(np.mean([structural_similarity(a[i, c], b[i, c], data_range=1.0)
                                   for c in range(a.shape[1])])))
    out["psnr"], out["ssim"] = np.asarray(psnr, float), np.asarray(ssim, float)
    return out


def medians(stats: dict[str, np.ndarray], mask: np.ndarray | None = None) -> dict[str, float]:
    """Median of each field (over ``mask``, e.g. the successful adversarial images); NaN if empty."""
    out = {}
    for k, v in stats.items():
        v = v if mask is None else v[mask]
        out[f"median_{k}"] = float(np.median(v)) if len(v) else float("nan")
    return out
