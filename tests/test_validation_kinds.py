"""Every kind of bad input gets a clear verdict from the validate stage; accepted kinds pass with the right pixels.

Each test builds the tiny COVID-CT-like dataset of ``conftest.write_dataset`` (4 COVID PNG,
4 non-COVID JPEG, 80x80), changes one thing, and runs the real stages (no MLflow).
"""
import csv
import io
import json
import shutil
import unicodedata

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from robustct.stages import split as split_stage
from robustct.stages import validate as validate_stage

from conftest import write_dataset

PARAMS = {
    "validate": {"on_error": "fail", "min_width": 48, "min_height": 48, "max_pixels": 50_000_000,
                 "expected_counts": {"covid": 4, "non_covid": 4},
                 "near_duplicates": {"max_hash_distance": 8, "min_ssim": 0.9},
                 "shortcut": {"max_auc": 0.7, "folds": 2, "seed": 0, "image_size": 32}},
    "split": {"scheme": "patient", "ratios": {"train": 0.5, "val": 0.25, "test": 0.25}, "seed": 0},
}


def add_meta(root, label, name, patient):
    meta, cols = (("COVID-CT-MetaInfo.csv", ["File name", "Patient ID"]) if label == "covid"
                  else ("NonCOVID-CT-MetaInfo.csv", ["", "image name", "patient id"]))
    with open(root / meta, "a", newline="", encoding="utf-8") as fh:
        row = [name, patient] if label == "covid" else ["99", name, patient]
        csv.writer(fh).writerow(row)
    assert cols


def covid(root, i=0):
    return sorted((root / "CT_COVID").iterdir())[i]


def non(root, i=0):
    return sorted((root / "CT_NonCOVID").iterdir())[i]


def rel(root, p):
    return p.relative_to(root).as_posix()


def noise(size, seed, mode="L"):
    rng = np.random.default_rng(seed)
    shape = (size[1], size[0]) if mode == "L" else (size[1], size[0], 3)
    return Image.fromarray(rng.integers(0, 255, shape, dtype=np.uint8), mode)


# --- mutations that must be errors: (change the dataset, return the file and the words of its verdict) ---

def truncated_png(root):
    p = covid(root)
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])
    return p, "cannot decode image", "replace it with an intact copy", {}


def truncated_jpeg(root):
    p = non(root)
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])
    return p, "cannot decode image", "replace it with an intact copy", {}


def zero_byte(root):
    p = non(root)
    p.write_bytes(b"")
    return p, "empty file (0 bytes)", "replace it with the original image", {}


def not_an_image(root):
    p = covid(root)
    p.write_bytes(b"Patient notes, not pixels\n" * 20)
    return p, "cannot decode image", "replace it with an intact copy", {}


def too_small(root):
    p = covid(root)
    noise((30, 90), 5, "RGB").save(p)
    return p, "too small to be a CT slice", "remove it or lower validate.min_width", {}


def exif_rotated_too_narrow(root):
    # stored 100 wide x 40 tall; EXIF orientation 6 shows it 40 wide x 100 tall, below min_width 48
    p = non(root)
    exif = Image.Exif()
    exif[0x0112] = 6
    noise((100, 40), 6).save(p, "JPEG", exif=exif)
    return p, "too small to be a CT slice", "lower validate.min_width", {"min_height": 30}


def too_large(root):
    p = covid(root)
    noise((300, 300), 7, "RGB").save(p)
    return p, "decompression-bomb guard", "raise validate.max_pixels", {"max_pixels": 50_000}


def exact_duplicate_same_label(root):
    shutil.copyfile(non(root, 0), non(root, 1))
    return non(root, 1), "exact duplicate content", "keep one copy", {}


def exact_duplicate_across_labels(root):
    shutil.copyfile(covid(root, 0), non(root, 1))
    return non(root, 1), "label conflict", "remove both or correct the label", {}


def near_duplicate_across_labels(root):
    # the same pixels re-encoded as JPEG (different bytes, near-identical image) under the other label
    Image.open(covid(root, 0)).convert("L").save(non(root, 1), "JPEG", quality=92)
    return non(root, 1), "label conflict", "remove both or correct the label", {}


