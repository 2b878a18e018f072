"""Exact and near-duplicate images: pairs, verdicts and the clusters the split keeps together.

Near-duplicates are found in two steps:

1. candidates: pairs whose 64-bit perceptual hashes (``imagehash.phash``, DCT of a 32x32
   grayscale thumbnail; Zauner, 2010, "Implementation and Benchmarking of Perceptual Image
   Hash Functions") differ in at most ``max_hash_distance`` bits;
2. confirmation: the structural similarity (SSIM, Wang et al., 2004; ``skimage.metrics``) of
   the two images after the project's preprocessing at 64x64 is at least ``min_ssim``.

The hash alone confuses different CT slices with similar layout (on COVID-CT, distance 4
already pairs unrelated images); SSIM on the preprocessed pixels separates them. Exact
duplicates (same SHA-256) are always pairs, whatever the thresholds.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from .images import load_preprocessed
from ..progress import progress

PAIR_COLUMNS = ["path_a", "path_b", "label_a", "label_b", "hash_distance", "ssim", "exact", "kind"]
SSIM_SIZE = 64


def hash_bits(hashes) -> np.ndarray:
    """Hex perceptual hashes (16 hex digits each) to a (N, 64) uint8 bit matrix."""
    hashes = list(hashes)
    if not hashes:
        return np.zeros((0, 64), dtype=np.uint8)
    raw = np.frombuffer(b"".join(bytes.fromhex(h) for h in hashes), dtype=np.uint8).reshape(len(hashes), -1)
    return np.unpackbits(raw, axis=1)


def candidate_pairs(hashes, max_distance: int, chunk: int = 512) -> list[tuple[int, int, int]]:
    """Index pairs ``(i, j, hamming distance)``, ``i < j``, with distance <= ``max_distance``.

    Memory is O(chunk x N x 64) bytes, so thousands of images stay cheap.
    """
    bits = hash_bits(hashes)
    n = len(bits)
    out = []
    for start in range(0, n, chunk):
        block = bits[start:start + chunk]
        dist = (block[:, None, :] != bits[None, :, :]).sum(-1)
        ii, jj = np.nonzero(dist <= max_distance)
        for i, j in zip(ii + start, jj):
            if i < j:
                out.append((int(i), int(j), int(dist[i - start, j])))
    return out


def find_duplicates(table: pd.DataFrame, root: Path, max_hash_distance: int, min_ssim: float) -> pd.DataFrame:
    """All exact and near-duplicate pairs among the decodable rows of the per-image table.

    Args:
        table: :func:`robustct.data.table.build_table` output (columns path, label, sha256, phash, decode_ok).
        root: dataset folder (candidate pairs are decoded again for SSIM, 64x64).
        max_hash_distance: phash Hamming distance in bits, 0..64.
        min_ssim: SSIM in [-1, 1] a candidate pair needs to count as a near-duplicate.

    Returns:
        One row per pair with :data:`PAIR_COLUMNS`; ``kind`` is ``label_conflict`` (the labels
        differ: an error), ``exact_duplicate`` (same bytes, same label: an error) or
        ``near_duplicate`` (same label: a warning; the split keeps them together).
    """
    from skimage.metrics import structural_similarity  # noqa: PLC0415  (only validation needs it)

    ok = table[table.decode_ok.astype(bool) & (table.phash != "")].reset_index(drop=True)
    pairs = {(i, j): d for i, j, d in candidate_pairs(ok.phash, max_hash_distance)}
    for _, idx in ok.groupby("sha256").groups.items():  # exact copies, whatever their hash distance
        idx = sorted(idx)
        for a in idx:
            for b in idx:
                if a < b:
                    pairs.setdefault((a, b), 0)
    thumbs: dict[int, np.ndarray] = {}

    def thumb(i: int) -> np.ndarray:
        if i not in thumbs:
            thumbs[i] = load_preprocessed(Path(root) / ok.path[i], SSIM_SIZE).astype(np.float64) / 255.0
        return thumbs[i]

    rows = []
    for (i, j), dist in progress(sorted(pairs.items()), "validate: comparing near-duplicate candidates (SSIM)"):
        exact = ok.sha256[i] == ok.sha256[j]
        score = 1.0 if exact else float(structural_similarity(thumb(i), thumb(j), data_range=1.0))
        if not exact and score < min_ssim:
            continue
        a, b = ok.iloc[i], ok.iloc[j]
        kind = "label_conflict" if a.label != b.label else "exact_duplicate" if exact else "near_duplicate"
        rows.append(dict(path_a=a.path, path_b=b.path, label_a=a.label, label_b=b.label,
                         hash_distance=int(dist), ssim=round(score, 4), exact=bool(exact), kind=kind))
    return pd.DataFrame(rows, columns=PAIR_COLUMNS)


def components(nodes, edges) -> dict:
    """Connected components (union-find): ``{node: smallest node of its component}``.

    Args:
        nodes: hashable, orderable items; ``edges``: pairs of items (pairs naming unknown
            items are ignored).
    """
    parent = {n: n for n in nodes}

    def find(n):
        while parent[n] != n:
            parent[n] = parent[parent[n]]
            n = parent[n]
        return n

    for a, b in edges:
        if a in parent and b in parent:
            ra, rb = find(a), find(b)
            if ra != rb:
                parent[max(ra, rb)] = min(ra, rb)
    return {n: find(n) for n in parent}


def clusters(paths, pairs: pd.DataFrame) -> dict[str, str]:
    """Duplicate clusters: ``{path: smallest path of its component}`` (a path without duplicates is its own)."""
    return components(paths, zip(pairs.path_a, pairs.path_b))
