"""Clean-training options of fit: discriminative learning rate and label smoothing (defaults unchanged)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from robustct.train import SmoothedObjective, backbone_head_param_groups, fit, train_one_epoch


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.features = nn.Sequential(nn.Flatten(), nn.Linear(16, 4))
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        return self.fc(torch.relu(self.features(x)))


def batch():
    g = torch.Generator().manual_seed(0)
    return torch.rand(16, 1, 4, 4, generator=g), torch.randint(0, 2, (16,), generator=g)


def test_backbone_frozen_by_zero_backbone_lr_and_head_moves():
    m = Net()
    before_f, before_h = m.features[1].weight.clone(), m.fc.weight.clone()
    x, y = batch()
    fit(m, (x, y), (x, y), epochs=1, lr=1e-2, batch_size=8, seed=0,
        param_groups=backbone_head_param_groups(m, 1e-2, 0.0))
    assert backbone_head_param_groups(m, 1e-2, None) is None
    assert torch.equal(m.features[1].weight, before_f) and not torch.equal(m.fc.weight, before_h)


def test_label_smoothing_is_the_smoothed_cross_entropy():
    x, y = batch()
    losses = {}
    for ls in (0.0, 0.2):
        m = Net()
        opt = torch.optim.SGD(m.parameters(), lr=0.0)  # lr 0: the reported loss is the loss at the start
        with torch.no_grad():
            expected = F.cross_entropy(m(x), y, label_smoothing=ls)
        losses[ls] = train_one_epoch(m, x, y, opt, 16, torch.Generator().manual_seed(0),
                                     objective=SmoothedObjective(ls))["loss"]
        assert abs(losses[ls] - float(expected)) < 1e-6
    assert losses[0.2] != losses[0.0]


def test_fit_with_ema_returns_the_averaged_weights():
    from robustct.train import WeightEMA

    x, y = batch()
    m = Net()
    ema = WeightEMA(m, 0.9)
    trained, _ = fit(m, (x, y), (x, y), epochs=2, lr=1e-1, batch_size=4, seed=0, ema=ema, progress=None)
    assert all(torch.equal(a, b) for a, b in zip(trained.state_dict().values(), ema.model.state_dict().values()))
    raw = Net()
    fit(raw, (x, y), (x, y), epochs=2, lr=1e-1, batch_size=4, seed=0, progress=None)
    assert not torch.equal(raw.fc.weight, trained.fc.weight)


def test_checkpoint_last_keeps_the_last_epoch_and_best_val_may_not():
    x, y = batch()
    histories = {}
    for select in ("robust", "last"):  # no val attack: "robust" selects on validation accuracy
        _, histories[select] = fit(Net(), (x, y), (x[:6], y[:6]), epochs=4, lr=0.5, batch_size=4, seed=0,
                                   select=select, progress=None)
    assert [h["epoch"] for h in histories["last"] if h.get("selected")][-1] == 4
    assert all(h.get("selected") for h in histories["last"])
    best = [h for h in histories["robust"] if h.get("selected")][-1]
    assert best["val_accuracy"] == max(h["val_accuracy"] for h in histories["robust"])


def _stage_params(**train):
    from conftest import REPO
    from robustct.params import load_params

    params = load_params(REPO / "params.yaml")
    params["train"].update({**dict(backbone="resnet18", weights="none", image_size=32, epochs=1, batch_size=8), **train})
    return params


def test_head_warmup_trains_the_head_alone_first_then_everything(tmp_path, monkeypatch):
    """train.head_warmup_epochs (LP-FT): a first fit with only the head trainable and the backbone (weights and
    BatchNorm statistics) untouched, then the recipe's fit of the whole model, starting from the warmed head."""
    import copy

    from test_crossval import _tiny_split

    from robustct.stages import train as train_stage

    root, split_dir = _tiny_split(tmp_path)
    calls, real_fit = [], train_stage.fit

    def spy(model, train, val, **kw):
        before = copy.deepcopy(model.state_dict())
        trainable = {n.split(".")[0] for n, p in model.named_parameters() if p.requires_grad}
        trained, hist = real_fit(model, train, val, **kw)
        calls.append(dict(epochs=kw["epochs"], trainable=trainable, before=before,
                          after=copy.deepcopy(trained.state_dict()), label=kw["progress"].label))
        return trained, hist

    monkeypatch.setattr(train_stage, "fit", spy)
    train_stage.run(_stage_params(head_warmup_epochs=2, epochs=1), root, split_dir, tmp_path / "train", track=False)
    warm, fine = calls
    assert (warm["epochs"], warm["trainable"], warm["label"]) == (2, {"fc"}, "head warm-up")
    assert (fine["epochs"], fine["trainable"]) == (1, {"features", "fc"})
    feats = [k for k in warm["before"] if k.startswith("features.")]
    assert all(torch.equal(warm["before"][k], warm["after"][k]) for k in feats)  # incl. BatchNorm running stats
    assert not torch.equal(warm["before"]["fc.weight"], warm["after"]["fc.weight"])
    assert torch.equal(fine["before"]["fc.weight"], warm["after"]["fc.weight"])  # fine-tuning starts from it
    assert not all(torch.equal(fine["before"][k], fine["after"][k]) for k in feats)


