"""Long loops show throttled progress lines with time left; validation and sweeps use them."""
from __future__ import annotations

import io

import pytest

from robustct.progress import LineProgress, format_seconds, progress, section_timer, timed


class FakeClock:
    def __init__(self):
        self.t = 100.0

    def __call__(self):
        return self.t


def test_lines_are_throttled_and_estimate_time_left():
    clock, out = FakeClock(), io.StringIO()
    p = LineProgress("train", total=100, every_s=30, stream=out, clock=clock)
    for _ in range(100):
        clock.t += 1.0  # one second per item
        p.update()
    p.close()
    lines = out.getvalue().splitlines()
    # one line per 30 s (at 30, 60, 90 s) and the final one: 100 items never give 100 lines
    assert len(lines) == 4
    assert lines[0] == "train: 30/100 (30%), 30s elapsed, about 1m10s left"
    assert lines[-1] == "train: 100/100 (100%), 1m40s elapsed"


def test_progress_wrapper_yields_everything_and_reports_the_end(monkeypatch):
    monkeypatch.setenv("ROBUSTCT_PROGRESS", "lines")
    out = io.StringIO()
    assert list(progress(range(7), "validate: reading images", stream=out)) == list(range(7))
    assert out.getvalue().splitlines()[-1].startswith("validate: reading images: 7/7 (100%)")
    monkeypatch.setenv("ROBUSTCT_PROGRESS", "off")
    out = io.StringIO()
    assert list(progress(iter(range(3)), "x", stream=out)) == [0, 1, 2] and out.getvalue() == ""


def test_timed_prefixes_elapsed_time():
    clock, said = FakeClock(), []
    say = timed(said.append, clock)
    clock.t += 133
    say("pgd eps=0.0078 robust_accuracy=0.400")
    assert said == ["[2m13s] pgd eps=0.0078 robust_accuracy=0.400"]
    assert format_seconds(3725) == "1h02m"


def test_validation_table_reports_progress(tiny_dataset, monkeypatch, capsys):
    from robustct.data.table import build_table

    monkeypatch.setenv("ROBUSTCT_PROGRESS", "lines")
    root, sums = tiny_dataset
    table = build_table(root)
    err = capsys.readouterr().err
    n = len([p for p in sums if p.startswith("CT_")])
    assert len(table) == n and f"validate: reading images: {n}/{n} (100%)" in err


def test_section_timer_adds_up_and_records_a_failed_block():
    clock = iter([0.0, 2.0, 10.0, 13.0, 20.0, 20.5]).__next__
    timings: dict = {}
    with section_timer(timings, "pgd", clock):
        pass
    with section_timer(timings, "pgd", clock):
        pass
    with pytest.raises(RuntimeError), section_timer(timings, "square", clock):
        raise RuntimeError("attack failed")
    assert timings == {"pgd": 5.0, "square": 0.5}
    with section_timer(None, "pgd", clock):  # None: nothing recorded, the clock not read (it is exhausted)
        pass
