"""Help texts say what the commands do: no doubled percent signs, the validate default, every attack."""
from __future__ import annotations

import pytest
import yaml

from conftest import REPO
from robustct.attack_registry import ATTACK_SPECS
from robustct.cli import STAGES, build_parser


def help_of(capsys, *argv) -> str:
    with pytest.raises(SystemExit):
        build_parser().parse_args([*argv, "--help"])
    return capsys.readouterr().out


def test_no_doubled_percent_in_any_help(capsys):
    assert "95%" in help_of(capsys, "evaluate")
    for name in [*STAGES, None]:
        text = help_of(capsys, name) if name else help_of(capsys)
        assert "%%" not in text, name


def test_validate_help_matches_the_configured_error_policy(capsys):
    text = " ".join(help_of(capsys, "validate").split())
    policy = yaml.safe_load((REPO / "params.yaml").read_text())["validate"]["on_error"]
    assert f"validate.on_error: {policy}" in text and "on_error: fail" in text
    assert "stops on a violation" not in text


def test_attack_help_names_every_attack(capsys):
    text = " ".join(help_of(capsys, "attack").split())
    missing = [name for name in ATTACK_SPECS if name not in text]
    assert not missing, f"attack help does not mention {missing}"