def test_soup_members_share_one_head_warmup(tmp_path, monkeypatch):
    """With a soup, the head is warmed up once and every member fine-tunes from that same warmed-up model."""
    import copy

    from test_crossval import _tiny_split

    from robustct.stages import train as train_stage

    root, split_dir = _tiny_split(tmp_path)
    calls, real_fit = [], train_stage.fit

    def spy(model, train, val, **kw):
        calls.append((kw["progress"].label, copy.deepcopy(model.state_dict())))
        return real_fit(model, train, val, **kw)

    monkeypatch.setattr(train_stage, "fit", spy)
    train_stage.run(_stage_params(head_warmup_epochs=1, soup_size=2), root, split_dir, tmp_path / "train",
                    track=False)
    assert [c[0] for c in calls] == ["head warm-up", "fit, soup member 1/2", "fit, soup member 2/2"]
    first, second = calls[1][1], calls[2][1]
    assert all(torch.equal(v, second[k]) for k, v in first.items())  # one warmed-up initialisation
    assert not torch.equal(calls[0][1]["fc.weight"], first["fc.weight"])  # ... which the warm-up changed


def test_head_warmup_needs_a_trainable_backbone():
    from robustct.params import check_params

    params = _stage_params(head_warmup_epochs=2, freeze_backbone=True)
    problems = check_params(params)
    assert len(problems) == 1 and "freeze_backbone: false" in problems[0], problems


def test_batchnorm_eval_keeps_the_pretrained_statistics_and_trains_the_rest(tmp_path):
    from test_crossval import _tiny_split

    from robustct.models import build_model, read_checkpoint
    from robustct.stages import train as train_stage

    root, split_dir = _tiny_split(tmp_path)
    torch.manual_seed(0)
    init = build_model("resnet18", "none", 32, freeze_backbone=False).state_dict()
    for mode in ("eval", "train"):
        train_stage.run(_stage_params(batchnorm=mode), root, split_dir, tmp_path / mode, track=False)
        saved = read_checkpoint(tmp_path / mode / "model.pt")["state_dict"]
        stats = [k for k in saved if k.endswith(("running_mean", "running_var"))]
        kept = all(torch.equal(saved[k], init[k]) for k in stats)
        assert kept == (mode == "eval")
        assert not torch.equal(saved["features.0.weight"], init["features.0.weight"])  # the convolutions train


class _FixedLam:
    """Stands in for the numpy generator of MixupObjective: every Beta draw returns ``lam``."""

    def __init__(self, lam):
        self.lam = lam

    def beta(self, a, b):
        return self.lam


def test_mixup_loss_equals_timm_mixup_with_soft_target_cross_entropy():
    """Known answer from the reference implementation: timm's Mixup (batch mode, label smoothing) followed by
    its SoftTargetCrossEntropy, at the same lam, gives the same mixed images and the same loss."""
    from timm.data import Mixup
    from timm.loss import SoftTargetCrossEntropy

    from robustct.train import MixupObjective

    x, y = batch()
    for lam, ls in ((0.7, 0.1), (0.25, 0.0)):
        m = Net()
        seen = []
        ours = MixupObjective(0.2, ls)
        ours.rng = _FixedLam(lam)
        hook = m.register_forward_pre_hook(lambda mod, args: seen.append(args[0].clone()))
        loss, _ = ours.loss(m, x, y)
        hook.remove()
        mixer = Mixup(mixup_alpha=0.2, cutmix_alpha=0.0, prob=1.0, mode="batch", label_smoothing=ls, num_classes=2)
        mixer._params_per_batch = lambda: (lam, False)
        x_timm, soft = mixer(x.clone(), y.clone())
        assert torch.allclose(seen[0], x_timm, atol=1e-7)
        assert abs(loss.item() - SoftTargetCrossEntropy()(m(x_timm), soft).item()) < 1e-6
        assert 0.0 <= float(seen[0].min()) and float(seen[0].max()) <= 1.0  # a convex combination of images


