"""The dataset authors' official split: pinned lists, counts, disjointness, names, checksums, quarantine rule."""
from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest

from robustct.data.ingest import (OFFICIAL_LISTS, OFFICIAL_SPLIT_DIR, ChecksumError, fetch_from_folder,
                                  parse_sha256sums, pinned_checksums, sha256_file)
from robustct.data.split import make_split, official_usable, read_official_split

OFFICIAL = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "covid-ct-official-split"
needs_lists = pytest.mark.skipif(not OFFICIAL.is_dir(), reason="official split lists not available")


def install_lists(root: Path) -> None:
    for rel in OFFICIAL_LISTS.values():
        target = root / OFFICIAL_SPLIT_DIR / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(OFFICIAL / rel, target)


def test_pinned_checksums_cover_the_six_lists():
    sums = pinned_checksums()
    assert sorted(k for k in sums if k.startswith(OFFICIAL_SPLIT_DIR + "/")) == sorted(
        f"{OFFICIAL_SPLIT_DIR}/{r}" for r in OFFICIAL_LISTS.values())


@needs_lists
def test_pinned_checksums_equal_the_authors_sha256sums():
    theirs = parse_sha256sums((OFFICIAL / "SHA256SUMS").read_text())
    ours = {k[len(OFFICIAL_SPLIT_DIR) + 1:]: v for k, v in pinned_checksums().items()
            if k.startswith(OFFICIAL_SPLIT_DIR + "/")}
    assert ours == theirs


@needs_lists
def test_official_counts_disjoint_and_every_name_in_the_dataset(tmp_path):
    install_lists(tmp_path)
    where = read_official_split(tmp_path)
    label = where.index.str.split("/").str[0]
    counts = where.groupby([where.values, label]).size().to_dict()
    assert counts == {("train", "CT_COVID"): 191, ("val", "CT_COVID"): 60, ("test", "CT_COVID"): 98,
                      ("train", "CT_NonCOVID"): 234, ("val", "CT_NonCOVID"): 58, ("test", "CT_NonCOVID"): 105}
    assert where.index.is_unique  # disjoint: an image on two lists would raise
    images = {k for k in pinned_checksums() if k.startswith("CT_")}
    assert set(where.index) == images  # every listed name is a pinned image, and every image is listed


@needs_lists
def test_tampered_list_is_a_clear_error_naming_the_file(tmp_path):
    install_lists(tmp_path)
    victim = tmp_path / OFFICIAL_SPLIT_DIR / "NonCOVID" / "testCT_NonCOVID.txt"
    victim.write_text(victim.read_text() + "extra.png\n")
    with pytest.raises(ChecksumError, match="testCT_NonCOVID.txt: SHA-256 mismatch"):
        read_official_split(tmp_path)
    victim.unlink()
    with pytest.raises(ChecksumError, match="testCT_NonCOVID.txt: missing"):
        read_official_split(tmp_path)


def tiny_lists(root: Path) -> dict[str, str]:
    names = {("train", "covid"): ["a.png", "b.png"], ("val", "covid"): ["c.png"], ("test", "covid"): ["d.png"],
             ("train", "non_covid"): ["1.jpg"], ("val", "non_covid"): ["2.jpg"], ("test", "non_covid"): ["3.jpg", "4.jpg"]}
    sums = {}
    for key, rel in OFFICIAL_LISTS.items():
        path = root / OFFICIAL_SPLIT_DIR / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(f"{n}\n" for n in names[key]))
        sums[f"{OFFICIAL_SPLIT_DIR}/{rel}"] = sha256_file(path)
    return sums


def tiny_table(paths):
    return pd.DataFrame({"path": paths, "label": ["covid" if p.startswith("CT_COVID") else "non_covid" for p in paths],
                         "label_index": [int(p.startswith("CT_COVID")) for p in paths],
                         "group": [f"g{i}" for i in range(len(paths))]})


def test_make_split_official_follows_the_lists_and_names_unlisted_images(tmp_path):
    sums = tiny_lists(tmp_path)
    where = read_official_split(tmp_path, sums)
    assert where["CT_COVID/c.png"] == "val" and where["CT_NonCOVID/4.jpg"] == "test"
    t = tiny_table(list(where.index))
    s = make_split(t, "official", {}, 0, official=where)
    assert {k: sorted(v.path) for k, v in s.items()} == {
        "train": ["CT_COVID/a.png", "CT_COVID/b.png", "CT_NonCOVID/1.jpg"],
        "val": ["CT_COVID/c.png", "CT_NonCOVID/2.jpg"],
        "test": ["CT_COVID/d.png", "CT_NonCOVID/3.jpg", "CT_NonCOVID/4.jpg"]}
    assert "group" in s["test"].columns
    with pytest.raises(ValueError, match="on no official list: CT_COVID/zzz.png"):
        make_split(tiny_table([*where.index, "CT_COVID/zzz.png"]), "official", {}, 0, official=where)
    with pytest.raises(ValueError, match="needs the official lists"):
        make_split(t, "official", {}, 0)


def test_name_on_two_lists_is_named(tmp_path):
    sums = tiny_lists(tmp_path)
    extra = tmp_path / OFFICIAL_SPLIT_DIR / OFFICIAL_LISTS[("val", "covid")]
    extra.write_text("a.png\nc.png\n")
    sums[f"{OFFICIAL_SPLIT_DIR}/{OFFICIAL_LISTS[('val', 'covid')]}"] = sha256_file(extra)
    with pytest.raises(ValueError, match="CT_COVID/a.png is on two official lists"):
        read_official_split(tmp_path, sums)


def test_quarantined_test_images_stay_and_quarantined_training_images_go(tmp_path):
    where = read_official_split(tmp_path, tiny_lists(tmp_path))
    t = tiny_table(list(where.index)).assign(decode_ok=True, quarantined=False)
    t.loc[t.path.isin(["CT_COVID/d.png", "CT_NonCOVID/1.jpg"]), "quarantined"] = True  # a conflict pair test/train
    kept = official_usable(t, where, keep_quarantined_test=True)
    assert sorted(t.path[~kept]) == ["CT_NonCOVID/1.jpg"]
    assert sorted(t.path[~official_usable(t, where, keep_quarantined_test=False)]) == [
        "CT_COVID/d.png", "CT_NonCOVID/1.jpg"]
    t.loc[t.path == "CT_COVID/d.png", "decode_ok"] = False  # an undecodable file is never used
    assert "CT_COVID/d.png" in set(t.path[~official_usable(t, where, True)])


def test_fetch_installs_the_lists_atomically_and_verifies_them(tiny_dataset, tmp_path):
    src, sums = tiny_dataset
    lists = tmp_path / "lists"
    for rel, digest in tiny_lists(lists).items():
        sums[rel] = digest
    (lists / OFFICIAL_SPLIT_DIR).rename(lists / "x")
    shutil.move(str(lists / "x"), str(tmp_path / "split_src"))
    dest = tmp_path / "data"
    assert fetch_from_folder(src, dest, sums, split_source=tmp_path / "split_src") is True
    assert read_official_split(dest, {k: v for k, v in sums.items() if k.startswith(OFFICIAL_SPLIT_DIR)}).size == 8
    shutil.rmtree(dest)
    (tmp_path / "split_src" / "COVID" / "valCT_COVID.txt").write_text("tampered\n")
    with pytest.raises(ChecksumError, match="valCT_COVID.txt: SHA-256 mismatch"):
        fetch_from_folder(src, dest, sums, split_source=tmp_path / "split_src")
    assert not dest.exists()
