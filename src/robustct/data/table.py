"""The per-image table: one row per file with label, patient group and file properties."""
from __future__ import annotations

import csv
import re
import unicodedata
from pathlib import Path

import numpy as np
import pandas as pd

from .images import (DEFAULT_MAX_PIXELS, MODE_BIT_DEPTH, ImageDecodeError, open_complete, quantise,
                     resize_square, to_grayscale_array)
from ..progress import progress
from .ingest import LABEL_DIRS, OFFICIAL_SPLIT_DIR, sha256_file

LABELS = ("non_covid", "covid")  #: class index 0 and 1
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg"}

#: Properties of the preprocessed (size x size) image, all in [0, 1]; see :func:`processed_properties`.
PROCESSED_COLUMNS = ("proc_mean", "proc_std", "proc_min", "proc_max", "proc_dark_frac", "proc_bright_frac")

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
                name = _nfc((row[file_col] or "").strip())
                if not name:
                    continue
                pid = (row[pid_col] or "").strip() or f"unknown:{name}"
                key = f"covid/{source_of(name)}/{pid}" if label == "covid" else f"non_covid/{pid}"
                groups[(label, name)] = key
    return groups


def _nfc(name: str) -> str:
    """File names compared in Unicode NFC (macOS writes NFD, spreadsheets NFC)."""
    return unicodedata.normalize("NFC", name)


def processed_properties(processed: np.ndarray) -> dict[str, float]:
    """Intensity properties of one preprocessed uint8 image (the only ones left after preprocessing).

    Args:
        processed: uint8 array (size, size), as :func:`robustct.data.images.load_preprocessed` returns.

    Returns:
        ``{proc_mean, proc_std, proc_min, proc_max, proc_dark_frac, proc_bright_frac}``, each in [0, 1]:
        intensity statistics in [0, 1] pixel units and the fraction of pixels at 0 and at 255.
    """
    x = processed.astype(np.float64) / 255.0
    return dict(proc_mean=float(x.mean()), proc_std=float(x.std()), proc_min=float(x.min()),
                proc_max=float(x.max()), proc_dark_frac=float((processed == 0).mean()),
                proc_bright_frac=float((processed == 255).mean()))


def _label_of(dirname: str) -> str:
    return LABEL_DIRS.get(dirname, f"unknown:{dirname}")


def build_table(root: Path, max_pixels: int = DEFAULT_MAX_PIXELS, image_size: int | None = None) -> pd.DataFrame:
    """Scan ``root`` and describe every image file, decoding each one once.

    Every non-hidden sub-folder of ``root`` is scanned: files in ``CT_COVID/`` and ``CT_NonCOVID/``
    get their label, files in any other folder get ``label='unknown:<folder>'`` and
    ``label_index=-1`` (the validation suite rejects them). Files are matched to metadata rows by
    their Unicode-NFC name, so ``%``, spaces and non-ASCII characters work as written.

    Columns: path (relative to root, POSIX), label, label_index, group, in_metadata, format,
    mode, bit_depth (bits per sample: 1, 8, 16 or 32), width, height (after the EXIF orientation),
    bytes, sha256, phash (64-bit perceptual hash of the grayscale image as 16 hex digits,
    ``imagehash.phash``), decode_ok, error; with ``image_size`` also the
    :data:`PROCESSED_COLUMNS` of the preprocessed ``image_size`` x ``image_size`` image.
    Files that do not decode keep a row with ``decode_ok=False``, the error text and NaN/empty
    image properties; nothing is dropped.

    Metadata rows without a file are returned as rows with ``decode_ok=False`` and
    ``error='listed in metadata but file missing'``.

    Raises:
        FileNotFoundError, KeyError: from :func:`read_metadata`.
    """
    import imagehash  # noqa: PLC0415  (imports scipy; only validation needs it)
    from PIL import Image  # noqa: PLC0415

    root = Path(root)
    groups = read_metadata(root)
    rows = []
    seen = set()
    folders = sorted(p for p in root.iterdir()
                     if p.is_dir() and not p.name.startswith(".") and p.name != OFFICIAL_SPLIT_DIR)  # lists, not images
    files = [path for folder in folders for path in sorted(p for p in folder.iterdir() if p.is_file())]
    for path in progress(files, "validate: reading images"):
        label = _label_of(path.parent.name)
        rel = path.relative_to(root).as_posix()
        seen.add((label, _nfc(path.name)))
        group = groups.get((label, _nfc(path.name)))
        row = dict(
            path=rel, label=label, label_index=LABELS.index(label) if label in LABELS else -1,
            group=group if group is not None else f"{label}/unlisted/{path.name}",
            in_metadata=group is not None, format=None, mode=None, bit_depth=0, width=0, height=0,
            bytes=path.stat().st_size, sha256=sha256_file(path), phash="", decode_ok=True, error="",
        )
        if image_size:
            row.update(dict.fromkeys(PROCESSED_COLUMNS, float("nan")))
        try:
            im = open_complete(path, max_pixels)
            gray = to_grayscale_array(im)
        except ImageDecodeError as exc:
            row.update(decode_ok=False, error=str(exc))
            rows.append(row)
            continue
        except (ValueError, OSError) as exc:  # a colour mode Pillow cannot convert to grayscale
            row.update(decode_ok=False, error=f"{path}: colour mode cannot be converted to grayscale "
                                              f"({exc}); convert the image to 8-bit grayscale PNG")
            rows.append(row)
            continue
        row.update(format=im.format, mode=im.mode, bit_depth=MODE_BIT_DEPTH.get(im.mode, 0),
                   width=im.width, height=im.height,
                   phash=str(imagehash.phash(Image.fromarray(quantise(gray), "L"))))
        if image_size:
            row.update(processed_properties(quantise(resize_square(gray, image_size))))
        rows.append(row)
    for (label, name), group in sorted(groups.items()):
        if (label, name) not in seen:
            dirname = next(d for d, lab in LABEL_DIRS.items() if lab == label)
            row = dict(
                path=f"{dirname}/{name}", label=label, label_index=LABELS.index(label), group=group,
                in_metadata=True, format=None, mode=None, bit_depth=0, width=0, height=0, bytes=0, sha256="",
                phash="", decode_ok=False, error="listed in metadata but file missing; restore the file or delete its metadata row",
            )
            if image_size:
                row.update(dict.fromkeys(PROCESSED_COLUMNS, float("nan")))
            rows.append(row)
    return pd.DataFrame(rows)
