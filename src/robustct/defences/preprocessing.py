"""Pre-processing defences composed with the classifier into ONE model, so every attack goes end to end.

- Denoiser: a small DnCNN (residual learning: the network predicts the noise, the output is the input
  minus it; Zhang et al., "Beyond a Gaussian Denoiser: Residual Learning of Deep CNN for Image
  Denoising", IEEE TIP 2017) trained on clean/adversarial pairs made by PGD against the frozen
  baseline, with a pixel loss or the logits-guided loss of Liao et al., "Defense against Adversarial
  Attacks Using High-Level Representation Guided Denoiser", CVPR 2018 (HGD/LGD).
- Input transforms: bit-depth reduction, JPEG (Pillow), median filter (Xu et al. 2018 "Feature
  Squeezing"; Guo et al. 2018 "Countering Adversarial Images using Input Transformations").
  Their backward is BPDA with the identity (Athalye, Carlini & Wagner, "Obfuscated Gradients Give a
  False Sense of Security", ICML 2018); a random transform is averaged over ``eot_samples`` draws
  (EOT, Athalye et al. 2018), so any gradient attack on the composite is a BPDA+EOT attack.

Every composite takes (N, 1, H, W) float in [0, 1] and returns (N, 2) logits (log-probabilities when
averaged over draws), has ``config`` (the classifier's config plus ``config["defence"]``, from which
:func:`rebuild_composite` rebuilds it) and ``set_threshold``. Randomness comes from a seed plus a call
counter (no generator object is stored, so the modules pickle).
"""
from __future__ import annotations

import io
import math

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from ..attacks import PGD
from ..models import Classifier, checkpoint_of
from ..params import DenoiserParams, InputTransformParams, parse_epsilon
from ..robustness import predict
from ..train import choose_threshold, evaluate, seed_everything

def section(cls, cfg: dict, key: str):
    """The validated sub-section ``defend.<key>`` as pydantic model ``cls`` (defaults: robustct.params).

    Raises:
        pydantic.ValidationError (a ValueError): unknown key or bad value, with its path.
    """
    return cls.model_validate(cfg.get(key) or {})


class Composite(nn.Module):
    """Base of the defence composites: the wrapped classifier is ``self.classifier``; ``config`` is the
    classifier's config plus ``config["defence"]``; ``checkpoint`` and ``set_threshold`` as in
    :class:`robustct.models.Classifier`."""

    classifier: Classifier

    def checkpoint(self, extra: dict | None = None) -> dict:
        """``{"config", "state_dict", "extra"}`` in plain types (``models.save_checkpoint`` writes it)."""
        return checkpoint_of(self, extra)

    def set_threshold(self, threshold: float) -> None:
        """Fold the decision threshold into the classifier (see ``Classifier.set_threshold``)."""
        self.classifier.set_threshold(threshold)
        self.config["threshold"] = self.classifier.config["threshold"]


# -- call-counter randomness ------------------------------------------------------------------
class Draws(nn.Module):
    """Reproducible random draws without storing a torch.Generator (pickle-safe)."""

    def __init__(self, seed: int):
        super().__init__()
        self.seed = int(seed)
        self.calls = 0

    def generator(self, device) -> torch.Generator:
        self.calls += 1
        return torch.Generator(device=device).manual_seed(self.seed * 1_000_003 + self.calls)


def average_probabilities(model: nn.Module, x: torch.Tensor, samples: int) -> torch.Tensor:
    """EOT: log of the class probabilities averaged over ``samples`` forward passes of a random model.

    The ``samples`` copies of ``x`` go through ``model`` as one batch (the model draws independently
    per row). The result is a log-probability (N, C); cross-entropy on it is minus the log of the
    expected probability of the label, and its input gradient is the EOT gradient.
    """
    if samples <= 1:
        return model(x)
    n = len(x)
    logits = model(x.repeat(samples, *([1] * (x.dim() - 1))))
    probs = torch.softmax(logits, 1).view(samples, n, -1).mean(0)
    return torch.log(probs.clamp_min(1e-12))


class EOT(nn.Module):
    """Wrap a random model so that its output averages probabilities over ``samples`` draws (EOT).

    Input/output as the wrapped model; output is a log-probability (N, C). ``config`` and
    ``set_threshold`` pass through to the wrapped model when it has them.
    """

    def __init__(self, model: nn.Module, samples: int):
        super().__init__()
        if samples < 1:
            raise ValueError(f"EOT samples must be >= 1, got {samples}")
        self.model = model
        self.samples = int(samples)

    def forward(self, x):
        return average_probabilities(self.model, x, self.samples)

    @property
    def config(self):
        return self.model.config

    def set_threshold(self, threshold: float) -> None:
        self.model.set_threshold(threshold)