def test_mixup_draws_are_reproducible_and_its_gradient_differs_from_plain_training():
    from robustct.train import MixupObjective

    x, y = batch()
    draws = []
    for seed in (0, 0, 1):
        obj = MixupObjective(0.4, 0.1, seed=seed)
        draws.append([(obj.loss(Net(), x, y), obj.last_lam)[1] for _ in range(3)])
    assert draws[0] == draws[1] and draws[0] != draws[2]
    assert all(0.0 < lam < 1.0 for lam in draws[0])
    for bad in (0.0, -1.0):
        try:
            MixupObjective(bad)
        except ValueError as exc:
            assert "alpha" in str(exc)
        else:
            raise AssertionError(f"alpha {bad} accepted")
    trained = {}
    for name, obj in (("mixup", MixupObjective(0.4, 0.1, seed=0)), ("plain", SmoothedObjective(0.1))):
        m = Net()
        train_one_epoch(m, x, y, torch.optim.SGD(m.parameters(), lr=0.5), 8, torch.Generator().manual_seed(0),
                        objective=obj)
        trained[name] = m.fc.weight.detach().clone()
    assert not torch.allclose(trained["mixup"], trained["plain"])


def _fit_calls(tmp_path, monkeypatch, name: str, **train) -> list[dict]:
    """Run the train stage on a tiny split (under ``tmp_path / name``) with these ``train`` params, untracked;
    returns the keyword arguments of every :func:`robustct.train.fit` call it made."""
    from test_crossval import _tiny_split

    from robustct.stages import train as train_stage

    calls, real_fit = [], train_stage.fit

    def spy(model, train, val, **kw):
        calls.append(kw)
        return real_fit(model, train, val, **kw)

    monkeypatch.setattr(train_stage, "fit", spy)
    root, split_dir = _tiny_split(tmp_path / name)
    train_stage.run(_stage_params(**train), root, split_dir, tmp_path / name / "train", track=False)
    monkeypatch.setattr(train_stage, "fit", real_fit)
    return calls


def test_stage_objective_follows_mixup_alpha(tmp_path, monkeypatch):
    """train.mixup_alpha > 0 trains every member (seed + k) with mixup and the recipe's label smoothing;
    0 keeps the label-smoothed cross-entropy; the schema refuses a negative alpha."""
    from robustct.params import check_params
    from robustct.train import MixupObjective

    objectives = [kw["objective"] for kw in _fit_calls(tmp_path, monkeypatch, "mix", mixup_alpha=0.3, soup_size=2)]
    assert [type(o) for o in objectives] == [MixupObjective, MixupObjective]
    assert [(o.alpha, o.label_smoothing) for o in objectives] == [(0.3, 0.1)] * 2
    assert [o.seed for o in objectives] == [0, 1]  # member k draws lam from a generator seeded seed + k
    objectives = [kw["objective"] for kw in _fit_calls(tmp_path, monkeypatch, "plain")]
    assert [type(o).__name__ for o in objectives] == ["SmoothedObjective"]
    assert any("mixup_alpha" in p for p in check_params(_stage_params(mixup_alpha=-0.1)))


def test_stage_trains_with_drop_path_and_records_it(tmp_path):
    """train.drop_path reaches the model the stage trains and saves (config["drop_path"])."""
    from test_crossval import _tiny_split

    from robustct.models import read_checkpoint
    from robustct.stages import train as train_stage

    root, split_dir = _tiny_split(tmp_path)
    train_stage.run(_stage_params(backbone="efficientnet_lite0", drop_path=0.1), root, split_dir, tmp_path / "dp",
                    track=False)
    assert read_checkpoint(tmp_path / "dp" / "model.pt")["config"]["drop_path"] == 0.1


def _sam_reference_step(m: nn.Module, x, y, rho: float, lr: float) -> dict:
    """SAM written out independently (Foret et al., Algorithm 1) with torch.func: w - lr * grad L(w + e),
    e = rho * g / ||g||_2, g = grad L(w)."""
    from torch.func import functional_call

    names = [n for n, _ in m.named_parameters()]
    w = [p.detach().clone().requires_grad_(True) for _, p in m.named_parameters()]
    loss = lambda ws: F.cross_entropy(functional_call(m, dict(zip(names, ws)), (x,)), y)  # noqa: E731
    g = torch.autograd.grad(loss(w), w)
    norm = torch.sqrt(sum((gi ** 2).sum() for gi in g))
    w_adv = [(wi + rho * gi / norm).detach().requires_grad_(True) for wi, gi in zip(w, g)]
    g_adv = torch.autograd.grad(loss(w_adv), w_adv)
    return {n: (wi - lr * gi).detach() for n, wi, gi in zip(names, w, g_adv)}


