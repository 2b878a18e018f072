"""The deep ensemble as one model (robustct.models.Ensemble) and the train stage's ``train.ensemble_size``."""
from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch

from robustct.crossval import ensemble_out_of_fold
from robustct.models import Ensemble, build_model, load_checkpoint, read_checkpoint, save_checkpoint


def _members(k: int = 2, size: int = 32):
    out = []
    for seed in range(k):
        torch.manual_seed(seed)
        out.append(build_model("small_cnn", "none", image_size=size, freeze_backbone=False).eval())
    return out


def _x(n: int = 6, size: int = 32, seed: int = 9):
    return torch.rand(n, 1, size, size, generator=torch.Generator().manual_seed(seed))


def test_ensemble_predicts_the_members_mean_probability():
    members, x = _members(3), _x()
    ens = Ensemble(members).eval()
    with torch.no_grad():
        mean_p = torch.stack([torch.softmax(m(x), 1) for m in members]).mean(0)
        out = ens(x)
    assert out.shape == (6, 2) and out.dtype == torch.float32
    assert torch.allclose(torch.softmax(out, 1), mean_p, atol=1e-6)
    assert torch.allclose(out.exp().sum(1), torch.ones(6), atol=1e-6)  # log-probabilities at threshold 0.5
    assert not torch.allclose(mean_p, torch.softmax(members[0](x), 1))  # the members differ


@pytest.mark.parametrize("quantile", [0.2, 0.5, 0.8])
def test_ensemble_threshold_is_the_decision_rule_on_the_mean_probability(quantile):
    members, x = _members(2), _x(40)
    ens = Ensemble(members).eval()
    with torch.no_grad():
        p = torch.stack([torch.softmax(m(x), 1)[:, 1] for m in members]).mean(0)
        t = float(p.quantile(quantile))  # inside the data, so both decisions occur
        ens.set_threshold(0.9)
        ens.set_threshold(t)  # replaces the earlier one
        clear = (p - t).abs() > 1e-6  # an exact tie may go either way in float32
        pred = ens(x).argmax(1)
    assert torch.equal(pred[clear], (p[clear] >= t).long())
    assert 0 < int(pred.sum()) < 40
    assert ens.config["threshold"] == t
    assert all(m.config["threshold"] == 0.5 for m in ens.members)  # the members keep theirs
    with pytest.raises(ValueError, match="threshold"):
        ens.set_threshold(1.0)


def test_ensemble_input_gradient_goes_through_every_member():
    members, x, y = _members(2), _x(4), torch.tensor([0, 1, 1, 0])
    ens = Ensemble(members).eval()
    xg = x.clone().requires_grad_(True)
    torch.nn.functional.cross_entropy(ens(xg), y, reduction="sum").backward()
    xr = x.clone().requires_grad_(True)  # reference: -log of the mean probability of the label, written out
    p = (torch.softmax(members[0](xr), 1) + torch.softmax(members[1](xr), 1)) / 2
    (-torch.log(p.gather(1, y[:, None])).sum()).backward()
    assert torch.allclose(xg.grad, xr.grad, atol=1e-6)
    x0 = x.clone().requires_grad_(True)
    torch.nn.functional.cross_entropy(members[0](x0), y, reduction="sum").backward()
    assert not torch.allclose(xg.grad, x0.grad, atol=1e-6)  # not member 0's gradient alone


def test_ensemble_checkpoint_round_trip_is_weights_only_and_exact(tmp_path):
    members, x = _members(2), _x()
    members[0].set_tta("hflip")
    members[1].set_tta("hflip")
    ens = Ensemble(members).eval()
    ens.set_threshold(0.3)
    save_checkpoint(ens, tmp_path / "model.pt", extra={"history": [{"epoch": 1}]})
    ckpt = read_checkpoint(tmp_path / "model.pt")  # weights_only=True
    assert ckpt["config"]["ensemble"]["size"] == 2 and ckpt["config"]["tta"] == "hflip"
    back = load_checkpoint(tmp_path / "model.pt")
    assert isinstance(back, Ensemble) and not back.training
    assert back.config == ens.config
    with torch.no_grad():
        assert torch.equal(back(x), ens(x))


