"""Shared fixtures: tiny models, tiny images, a tiny on-disk COVID-CT-like dataset."""
from __future__ import annotations

import csv
import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "datasets" / "covid-ct"


class TinyNet(nn.Module):
    """Conv + BatchNorm + linear: small, has BN statistics and dropout to check modes."""

    def __init__(self, size: int = 16, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.drop = nn.Dropout(0.5)
        self.fc = nn.Linear(4 * size * size, 2)

    def forward(self, x):
        return self.fc(self.drop(torch.relu(self.bn(self.conv(x))).flatten(1)))


@pytest.fixture
def tiny_model():
    model = TinyNet()
    model.train()
    with torch.no_grad():  # give BN non-trivial running statistics
        model(torch.rand(8, 1, 16, 16))
    return model.eval()


@pytest.fixture
def tiny_batch():
    g = torch.Generator().manual_seed(1)
    return torch.rand(12, 1, 16, 16, generator=g), torch.randint(0, 2, (12,), generator=g)


def write_dataset(root: Path, n_covid: int = 4, n_non: int = 4, size: int = 80) -> dict[str, str]:
    """Write a tiny COVID-CT-like dataset; returns ``{relative path: sha256}``."""
    rng = np.random.default_rng(0)
    (root / "CT_COVID").mkdir(parents=True)
    (root / "CT_NonCOVID").mkdir(parents=True)
    covid_rows, non_rows = [], []
    for i in range(n_covid):
        name = f"2020.03.0{i % 3}.2002{i}-p{i}-1%{i}.png"
        Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(root / "CT_COVID" / name)
        covid_rows.append({"File name": name, "Patient ID": f"Patient {i // 2}"})
    for i in range(n_non):
        name = f"{i}%0.jpg"
        Image.fromarray(rng.integers(0, 255, (size, size), dtype=np.uint8)).save(root / "CT_NonCOVID" / name)
        non_rows.append({"": i, "image name": name, "patient id": f"crawled_patient_{i // 2}"})
    with open(root / "COVID-CT-MetaInfo.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, ["File name", "Patient ID"]); w.writeheader(); w.writerows(covid_rows)
    with open(root / "NonCOVID-CT-MetaInfo.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, ["", "image name", "patient id"]); w.writeheader(); w.writerows(non_rows)
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def tiny_dataset(tmp_path):
    root = tmp_path / "src"
    sums = write_dataset(root)
    return root, sums
