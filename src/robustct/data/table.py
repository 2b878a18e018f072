"""The per-image table: one row per file with label, patient group and file properties."""
from __future__ import annotations

import csv
import re
from pathlib import Path

import pandas as pd

from .images import DEFAULT_MAX_PIXELS, ImageDecodeError, open_complete
from .ingest import LABEL_DIRS, sha256_file

LABELS = ("non_covid", "covid")  #: class index 0 and 1
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg"}

_SOURCE_RE = re.compile(r"(-p\d+.*|[_%]\d+.*)?\.\w+$")


def source_of(file_name: str) -> str:
    """Source paper of a COVID image from its file name.

    COVID-CT numbers patients per source paper (``Patient 1`` exists in many papers), and
    file names start with the paper's identifier followed by ``-p<page>…`` or ``_<n>``/``%<n>``.

    >>> source_of("2020.01.24.919183-p27-132.png")
    '2020.01.24.919183'
    >>> source_of("PIIS0140673620301549_0%0.png")
    'PIIS0140673620301549'
    """
    return _SOURCE_RE.sub("", file_name)


def read_metadata(root: Path) -> dict[tuple[str, str], str]:
    """Map ``(label, file name)`` to a patient group key from both metadata CSVs.

    Group keys: ``covid/<source paper>/<patient id>`` and ``non_covid/<patient id>``.

    Raises:
        FileNotFoundError: a metadata CSV is missing (names the file).
        KeyError: an expected column is missing (names file and column).
    """
    groups: dict[tuple[str, str], str] = {}
    specs = [
        ("COVID-CT-MetaInfo.csv", "covid", "File name", "Patient ID"),
        ("NonCOVID-CT-MetaInfo.csv", "non_covid", "image name", "patient id"),
    ]
    for fname, label, file_col, pid_col in specs:
        path = Path(root) / fname
        if not path.is_file():
            raise FileNotFoundError(f"{path}: metadata file missing; obtain the dataset again (robustct fetch-data)")
        with path.open(encoding="utf-8-sig", newline="") as fh:
            reader = csv.DictReader(fh)
            for col in (file_col, pid_col):
                if col not in (reader.fieldnames or []):
                    raise KeyError(f"{path}: column {col!r} missing; found {reader.fieldnames}")
            for row in reader:
                name = (row[file_col] or "").strip()
                if not name:
                    continue
                pid = (row[pid_col] or "").strip() or f"unknown:{name}"
                key = f"covid/{source_of(name)}/{pid}" if label == "covid" else f"non_covid/{pid}"
                groups[(label, name)] = key
    return groups


def build_table(root: Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> pd.DataFrame:
    """Scan ``root`` and describe every image file.

    Columns: path (relative to root), label, label_index, group, in_metadata, format,
    mode, width, height, bytes, sha256, decode_ok, error.  Files that do not decode
    keep a row with ``decode_ok=False`` and the error text; nothing is dropped.

    Metadata rows without a file are returned as rows with ``decode_ok=False`` and
    ``error='listed in metadata but file missing'``.
    """
    root = Path(root)
    groups = read_metadata(root)
    rows = []
    seen = set()
    for dirname, label in LABEL_DIRS.items():
        folder = root / dirname
        if not folder.is_dir():
            continue
        for path in sorted(p for p in folder.iterdir() if p.is_file()):
            rel = path.relative_to(root).as_posix()
            seen.add((label, path.name))
            group = groups.get((label, path.name))
            row = dict(
                path=rel, label=label, label_index=LABELS.index(label),
                group=group if group is not None else f"{label}/unlisted/{path.name}",
                in_metadata=group is not None, format=None, mode=None, width=0, height=0,
                bytes=path.stat().st_size, sha256=sha256_file(path), decode_ok=True, error="",
            )
            try:
                im = open_complete(path, max_pixels)
                row.update(format=im.format, mode=im.mode, width=im.width, height=im.height)
            except ImageDecodeError as exc:
                row.update(decode_ok=False, error=str(exc))
            rows.append(row)
    for (label, name), group in sorted(groups.items()):
        if (label, name) not in seen:
            dirname = next(d for d, lab in LABEL_DIRS.items() if lab == label)
            rows.append(dict(
                path=f"{dirname}/{name}", label=label, label_index=LABELS.index(label), group=group,
                in_metadata=True, format=None, mode=None, width=0, height=0, bytes=0, sha256="",
                decode_ok=False, error="listed in metadata but file missing",
            ))
    return pd.DataFrame(rows)