def test_ensemble_refuses_what_it_cannot_be():
    with pytest.raises(ValueError, match="at least two"):
        Ensemble(_members(1))
    with pytest.raises(ValueError, match="image sizes"):
        Ensemble([_members(1, 32)[0], _members(1, 48)[0]])
    with pytest.raises(ValueError, match="train.ensemble_size"):
        Ensemble(_members(2)).set_trainable_stages("all")


def test_deployed_ensemble_scores_what_cv_ensemble_estimated():
    """The model's probability is the per-image mean that ``robustct cv-ensemble`` averages (same decisions)."""
    members, x = _members(2), _x(30)
    y = np.arange(30) % 2
    with torch.no_grad():
        p_members = [torch.softmax(m(x), 1)[:, 1].numpy() for m in members]
        p_ens = torch.softmax(Ensemble(members).eval()(x), 1)[:, 1].numpy()
    paths = [f"img{i}.png" for i in range(30)]
    results = [{"k": 5, "seed": 0, "train_seed": s, "out_of_fold": {"path": paths, "fold": (np.arange(30) % 5).tolist(),
                "y": y.tolist(), "p_covid": p.astype(float).tolist()}} for s, p in enumerate(p_members)]
    est = ensemble_out_of_fold(json.loads(json.dumps(results)))
    accuracy = float(((p_ens >= 0.5).astype(int) == y).mean())
    assert est["ensemble"]["accuracy"] == pytest.approx(accuracy)
    assert est["same_folds"]


def test_ensemble_size_is_validated():
    from pydantic import ValidationError

    from robustct.params import TrainParams

    assert TrainParams().ensemble_size == 1
    assert TrainParams(ensemble_size=3).ensemble_size == 3
    with pytest.raises(ValidationError, match="ensemble_size"):
        TrainParams(ensemble_size=0)


def test_train_stage_ensemble_members_are_the_single_models_of_their_seeds(tmp_path, monkeypatch):
    """Member k of ``ensemble_size: 2`` is bit for bit the model ``seed: k`` trains alone; the saved model is their
    ensemble, and the progress bars name the member."""
    import yaml
    from test_crossval import _tiny_split

    from conftest import REPO
    from robustct.stages import train as train_stage

    root, split_dir = _tiny_split(tmp_path)
    labels, real_fit = [], train_stage.fit

    def spy(model, train, val, **kw):
        labels.append((kw["seed"], kw["progress"].label))
        return real_fit(model, train, val, **kw)

    monkeypatch.setattr(train_stage, "fit", spy)
    base = yaml.safe_load((REPO / "params.yaml").read_text())
    base["train"].update(backbone="resnet18", weights="none", image_size=32, epochs=1, batch_size=8)
    singles = []
    for seed in (0, 1):
        params = copy.deepcopy(base)
        params["train"]["seed"] = seed
        train_stage.run(params, root, split_dir, tmp_path / f"single{seed}", track=False)
        singles.append(load_checkpoint(tmp_path / f"single{seed}" / "model.pt"))
    labels.clear()
    params = copy.deepcopy(base)
    params["train"]["ensemble_size"] = 2
    train_stage.run(params, root, split_dir, tmp_path / "ens", track=False)
    assert labels == [(0, "fit, ensemble member 1/2"), (1, "fit, ensemble member 2/2")]
    ens = load_checkpoint(tmp_path / "ens" / "model.pt")
    assert isinstance(ens, Ensemble) and ens.config["ensemble"]["size"] == 2
    for member, single in zip(ens.members, singles):
        state = single.state_dict()
        assert all(torch.equal(v, state[k]) for k, v in member.state_dict().items())
    assert not torch.equal(ens.members[0].fc.weight, ens.members[1].fc.weight)
    metrics = json.loads((tmp_path / "ens" / "metrics.json").read_text())
    assert metrics["threshold"] == 0.5 and 0 <= metrics["val_in_sample_accuracy"] <= 1