# -- input transforms -------------------------------------------------------------------------
def bit_depth(x: torch.Tensor, bits: int) -> torch.Tensor:
    """Quantise [0, 1] values to ``2**bits`` levels (Xu et al. 2018). Gradient of ``round``: zero."""
    levels = 2 ** int(bits) - 1
    return torch.round(x * levels) / levels


def median_filter(x: torch.Tensor, size: int) -> torch.Tensor:
    """Median over ``size`` x ``size`` windows (reflect padding), per channel; (N, C, H, W) -> same shape.

    Differentiable almost everywhere (the gradient goes to the median element)."""
    if size < 1 or size % 2 == 0:
        raise ValueError(f"median filter size must be odd and >= 1, got {size}")
    if size == 1:
        return x
    p = size // 2
    n, c, h, w = x.shape
    patches = F.unfold(F.pad(x, (p, p, p, p), mode="reflect"), size)  # (N, C*k*k, H*W)
    return patches.view(n, c, size * size, h * w).median(2).values.view(n, c, h, w)


def jpeg(x: torch.Tensor, quality) -> torch.Tensor:
    """JPEG compress and decode each image with Pillow (8-bit grayscale); no gradient.

    Args:
        x: (N, 1, H, W) float in [0, 1].
        quality: int 1..95, or a sequence of N ints (one per image).
    """
    q = [int(quality)] * len(x) if np.isscalar(quality) else [int(v) for v in quality]
    out = []
    arr = (x.detach().clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()
    for img, qi in zip(arr, q):
        buf = io.BytesIO()
        Image.fromarray(img[0], mode="L").save(buf, format="JPEG", quality=qi)
        buf.seek(0)
        out.append(np.asarray(Image.open(buf).convert("L")))
    return torch.from_numpy(np.stack(out)[:, None]).to(x.device, x.dtype) / 255.0


class _BPDAIdentity(torch.autograd.Function):
    """Forward: ``transformed`` (precomputed); backward: the incoming gradient unchanged (identity)."""

    @staticmethod
    def forward(ctx, x, transformed):
        return transformed

    @staticmethod
    def backward(ctx, grad):
        return grad, None


def bpda(x: torch.Tensor, transformed: torch.Tensor) -> torch.Tensor:
    """Value ``transformed``, gradient passed straight through to ``x`` (BPDA with g(x) = x)."""
    return _BPDAIdentity.apply(x, transformed.detach())


class InputTransform(nn.Module):
    """One input transform on (N, 1, H, W) float in [0, 1] -> same shape, with BPDA or naive backward.

    ``bpda=True``: backward is the identity. ``bpda=False`` (naive): the transform's own gradient,
    which is zero for bit depth (``round``) and JPEG (Pillow, outside autograd).
    """

    def __init__(self, cfg: InputTransformParams):
        super().__init__()
        self.cfg = cfg
        self.draws = Draws(cfg.seed)

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        c = self.cfg
        if c.kind == "bit_depth":
            return bit_depth(x, c.bits)
        if c.kind == "median":
            return median_filter(x, c.size)
        if c.random:
            g = self.draws.generator("cpu")
            q = torch.randint(c.quality_range[0], c.quality_range[1] + 1, (len(x),), generator=g).tolist()
            return jpeg(x, q)
        return jpeg(x, c.quality)

    def forward(self, x):
        if self.cfg.bpda:
            with torch.no_grad():
                t = self.apply(x)
            return bpda(x, t)
        t = self.apply(x)
        return t if t.requires_grad or not x.requires_grad else t + 0.0 * x  # naive: zero gradient


class TransformedClassifier(Composite):
    """``classifier(transform(x))``, averaged over ``eot_samples`` draws when the transform is random."""

    def __init__(self, transform: InputTransform, classifier: Classifier):
        super().__init__()
        self.transform = transform
        self.classifier = classifier
        self.config = {**classifier.config, "defence": {"method": "input_transform", **transform.cfg.model_dump()}}

    @property
    def eot_samples(self) -> int:
        return self.transform.cfg.eot_samples if self.transform.cfg.random else 1

    def forward(self, x):
        return average_probabilities(lambda z: self.classifier(self.transform(z)), x, self.eot_samples)

    def set_bpda(self, on: bool) -> None:
        """Switch between the honest (BPDA) and the naive backward; recorded in config."""
        self.transform.cfg.bpda = bool(on)
        self.config["defence"]["bpda"] = bool(on)


# -- denoiser ---------------------------------------------------------------------------------
class DnCNN(nn.Module):
    """Residual denoiser (Zhang et al. 2017): ``clamp(x - r(x), 0, 1)`` with
    ``r = conv-ReLU, (depth - 2) x conv-BN-ReLU, conv``; 3x3 convolutions, ``width`` channels.

    Input/output: (N, C, H, W) float in [0, 1]. The last layer starts at zero, so an untrained
    denoiser is the identity.
    """

    def __init__(self, channels: int = 1, depth: int = 5, width: int = 32):
        super().__init__()
        if depth < 2:
            raise ValueError(f"DnCNN depth must be >= 2, got {depth}")
        layers = [nn.Conv2d(channels, width, 3, padding=1), nn.ReLU(inplace=True)]
        for _ in range(depth - 2):
            layers += [nn.Conv2d(width, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
        last = nn.Conv2d(width, channels, 3, padding=1)
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)
        self.residual = nn.Sequential(*layers, last)

    def forward(self, x):
        return (x - self.residual(x)).clamp(0.0, 1.0)


class DenoisedClassifier(Composite):
    """``classifier(denoiser(x))``: (N, 1, H, W) float in [0, 1] -> logits (N, 2)."""

    def __init__(self, denoiser: DnCNN, classifier: Classifier, cfg: DenoiserParams):
        super().__init__()
        self.denoiser = denoiser
        self.classifier = classifier
        self.config = {**classifier.config, "defence": {"method": "denoiser", **cfg.model_dump()}}

    def forward(self, x):
        return self.classifier(self.denoiser(x))


def adversarial_pairs(model: nn.Module, x: torch.Tensor, y: torch.Tensor, epsilons: list[float], steps: int,
                      seed: int, batch_size: int = 32, clean: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """(input, target) pairs: PGD examples (no early stop) against ``model`` at each epsilon, and the clean image.

    Args:
        x: (N, 1, H, W) uint8 or float in [0, 1]; y: int64 (N,).

    Returns:
        (inputs, targets), float (M, 1, H, W) on CPU, M = N * (len(epsilons) + clean).
    """
    xf = x.float() / 255.0 if x.dtype == torch.uint8 else x.float()
    dev = next(model.parameters()).device
    ins, tgts = ([xf], [xf]) if clean else ([], [])
    for k, e in enumerate(epsilons):
        atk = PGD(model, e, steps=steps, early_stop=False, seed=seed + k, batch_size=batch_size)
        ins.append(atk.perturb(xf.to(dev), y.to(dev)).cpu())
        tgts.append(xf)
    return torch.cat(ins), torch.cat(tgts)


def _denoiser_loss(composite: DenoisedClassifier, xin, target, kind: str) -> torch.Tensor:
    out = composite.denoiser(xin)
    if kind == "pixel":
        return F.mse_loss(out, target)
    with torch.no_grad():
        ref = composite.classifier(target)
    return F.l1_loss(composite.classifier(out), ref)


def train_denoiser(base_model: Classifier, train, val, cfg: dict, log=None):
    """``defend.method: denoiser``. Train a DnCNN in front of the frozen baseline; return the composite.

    Pairs are made once by PGD against the frozen baseline (train and val); the checkpoint with the
    lowest validation loss is kept; the decision threshold is re-chosen by ``defend.threshold``.

    Returns:
        (:class:`DenoisedClassifier`, history rows ``epoch, lr, train_loss, val_loss, val_accuracy,
        val_auc, val_transfer_accuracy``), the last = accuracy on the validation PGD pairs.
    """
    c = section(DenoiserParams, cfg, "denoiser")
    seed_everything(c.seed)
    dev = next(base_model.parameters()).device
    base_model.eval().requires_grad_(False)
    eps = [parse_epsilon(e, "defend.denoiser.epsilons") for e in c.epsilons]
    print(f"denoiser: PGD-{c.attack_steps} pairs at {len(eps)} epsilons for {len(train[0])} train / {len(val[0])} val images",
          flush=True)
    xtr, ttr = adversarial_pairs(base_model, *train, eps, c.attack_steps, c.seed, c.batch_size, c.clean_pairs)
    xva, tva = adversarial_pairs(base_model, *val, eps, c.attack_steps, c.seed + 100, c.batch_size, c.clean_pairs)
    yva_adv = val[1].repeat(len(eps))
    composite = DenoisedClassifier(DnCNN(1, c.depth, c.width), base_model, c).to(dev)
    opt = torch.optim.Adam(composite.denoiser.parameters(), lr=c.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, c.epochs)
    gen = torch.Generator().manual_seed(c.seed)
    best, history = None, []
    for epoch in range(1, c.epochs + 1):
        composite.denoiser.train()
        order, total = torch.randperm(len(xtr), generator=gen), 0.0
        for i in range(0, len(xtr), c.batch_size):
            idx = order[i:i + c.batch_size]
            loss = _denoiser_loss(composite, xtr[idx].to(dev), ttr[idx].to(dev), c.loss)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
        composite.eval()
        with torch.no_grad():
            vl = sum(float(_denoiser_loss(composite, xva[i:i + 64].to(dev), tva[i:i + 64].to(dev), c.loss)) * len(xva[i:i + 64])
                     for i in range(0, len(xva), 64)) / len(xva)
        ev = evaluate(composite, *val)
        n_clean = len(val[0]) if c.clean_pairs else 0
        transfer = float((predict(composite, xva[n_clean:]).argmax(1) == yva_adv).float().mean()) if eps else float("nan")
        row = {"epoch": epoch, "lr": opt.param_groups[0]["lr"], "train_loss": total / len(xtr), "val_loss": vl,
               "val_accuracy": ev["accuracy"], "val_auc": ev["auc"], "val_transfer_accuracy": transfer}
        if best is None or vl < best[0]:
            best = (vl, {k: v.detach().clone() for k, v in composite.denoiser.state_dict().items()})
            row["selected"] = True
        history.append(row)
        print(f"denoiser epoch {epoch}/{c.epochs}: train_loss={row['train_loss']:.4f} val_loss={vl:.4f} "
              f"val_accuracy={ev['accuracy']:.3f} val_transfer_accuracy={transfer:.3f}", flush=True)
        if log:
            log({k: v for k, v in row.items() if k not in ("epoch", "selected")}, epoch)
        sched.step()
    composite.denoiser.load_state_dict(best[1])
    composite.eval()
    composite.set_threshold(choose_threshold(composite, val, cfg.get("threshold", "0.5")))
    return composite, history


def train_input_transform(base_model: Classifier, train, val, cfg: dict, log=None):
    """``defend.method: input_transform``. Nothing is trained: the baseline behind ``defend.input_transform``.

    Returns:
        (:class:`TransformedClassifier`, one history row with the validation metrics, epoch 0).
    """
    c = section(InputTransformParams, cfg, "input_transform")
    composite = TransformedClassifier(InputTransform(c), base_model.eval()).to(next(base_model.parameters()).device)
    composite.set_threshold(choose_threshold(composite, val, cfg.get("threshold", "0.5")))
    ev = evaluate(composite, *val)
    row = {"epoch": 0, "train_loss": float("nan"), "val_loss": ev["loss"], "val_accuracy": ev["accuracy"],
           "val_auc": ev["auc"]}
    if log:
        log({k: v for k, v in row.items() if k != "epoch" and not math.isnan(v)}, 0)
    return composite, [row]


# -- checkpoints ------------------------------------------------------------------------------
def rebuild_composite(ckpt: dict) -> nn.Module:
    """Rebuild a composite saved by ``models.save_checkpoint`` from its ``config["defence"]``.

    Raises:
        ValueError: unknown ``defence.method``.
    """
    cfg = dict(ckpt["config"])
    d = dict(cfg.pop("defence"))
    kind = d.pop("method")
    from ..models import model_from_checkpoint  # noqa: PLC0415  (models imports this module lazily, too)

    classifier = model_from_checkpoint({"config": cfg, "state_dict": {  # a Classifier or an Ensemble
        k[len("classifier."):]: v for k, v in ckpt["state_dict"].items() if k.startswith("classifier.")}})
    if kind == "denoiser":
        c = DenoiserParams(**d)
        model = DenoisedClassifier(DnCNN(1, c.depth, c.width), classifier, c)
    elif kind == "input_transform":
        model = TransformedClassifier(InputTransform(InputTransformParams(**d)), classifier)
    elif kind == "gaussian_smoothing":
        from ..params import SmoothingParams  # noqa: PLC0415
        from .smoothing import SmoothedClassifier  # noqa: PLC0415

        model = SmoothedClassifier(classifier, SmoothingParams(**d))
    else:
        raise ValueError(f"checkpoint defence method {kind!r} is unknown; valid: denoiser, input_transform, gaussian_smoothing")
    model.load_state_dict(ckpt["state_dict"])
    model.config = dict(ckpt["config"])
    return model.eval()
