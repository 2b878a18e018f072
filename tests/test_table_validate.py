import shutil

from robustct.data.table import build_table, read_metadata, source_of
from robustct.data.validate import run_suite

RULES = {"min_width": 48, "min_height": 48, "expected_counts": {"covid": 4, "non_covid": 4}}


def test_source_of_known_names():
    assert source_of("2020.01.24.919183-p27-132.png") == "2020.01.24.919183"
    assert source_of("PIIS0140673620301549_0%0.png") == "PIIS0140673620301549"
    assert source_of("PIIS0140673620303603%2.png") == "PIIS0140673620303603"


def test_group_key_includes_the_source_paper(tiny_dataset):
    root, _ = tiny_dataset
    groups = read_metadata(root)
    covid = {k: v for k, v in groups.items() if k[0] == "covid"}
    # "Patient 0" appears in two different source papers: two different groups
    assert covid[("covid", "2020.03.00.20020-p0-1%0.png")] == "covid/2020.03.00.20020/Patient 0"
    assert covid[("covid", "2020.03.01.20021-p1-1%1.png")] == "covid/2020.03.01.20021/Patient 0"


def test_table_describes_every_file(tiny_dataset):
    root, _ = tiny_dataset
    t = build_table(root)
    assert len(t) == 8 and t.decode_ok.all() and t.in_metadata.all()
    assert set(t[t.label == "covid"].format) == {"PNG"} and set(t[t.label == "non_covid"].format) == {"JPEG"}
    assert (t.width == 80).all() and t.sha256.str.len().eq(64).all()


def test_suite_passes_on_clean_data(tiny_dataset, tmp_path):
    root, _ = tiny_dataset
    summary = run_suite(build_table(root), RULES, docs_dir=tmp_path / "docs")
    assert summary["success"], summary["offending_files"]
    assert summary["files_checked"] == 8
    assert (tmp_path / "docs" / "index.html").is_file()


def test_suite_names_each_offending_file(tiny_dataset):
    root, _ = tiny_dataset
    covid = sorted((root / "CT_COVID").iterdir())
    non = sorted((root / "CT_NonCOVID").iterdir())
    covid[0].write_bytes(covid[0].read_bytes()[:200])           # truncated
    shutil.copyfile(non[0], non[1])                            # exact duplicate
    (root / "CT_NonCOVID" / "stray.jpg").write_bytes(non[2].read_bytes() + b"")  # no metadata row + duplicate
    summary = run_suite(build_table(root), RULES)
    assert not summary["success"]
    off = summary["offending_files"]
    trunc = covid[0].relative_to(root).as_posix()
    assert any("cannot decode image" in p for p in off[trunc])
    assert any("exact duplicate" in p for p in off[non[1].relative_to(root).as_posix()])
    assert any("metadata" in p for p in off["CT_NonCOVID/stray.jpg"])
    failed = {e["expectation"] for e in summary["expectations"] if not e["success"]}
    assert {"expect_column_values_to_be_in_set(decode_ok)", "expect_column_values_to_be_unique(sha256)",
            "expect_column_values_to_be_in_set(in_metadata)", "expect_table_row_count_to_equal"} <= failed


def test_metadata_row_without_file_is_reported(tiny_dataset):
    root, _ = tiny_dataset
    victim = sorted((root / "CT_COVID").iterdir())[0]
    victim.unlink()
    summary = run_suite(build_table(root), RULES)
    assert "listed in metadata but file missing" in " ".join(summary["offending_files"][f"CT_COVID/{victim.name}"])
    assert not next(c for c in summary["custom"] if c["check"].startswith("count[covid]"))["success"]


def test_too_small_image_fails(tiny_dataset):
    root, _ = tiny_dataset
    summary = run_suite(build_table(root), {**RULES, "min_width": 100})
    assert not summary["success"]
    assert len(summary["offending_files"]) == 8
    assert all("too small to be a CT slice" in " ".join(v) for v in summary["offending_files"].values())
