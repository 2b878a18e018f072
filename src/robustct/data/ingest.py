"""Obtaining the COVID-CT dataset safely: from a folder, from upstream archives, verified.

The dataset is written to a temporary folder next to the destination, verified
against the pinned ``SHA256SUMS`` and only then moved into place, so an
interrupted copy or download never leaves something that looks complete.
"""
from __future__ import annotations

import hashlib
import shutil
import tempfile
import urllib.request
import zipfile
from importlib import resources
from pathlib import Path

LABEL_DIRS = {"CT_COVID": "covid", "CT_NonCOVID": "non_covid"}
METADATA_FILES = ("COVID-CT-MetaInfo.csv", "NonCOVID-CT-MetaInfo.csv")
OFFICIAL_SPLIT_DIR = "official_split"
"""Folder under the data root holding the dataset authors' train/val/test lists (part of the pinned data)."""
OFFICIAL_LISTS = {
    ("train", "covid"): "COVID/trainCT_COVID.txt", ("val", "covid"): "COVID/valCT_COVID.txt",
    ("test", "covid"): "COVID/testCT_COVID.txt", ("train", "non_covid"): "NonCOVID/trainCT_NonCOVID.txt",
    ("val", "non_covid"): "NonCOVID/valCT_NonCOVID.txt", ("test", "non_covid"): "NonCOVID/testCT_NonCOVID.txt",
}
"""(split, label) -> list file relative to :data:`OFFICIAL_SPLIT_DIR` (as in upstream ``Data-split/``)."""


class ChecksumError(RuntimeError):
    """A file is missing or its SHA-256 differs from the pinned list."""


def pinned_checksums() -> dict[str, str]:
    """The pinned ``{relative path: sha256}`` of the dataset version this project uses."""
    text = resources.files("robustct.data").joinpath("covid_ct.SHA256SUMS").read_text()
    return parse_sha256sums(text)


def parse_sha256sums(text: str) -> dict[str, str]:
    """Parse ``sha256sum`` output (``<hex>  <path>`` per line) into a dict."""
    out = {}
    for line in text.splitlines():
        if line.strip():
            digest, path = line.split(maxsplit=1)
            out[path.lstrip("*").strip()] = digest.lower()
    return out


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def verify_checksums(root: Path, expected: dict[str, str]) -> None:
    """Check every file of ``expected`` under ``root``.

    Raises:
        ChecksumError: naming every missing or mismatching file and how to fix it.
    """
    problems = []
    for rel, digest in sorted(expected.items()):
        path = Path(root) / rel
        if not path.is_file():
            problems.append(f"{path}: missing")
        elif sha256_file(path) != digest:
            problems.append(f"{path}: SHA-256 mismatch (expected {digest[:12]}…)")
    if problems:
        shown = "\n  ".join(problems[:20]) + (f"\n  … and {len(problems) - 20} more" if len(problems) > 20 else "")
        raise ChecksumError(
            f"{len(problems)} file(s) of the dataset do not match the pinned SHA256SUMS:\n  {shown}\n"
            "Fix: obtain the original COVID-CT files again (robustct fetch-data) or `dvc pull`."
        )


def _atomic_install(staging: Path, dest: Path) -> None:
    """Replace ``dest`` by the verified ``staging`` folder in one rename."""
    if dest.exists():
        old = dest.with_name(dest.name + ".old")
        shutil.rmtree(old, ignore_errors=True)
        dest.rename(old)
        staging.rename(dest)
        shutil.rmtree(old, ignore_errors=True)
    else:
        staging.rename(dest)


def _staging_dir(dest: Path) -> Path:
    dest.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{dest.name}.partial-", dir=dest.parent))


def _write_sums(root: Path, expected: dict[str, str]) -> None:
    (root / "SHA256SUMS").write_text("".join(f"{d}  {p}\n" for p, d in sorted(expected.items())))


def fetch_from_folder(source: Path, dest: Path, expected: dict[str, str] | None = None,
                      split_source: Path | None = None) -> bool:
    """Copy the dataset and its official split lists into ``dest`` (verified, atomic, idempotent).

    Args:
        source: folder with ``CT_COVID/``, ``CT_NonCOVID/`` and the metadata CSVs.
        dest: destination folder (for example ``data``).
        expected: pinned checksums; defaults to :func:`pinned_checksums`. Entries under
            ``official_split/`` are copied from ``split_source``, all others from ``source``.
        split_source: folder with the authors' lists (``COVID/trainCT_COVID.txt`` ... as in
            :data:`OFFICIAL_LISTS`); default: the sibling folder ``covid-ct-official-split`` of ``source``.

    Returns:
        True when files were copied, False when ``dest`` already held the verified data.

    Raises:
        FileNotFoundError: ``source`` does not exist.
        ChecksumError: the copy does not match (``dest`` is left untouched).
    """
    expected = expected or pinned_checksums()
    source, dest = Path(source), Path(dest)
    if not source.is_dir():
        raise FileNotFoundError(
            f"{source}: dataset folder not found; pass --source pointing at a COVID-CT copy, "
            "or --url for the upstream archives"
        )

    split_source = Path(split_source) if split_source else source.parent / "covid-ct-official-split"
    prefix = OFFICIAL_SPLIT_DIR + "/"

    def copy(staging: Path) -> None:
        for rel in expected:
            target = staging / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            origin = split_source / rel[len(prefix):] if rel.startswith(prefix) else source / rel
            if origin.is_file():
                shutil.copyfile(origin, target)

    return _install_verified(dest, expected, copy)


