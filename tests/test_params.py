import pytest
import yaml

from robustct.params import ParamsError, check_params, format_epsilon, load_params, parse_epsilon

from conftest import REPO


@pytest.mark.parametrize("value,expected", [("2/255", 2 / 255), ("0.5/255", 0.5 / 255), (0.1, 0.1), (0, 0.0),
                                            ("1", 1.0), (1, 1.0)])
def test_parse_epsilon_known_values(value, expected):
    assert parse_epsilon(value) == pytest.approx(expected)


def test_epsilon_above_one_suggests_255_form():
    with pytest.raises(ParamsError, match=r"attack.x: .*did you mean '8/255'"):
        parse_epsilon(8, "attack.x")


@pytest.mark.parametrize("bad", ["abc", "1/0", -0.1, None])
def test_parse_epsilon_rejects(bad):
    with pytest.raises(ParamsError):
        parse_epsilon(bad)


def test_format_epsilon():
    assert format_epsilon(2 / 255) == "2/255"
    assert format_epsilon(0.1) == "0.1"
    assert format_epsilon(0.0) == "0"


def test_repository_params_are_valid():
    params = load_params(REPO / "params.yaml")
    assert params["split"]["ratios"] == {"train": 0.8, "val": 0.1, "test": 0.1}
    assert params["train"]["lr"] == 1e-3 and params["train"]["dropout"] == 0.5


def test_each_problem_named_by_key(tmp_path):
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["train"]["backbone"] = "vgg"
    params["split"]["ratios"]["train"] = 0.5
    params["attack"]["standard_epsilons"] = [8]
    problems = check_params(params)
    text = "; ".join(problems)
    assert "train.backbone 'vgg' is unknown; valid: efficientnet_lite0, efficientnet_lite1, efficientnet_lite2, resnet18, resnet50" in text
    assert "split.ratios must sum to 1" in text
    assert "attack.standard_epsilons: epsilon 8 is above 1" in text
    assert len(problems) == 3
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(params))
    with pytest.raises(ParamsError, match="train.backbone"):
        load_params(path)