def metadata_row_without_file(root):
    p = covid(root)
    p.unlink()
    return p, "listed in metadata but file missing", "restore the file or delete its metadata row", {}


def file_without_metadata_row(root):
    p = root / "CT_COVID" / "unlisted scan.png"
    noise((80, 80), 8, "RGB").save(p)
    return p, "expect_column_values_to_be_in_set(in_metadata)", "add a row for the file to the metadata CSV", {}


def unknown_label_folder(root):
    (root / "CT_Maybe").mkdir()
    p = root / "CT_Maybe" / "x.png"
    noise((80, 80), 9).save(p)
    return p, "unknown label folder", "move the file into CT_COVID/ or CT_NonCOVID/", {}


ERROR_KINDS = [truncated_png, truncated_jpeg, zero_byte, not_an_image, too_small, exif_rotated_too_narrow,
               too_large, exact_duplicate_same_label, exact_duplicate_across_labels, near_duplicate_across_labels,
               metadata_row_without_file, file_without_metadata_row, unknown_label_folder]


def run_validate(root, out, **rules):
    params = {**PARAMS, "validate": {**PARAMS["validate"], **rules}}
    return validate_stage.run(params, root, out_dir=out, track=False)


@pytest.mark.parametrize("mutate", ERROR_KINDS, ids=lambda f: f.__name__)
def test_error_kind_stops_with_file_problem_and_fix(tmp_path, mutate, capsys):
    root = tmp_path / "data"
    write_dataset(root)
    path, problem, fix, rules = mutate(root)
    out = tmp_path / "validate"
    with pytest.raises(SystemExit) as exc:
        run_validate(root, out, **rules)
    assert exc.value.code == 1
    summary = json.loads((out / "summary.json").read_text())
    problems = " ".join(summary["offending_files"][rel(root, path)])
    assert problem in problems and fix in problems
    err = capsys.readouterr().err
    assert "validation FAILED" in err and rel(root, path) in err
    assert summary["quarantined"] == [] and pd.read_csv(out / "quarantine.csv").empty


@pytest.mark.parametrize("mutate", ERROR_KINDS, ids=lambda f: f.__name__)
def test_error_kind_quarantined_and_excluded_from_split(tmp_path, mutate):
    root = tmp_path / "data"
    write_dataset(root)
    path, problem, fix, rules = mutate(root)
    out = tmp_path / "validate"
    summary = run_validate(root, out, on_error="quarantine", **rules)
    name = rel(root, path)
    quarantine = pd.read_csv(out / "quarantine.csv", keep_default_na=False)
    assert name in summary["quarantined"] and name in set(quarantine.path)
    assert problem in quarantine.set_index("path").problems[name]
    split_stage.run(PARAMS, out / "table.csv", tmp_path / "split")
    in_split = pd.concat(pd.read_csv(tmp_path / "split" / f"{s}.csv", keep_default_na=False) for s in ("train", "val", "test"))
    assert name not in set(in_split.path)
    table = pd.read_csv(out / "table.csv", keep_default_na=False)
    kept = table[(table.quarantined.astype(str) != "True") & (table.decode_ok.astype(str) == "True")]
    assert sorted(in_split.path) == sorted(kept.path)  # nothing else lost


# --- inputs that must be accepted, with known pixel values ---