def test_sam_step_is_the_gradient_at_the_ascended_weights():
    """One SGD step of train_one_epoch with sam_rho equals the written-out SAM update (and is not the plain step)."""
    x, y = batch()
    rho, lr = 0.5, 0.3
    m = Net()
    expected = _sam_reference_step(m, x, y, rho, lr)
    train_one_epoch(m, x, y, torch.optim.SGD(m.parameters(), lr=lr), 16, torch.Generator().manual_seed(0),
                    sam_rho=rho)
    plain = Net()
    train_one_epoch(plain, x, y, torch.optim.SGD(plain.parameters(), lr=lr), 16, torch.Generator().manual_seed(0))
    for name, p in m.named_parameters():
        assert torch.allclose(p, expected[name], atol=1e-6), name
    assert not torch.allclose(m.fc.weight, plain.fc.weight, atol=1e-4)


def test_sam_restores_the_weights_and_counts_each_batch_once_in_batchnorm():
    """With a zero learning rate a SAM epoch leaves every weight bit-identical (restored by copy, not by
    subtraction) and the BatchNorm statistics and counters exactly as a plain epoch leaves them."""
    def bn_net():
        torch.manual_seed(0)
        return nn.Sequential(nn.Conv2d(1, 3, 3), nn.BatchNorm2d(3), nn.ReLU(), nn.Flatten(), nn.Linear(12, 2))

    x, y = batch()
    states = {}
    for rho in (0.0, 0.05):
        m = bn_net()
        before = {k: v.clone() for k, v in m.state_dict().items()}
        train_one_epoch(m, x, y, torch.optim.SGD(m.parameters(), lr=0.0), 8, torch.Generator().manual_seed(0),
                        sam_rho=rho)
        for name, p in m.named_parameters():
            assert torch.equal(p, before[name]), name
        states[rho] = m.state_dict()
    for key in ("1.running_mean", "1.running_var", "1.num_batches_tracked"):
        assert torch.equal(states[0.0][key], states[0.05][key]), key
    assert int(states[0.05]["1.num_batches_tracked"]) == 2  # two batches of 8, each counted once


def test_sam_refuses_objectives_that_draw_afresh_and_bad_radii():
    from robustct.train import MixupObjective, sharpness_aware_gradient

    x, y = batch()
    m = Net()
    for kw in ({"sam_rho": 0.05, "objective": MixupObjective(0.2)}, {"sam_rho": -0.1}):
        try:
            train_one_epoch(m, x, y, torch.optim.SGD(m.parameters(), lr=0.1), 8, torch.Generator().manual_seed(0),
                            **kw)
        except ValueError as exc:
            assert "sam_rho" in str(exc)
        else:
            raise AssertionError(f"{kw} accepted")
    from robustct.defences.adversarial import TRADESObjective
    from robustct.train import MixedAdversarialObjective, Objective

    # every objective that draws afresh per call says so; the clean ones may be recomputed
    assert not (MixupObjective.repeatable or MixedAdversarialObjective.repeatable or TRADESObjective.repeatable)
    assert Objective.repeatable
    for rho, match in ((0.0, "rho"), (0.05, "gradients")):  # no first backward pass: no gradients to ascend
        try:
            sharpness_aware_gradient(Net(), lambda: torch.tensor(0.0), rho)
        except ValueError as exc:
            assert match in str(exc)
        else:
            raise AssertionError(f"rho {rho} without gradients accepted")


def test_stage_passes_sam_rho_and_the_schema_checks_it(tmp_path, monkeypatch):
    from robustct.params import check_params

    calls = _fit_calls(tmp_path, monkeypatch, "sam", sam_rho=0.05, head_warmup_epochs=1)
    assert [kw["sam_rho"] for kw in calls] == [0.05, 0.05]  # the head warm-up and the fine-tuning
    assert check_params(_stage_params(sam_rho=0.05)) == []
    assert any("sam_rho" in p for p in check_params(_stage_params(sam_rho=-0.1)))
    assert any("sam_rho" in p and "mixup" in p for p in check_params(_stage_params(sam_rho=0.05, mixup_alpha=0.2)))