def fetch_from_urls(urls: dict[str, str], dest: Path, expected: dict[str, str] | None = None) -> bool:
    """Download the upstream archives and metadata, unpack, verify, install atomically.

    Args:
        urls: ``{"CT_COVID.zip": url, "CT_NonCOVID.zip": url, "<metadata>.csv": url, ...}``;
            ``.zip`` entries are unpacked (their ``CT_*`` folders kept), other files saved as named;
            ``official_split/...`` lists are normalised first (:func:`normalise_list`: upstream has
            another line order and line ends than the pinned, sorted lists).
        dest: destination folder.

    Returns:
        True when data was downloaded, False when ``dest`` was already verified.

    Raises:
        urllib.error.URLError: a download failed (nothing is installed).
        ChecksumError: the downloaded content does not match the pinned list.
    """
    expected = expected or pinned_checksums()

    def download(staging: Path) -> None:
        for name, url in urls.items():
            local = staging / ".download" / name
            local.parent.mkdir(parents=True, exist_ok=True)
            with urllib.request.urlopen(url, timeout=120) as resp, open(local, "wb") as fh:
                shutil.copyfileobj(resp, fh)
            if name.endswith(".zip"):
                _extract_label_dirs(local, staging)
            elif name.startswith(OFFICIAL_SPLIT_DIR + "/"):
                (staging / name).parent.mkdir(parents=True, exist_ok=True)
                (staging / name).write_text(normalise_list(local.read_text(encoding="utf-8")), encoding="utf-8")
            else:
                shutil.move(str(local), staging / name)
        shutil.rmtree(staging / ".download", ignore_errors=True)

    return _install_verified(Path(dest), expected, download)


def normalise_list(text: str) -> str:
    """One bare file name per line, LF line ends, sorted by code point (the pinned lists' format).

    Path prefixes (``.../name``), surrounding whitespace, CR characters and empty lines are dropped.
    """
    names = {line.strip().replace("\\", "/").rsplit("/", 1)[-1] for line in text.splitlines()}
    return "".join(f"{n}\n" for n in sorted(n for n in names if n))


def _install_verified(dest: Path, expected: dict[str, str], populate) -> bool:
    """Fill a staging folder with ``populate(staging)``, verify it, then move it to ``dest``.

    Returns False (and does nothing) when ``dest`` already holds the verified data.
    """
    if _already_there(dest, expected):
        return False
    staging = _staging_dir(dest)
    try:
        populate(staging)
        verify_checksums(staging, expected)
        _write_sums(staging, expected)
        _atomic_install(staging, dest)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return True


def _extract_label_dirs(archive: Path, staging: Path) -> None:
    """Unpack the ``CT_*`` image folders of an upstream archive, skipping macOS metadata."""
    with zipfile.ZipFile(archive) as zf:
        for info in zf.infolist():
            parts = Path(info.filename).parts
            if info.is_dir() or "__MACOSX" in parts:
                continue
            for i, part in enumerate(parts[:-1]):
                if part in LABEL_DIRS:
                    target = staging.joinpath(*parts[i:])
                    target.parent.mkdir(parents=True, exist_ok=True)
                    with zf.open(info) as src, open(target, "wb") as dst:
                        shutil.copyfileobj(src, dst)
                    break


def _already_there(dest: Path, expected: dict[str, str]) -> bool:
    if not dest.is_dir():
        return False
    try:
        verify_checksums(dest, expected)
    except ChecksumError:
        return False
    return True


def dataset_version(expected: dict[str, str] | None = None) -> str:
    """Short content hash of the pinned dataset (over its sorted checksum list)."""
    expected = expected or pinned_checksums()
    text = "".join(f"{d}  {p}\n" for p, d in sorted(expected.items()))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


__all__ = [
    "ChecksumError", "LABEL_DIRS", "METADATA_FILES", "OFFICIAL_LISTS", "OFFICIAL_SPLIT_DIR", "dataset_version",
    "fetch_from_folder", "fetch_from_urls", "normalise_list", "parse_sha256sums", "pinned_checksums", "sha256_file",
    "verify_checksums",
]