def test_accepted_encodings_pass_with_right_pixels(tmp_path):
    root = tmp_path / "data"
    write_dataset(root)
    rng = np.random.default_rng(3)
    c, n = sorted((root / "CT_COVID").iterdir()), sorted((root / "CT_NonCOVID").iterdir())
    ramp = np.tile(np.linspace(0, 65535, 80).astype(np.uint16), (80, 1))
    Image.fromarray(ramp).save(c[0])                                                  # 16-bit gray ramp
    assert Image.open(c[0]).mode == "I;16"
    idx = rng.choice([0, 2], (80, 80)).astype(np.uint8)
    idx[:, 40:] = 1
    pal = Image.fromarray(idx, "P")
    pal.putpalette([0, 0, 0, 255, 255, 255, 128, 128, 128] + [0] * 759)
    pal.save(c[1], transparency=1)                                  # palette; index 1 (white) transparent
    la = np.stack([rng.integers(50, 250, (80, 80)), np.full((80, 80), 255)], -1).astype(np.uint8)
    la[:, :40, 1] = 0
    Image.fromarray(la, "LA").save(c[2])                                              # LA: left half transparent
    Image.fromarray(rng.integers(0, 255, (80, 80), dtype=np.uint8), "L").convert("CMYK").save(n[0], "JPEG")
    summary = run_validate(root, tmp_path / "validate")
    assert summary["success"], summary["offending_files"]
    t = pd.read_csv(tmp_path / "validate" / "table.csv", keep_default_na=False).set_index("path")
    r = t.loc[rel(root, c[0])]
    assert r["bit_depth"] == 16 and r["mode"] == "I;16"
    assert r.proc_mean == pytest.approx(0.5, abs=0.01)   # scaled by 65535; clipping at 255 would give ~1
    r = t.loc[rel(root, c[1])]
    assert r.proc_bright_frac == 0 and r.proc_max <= 129 / 255   # transparent white composited onto black
    assert r.proc_dark_frac > 0.45
    r = t.loc[rel(root, c[2])]
    assert r.proc_dark_frac == pytest.approx(0.5, abs=0.04)     # transparent half is black
    r = t.loc[rel(root, n[0])]
    assert r["mode"] == "CMYK" and r["bit_depth"] == 8 and r.proc_std > 0.05


def test_names_with_percent_space_and_non_ascii_match_metadata(tmp_path):
    root = tmp_path / "data"
    write_dataset(root)
    nfc = "Ärztin scan 5%0 ü.png"
    nfd = unicodedata.normalize("NFD", nfc)
    noise((80, 80), 11, "RGB").save(root / "CT_COVID" / nfd)   # on disk NFD (as macOS writes), metadata NFC
    add_meta(root, "covid", nfc, "Patient 9")
    summary = run_validate(root, tmp_path / "validate", expected_counts={"covid": 5, "non_covid": 4})
    assert summary["success"], summary["offending_files"]
    t = pd.read_csv(tmp_path / "validate" / "table.csv", keep_default_na=False)
    row = t[t.path == f"CT_COVID/{nfd}"].iloc[0]
    assert row.in_metadata in (True, "True") and row.group.endswith("/Patient 9")


def test_near_duplicates_under_one_label_warn_and_stay_in_one_split(tmp_path):
    root = tmp_path / "data"
    write_dataset(root, n_covid=8, n_non=8)
    src = covid(root, 0)
    twin = root / "CT_COVID" / "other-paper-p1-1.png"
    buf = io.BytesIO()
    Image.open(src).save(buf, "JPEG", quality=90)          # re-encoded copy, another paper and patient
    Image.open(buf).save(twin)
    add_meta(root, "covid", twin.name, "Patient 7")
    params_rules = {"expected_counts": {"covid": 9, "non_covid": 8}}
    summary = run_validate(root, tmp_path / "validate", **params_rules)
    assert summary["success"], summary["offending_files"]
    assert summary["near_duplicates"]["near_duplicate"] == 1 and summary["near_duplicates"]["label_conflict"] == 0
    assert any(rel(root, src) in w and twin.name in w for w in summary["warnings"])
    pairs = pd.read_csv(tmp_path / "validate" / "near_duplicates.csv")
    assert pairs.ssim[0] >= 0.9 and pairs.hash_distance[0] <= 8
    for seed in range(5):   # whatever the seed, the two never sit in two splits
        s = split_stage.run({"split": {**PARAMS["split"], "seed": seed}}, tmp_path / "validate" / "table.csv",
                            tmp_path / f"split{seed}")
        assert s["leakage"] == {"patient_groups": 0, "identical_images": 0, "near_duplicates": 0}
        where = {p: name for name in ("train", "val", "test")
                 for p in pd.read_csv(tmp_path / f"split{seed}" / f"{name}.csv", keep_default_na=False).path}
        assert where[rel(root, src)] == where[rel(root, twin)]


def test_unrelated_images_are_not_near_duplicates(tmp_path):
    root = tmp_path / "data"
    write_dataset(root, n_covid=8, n_non=8)
    summary = run_validate(root, tmp_path / "validate", expected_counts={"covid": 8, "non_covid": 8})
    assert summary["near_duplicates"]["pairs"] == 0 and summary["success"]
