import shutil
import zipfile

import pytest

from robustct.data.ingest import ChecksumError, fetch_from_folder, fetch_from_urls, pinned_checksums


def test_pinned_checksums_cover_the_real_dataset():
    sums = pinned_checksums()
    assert sum(p.startswith("CT_COVID/") for p in sums) == 349
    assert sum(p.startswith("CT_NonCOVID/") for p in sums) == 397
    assert {"COVID-CT-MetaInfo.csv", "NonCOVID-CT-MetaInfo.csv"} <= set(sums)


def test_fetch_from_folder_verifies_and_is_idempotent(tiny_dataset, tmp_path):
    src, sums = tiny_dataset
    dest = tmp_path / "data"
    assert fetch_from_folder(src, dest, sums) is True
    assert sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file()) == sorted([*sums, "SHA256SUMS"])
    before = {p: p.stat().st_mtime_ns for p in dest.rglob("*")}
    assert fetch_from_folder(src, dest, sums) is False
    assert {p: p.stat().st_mtime_ns for p in dest.rglob("*")} == before
    assert not [p for p in tmp_path.iterdir() if "partial" in p.name]


def test_mismatch_names_the_file_and_leaves_nothing(tiny_dataset, tmp_path):
    src, sums = tiny_dataset
    bad = next(p for p in sums if p.endswith(".jpg"))
    (src / bad).write_bytes(b"corrupted")
    dest = tmp_path / "data"
    with pytest.raises(ChecksumError, match=bad.replace("%", ".")):
        fetch_from_folder(src, dest, sums)
    assert not dest.exists()
    assert not [p for p in tmp_path.iterdir() if "partial" in p.name]


def test_missing_source_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="dataset folder not found"):
        fetch_from_folder(tmp_path / "nope", tmp_path / "data", {"a": "0"})


def test_fetch_from_urls_unpacks_upstream_archives(tiny_dataset, tmp_path):
    src, sums = tiny_dataset
    urls = {}
    for label in ("CT_COVID", "CT_NonCOVID"):
        archive = tmp_path / f"{label}.zip"
        with zipfile.ZipFile(archive, "w") as zf:
            for f in (src / label).iterdir():
                zf.write(f, f"{label}/{f.name}")
            zf.writestr(f"__MACOSX/{label}/._junk", b"x")
        urls[f"{label}.zip"] = archive.as_uri()
    for meta in ("COVID-CT-MetaInfo.csv", "NonCOVID-CT-MetaInfo.csv"):
        urls[meta] = (src / meta).as_uri()
    dest = tmp_path / "data"
    assert fetch_from_urls(urls, dest, sums) is True
    assert not (dest / "__MACOSX").exists()
    shutil.rmtree(src)
    assert fetch_from_urls(urls, dest, sums) is False  # verified, nothing downloaded again


def test_interrupted_download_leaves_nothing(tiny_dataset, tmp_path):
    import urllib.error

    src, sums = tiny_dataset
    urls = {"COVID-CT-MetaInfo.csv": (src / "COVID-CT-MetaInfo.csv").as_uri(),
            "NonCOVID-CT-MetaInfo.csv": (tmp_path / "gone.csv").as_uri()}   # second download fails
    dest = tmp_path / "data"
    with pytest.raises(urllib.error.URLError):
        fetch_from_urls(urls, dest, sums)
    assert not dest.exists()
    assert not [p for p in tmp_path.iterdir() if "partial" in p.name]


def test_failed_refetch_keeps_the_verified_copy(tiny_dataset, tmp_path):
    src, sums = tiny_dataset
    dest = tmp_path / "data"
    fetch_from_folder(src, dest, sums)
    before = sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*"))
    changed = dict(sums, **{next(iter(sums)): "0" * 64})       # a new pin the source does not match
    with pytest.raises(ChecksumError):
        fetch_from_folder(src, dest, changed)
    assert sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*")) == before
