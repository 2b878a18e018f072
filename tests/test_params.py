import pytest
import yaml

from robustct.params import ParamsError, check_params, format_epsilon, load_params, parse_epsilon, read_yaml, validated

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
    assert params["train"]["lr"] == 1e-3 and params["train"]["lr_backbone"] == 3e-4
    assert params["gate"]["epsilon"] == pytest.approx(1 / 255)  # "1/255" parsed


def _raw():
    return read_yaml(REPO / "params.yaml")


def test_every_problem_is_listed_at_once_with_its_key_path_and_choices(tmp_path):
    params = _raw()
    params["train"]["backbone"] = "vgg"
    params["split"]["ratios"]["train"] = 0.5
    params["attack"]["standard_epsilons"] = [8]
    problems = check_params(params)
    text = "\n".join(problems)
    assert "train.backbone: unknown backbone 'vgg'; valid: efficientnet_lite0, efficientnet_lite1, efficientnet_lite2, resnet18, resnet50" in text
    assert "split.ratios: ratios must sum to 1" in text
    assert "attack.standard_epsilons.0: epsilon 8 is above 1" in text and "'8/255'" in text
    assert len(problems) == 3
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(params))
    with pytest.raises(ParamsError, match="train.backbone") as exc:
        load_params(path)
    assert "split.ratios" in str(exc.value) and "attack.standard_epsilons" in str(exc.value)


@pytest.mark.parametrize("section,key,value,expected", [
    ("train", "threshold", 0.3, "train.threshold: '0.3' is not a valid choice; input should be '0.5' or 'val_youden'"),
    ("train", "tta", "vflip", "train.tta: 'vflip' is not a valid choice; input should be 'none' or 'hflip'"),
    ("defend", "select_on", "robustt", "defend.select_on: 'robustt' is not a valid choice"),
    ("train", "schedual", "cosine", "train.schedual: unknown key; valid: backbone, weights,"),
    ("defend", "trainable_stages", "three", "defend.trainable_stages: 'three' is not a valid choice"),
    ("gate", "attack", "pgd10", "gate.attack: unknown gate attack 'pgd10'; valid: worst_case, fgsm, pgd"),
    ("defend", "method", "magic", "defend.method: unknown defence method 'magic'; valid: pgd_at"),
])
def test_typos_are_rejected_not_silently_defaulted(section, key, value, expected):
    params = _raw()
    params[section][key] = value
    problems = check_params(params)
    assert len(problems) == 1 and problems[0].startswith(expected), problems


def test_unknown_keys_rejected_at_every_level():
    params = _raw()
    params["typo_section"] = {}
    params["validate"]["near_duplicates"]["max_hash_distnce"] = 3
    params["attack"]["profiles"]["cpu"]["pgd"]["stepz"] = 3
    text = "\n".join(check_params(params))
    assert "typo_section: unknown key" in text
    assert "validate.near_duplicates.max_hash_distnce: unknown key; valid: max_hash_distance, min_ssim" in text
    assert "attack.profiles.cpu.pgd.stepz: unknown key; valid: steps, step_size, restarts" in text


def test_yaml_read_as_dvc_reads_it(tmp_path):
    """YAML 1.2 (DVC's ruamel): 1e-5 is a float; PyYAML (1.1) would read it as the string '1e-5'."""
    text = (REPO / "params.yaml").read_text().replace("  lr: 1.0e-3", "  lr: 1e-5", 1)
    assert "lr: 1e-5" in text
    (tmp_path / "params.yaml").write_text(text)
    assert yaml.safe_load(text)["train"]["lr"] == "1e-5"
    assert load_params(tmp_path / "params.yaml")["train"]["lr"] == pytest.approx(1e-5)


def test_defaults_live_in_the_schema():
    full = load_params(REPO / "params.yaml")
    minimal = validated({"gate": {"epsilon": "2/255"}})
    assert minimal["gate"]["epsilon"] == pytest.approx(2 / 255)
    assert minimal["attack"]["profiles"]["strong"]["pgd"] == {"steps": 50, "step_size": None, "restarts": 5}
    assert set(minimal) == set(full)


@pytest.mark.parametrize("over,bad", [({"checkpoint": "best_val"}, "checkpoint: last (got best_val)"),
                                      ({"checkpoint": "last", "threshold": "val_youden"}, "(got val_youden)")])
def test_refit_on_train_val_may_choose_nothing_on_val(over, bad):
    params = _raw()
    params["train"].update(fit_on="train_val", **over)
    problems = check_params(params)
    assert len(problems) == 1 and problems[0].startswith("train: ") and bad in problems[0], problems
    assert problems[0].count("(got") == 1  # names only the key that is wrong
    params["train"].update(checkpoint="last", threshold="0.5")
    assert check_params(params) == []