def test_defence_from_scratch_accepts_an_ensemble_baseline_and_fine_tuning_refuses_it():
    from robustct.defences.adversarial import AdvTrainSettings, initial_model, train_adversarial

    ens = Ensemble(_members(2))
    fresh = initial_model(ens, AdvTrainSettings.from_cfg({"init": "new", "backbone": "small_cnn", "weights": "none"},
                                                         "trades"))
    assert fresh.config["image_size"] == 32 and "ensemble" not in fresh.config
    data = (_x(4), torch.tensor([0, 1, 0, 1]))
    with pytest.raises(ValueError, match="init: new"):  # before any training
        train_adversarial(ens, data, data, {"init": "baseline", "prefit_epochs": 0}, method="trades")


@pytest.mark.parametrize("method", ["denoiser", "input_transform", "gaussian_smoothing"])
def test_defence_composite_on_an_ensemble_round_trips(tmp_path, method):
    """A defence composed with an ensemble baseline saves a checkpoint that loads back to the same model."""
    from robustct.defences.preprocessing import DenoisedClassifier, DnCNN, InputTransform, TransformedClassifier
    from robustct.defences.smoothing import SmoothedClassifier
    from robustct.params import DenoiserParams, InputTransformParams, SmoothingParams

    ens = Ensemble(_members(2))
    if method == "denoiser":
        model = DenoisedClassifier(DnCNN(1, 3, 8), ens, DenoiserParams(depth=3, width=8))
    elif method == "input_transform":
        model = TransformedClassifier(InputTransform(InputTransformParams()), ens)
    else:
        model = SmoothedClassifier(ens, SmoothingParams(samples=1))
    model.eval().set_threshold(0.4)
    save_checkpoint(model, tmp_path / "model.pt")
    back = load_checkpoint(tmp_path / "model.pt")
    assert type(back) is type(model) and isinstance(back.classifier, Ensemble)
    assert back.config == model.config and back.config["threshold"] == 0.4
    x = _x(4)
    if method != "gaussian_smoothing":  # the smoothed model draws noise per call
        with torch.no_grad():
            assert torch.equal(back(x), model(x))
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in back.state_dict().items())


def test_ensemble_config_keeps_what_all_members_share():
    a, b = _members(2)
    a.set_tta("hflip")
    assert "tta" not in Ensemble([a, b]).config  # mixed: not claimed for the whole
    b.set_tta("hflip")
    assert Ensemble([a, b]).config["tta"] == "hflip"
    inner = Ensemble(_members(2))
    outer = Ensemble([inner, _members(1)[0]])
    assert outer.config["ensemble"]["size"] == 2 and outer.config["ensemble"]["members"][0]["ensemble"]["size"] == 2
    b.set_threshold(0.3)
    with pytest.raises(ValueError, match=r"members \[1\].*set_threshold\(0.5\)"):
        Ensemble([a, b])


def test_refit_names_every_members_validation_numbers_in_sample():
    from robustct.stages.train import in_sample_names

    assert in_sample_names("val_auc") == "val_in_sample_auc"
    assert in_sample_names("ensemble_member_1_val_accuracy") == "ensemble_member_1_val_in_sample_accuracy"
    assert in_sample_names("soup_member_2_val_loss") == "soup_member_2_val_in_sample_loss"
    assert in_sample_names("train_loss") == "train_loss" and in_sample_names("lr") == "lr"


@pytest.mark.parametrize("defend", [{"method": "gaussian_smoothing"}, {"method": "trades", "init": "baseline"},
                                    {"method": "pgd_at", "init": "baseline"}])
def test_params_refuse_an_ensemble_baseline_a_defence_would_fine_tune(defend):
    from robustct.params import Params

    with pytest.raises(ValueError, match="ensemble_size 2 makes the baseline an ensemble"):
        Params.model_validate({"train": {"ensemble_size": 2}, "defend": defend})
    Params.model_validate({"train": {"ensemble_size": 1}, "defend": defend})  # one model: fine
    Params.model_validate({"train": {"ensemble_size": 2}, "defend": {**defend, "method": "denoiser"}})
