"""The one schema of ``params.yaml`` (pydantic v2): types, closed choices, ranges and defaults in one place.

Every section rejects unknown keys, so a typo (``train.schedual``) fails in a second with the key path
and the valid choices instead of silently running with a default. Epsilons and step sizes are L-inf
budgets in [0, 1] pixel units and may be written ``"2/255"``. The file is read as DVC reads it
(YAML 1.2, ruamel), so ``1e-5`` is a float. Stages receive plain dicts (``model_dump``) with every
default filled in and every epsilon parsed to a float.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model, field_validator, model_validator

from .attack_registry import ATTACK_SPECS, NOT_APPLICABLE, fixed_budget_names, names
from .epsilon import Epsilon, ParamsError, format_epsilon, parse_epsilon
from .backbones import BACKBONES, DROP_PATH_BACKBONES
from .defences import METHODS, fine_tunes_baseline
from .gate import VETO_FLAGS
from .sanity import FLAG_NAMES

__all__ = ["Params", "ParamsError", "check_params", "format_epsilon", "load_params", "parse_epsilon", "read_yaml"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)  # "48" is not an int; YAML 1.2 gives 1e-5 as a float


# --- data, validate, split ----------------------------------------------------------------------------
class DataParams(_Strict):
    root: str = Field("data", description="where data.dvc puts the dataset")
    source: str = Field("../shared/datasets/covid-ct", description="local copy used by `robustct fetch-data`")
    split_source: str = Field("../shared/datasets/covid-ct-official-split",
                              description="the authors' split lists, installed by fetch-data as data/official_split")


class NearDuplicateParams(_Strict):
    max_hash_distance: int = Field(8, ge=0, le=64, description="perceptual-hash candidate distance, bits of 64")
    min_ssim: float = Field(0.9, ge=-1, le=1, description="SSIM that confirms a near duplicate")


class ShortcutParams(_Strict):
    max_auc: float = Field(0.7, ge=0.5, le=1)
    folds: int = Field(5, ge=2, le=20)
    seed: int = 0
    image_size: int = Field(160, ge=8, le=1024)


class ValidateParams(_Strict):
    on_error: Literal["fail", "quarantine"] = "quarantine"
    min_width: int = Field(48, ge=1, le=100_000)
    min_height: int = Field(48, ge=1, le=100_000)
    max_pixels: int = Field(50_000_000, ge=1, le=10**10)
    expected_counts: dict[Literal["covid", "non_covid"], int] = Field(
        default_factory=lambda: {"covid": 349, "non_covid": 397})
    near_duplicates: NearDuplicateParams = NearDuplicateParams()
    shortcut: ShortcutParams = ShortcutParams()

    @field_validator("expected_counts")
    @classmethod
    def _counts(cls, v):
        if not v:
            raise ValueError("must map labels to image counts, e.g. {covid: 349, non_covid: 397}")
        if any(c < 0 for c in v.values()):
            raise ValueError("counts must be >= 0")
        return v


class Ratios(_Strict):
    train: float = Field(0.8, gt=0, lt=1)
    val: float = Field(0.1, gt=0, lt=1)
    test: float = Field(0.1, gt=0, lt=1)

    @model_validator(mode="after")
    def _sum_to_one(self):
        total = self.train + self.val + self.test
        if abs(total - 1) > 1e-6:
            raise ValueError(f"ratios must sum to 1, got {total:g}")
        return self


class SplitParams(_Strict):
    scheme: Literal["official", "patient", "random"] = Field(
        "official", description="official: the COVID-CT authors' patient-level lists (203 test images) | "
        "patient: stable hash split, no patient in two splits | random: the paper's image-level split (leaks)")
    official_keep_quarantined_test: bool = Field(
        True, description="official scheme: quarantined files on the test lists stay in test (as published)")
    ratios: Ratios = Ratios()
    seed: int = 42


# --- train, evaluate, defend --------------------------------------------------------------------------
class Augmentation(_Strict):
    hflip: bool = False
    rotation_deg: float = Field(0.0, ge=0, le=180)
    translate: float = Field(0.0, ge=0, le=0.5)
    scale: Optional[list[float]] = Field(None, min_length=2, max_length=2, description="[low, high] zoom range")

    @field_validator("scale")
    @classmethod
    def _scale(cls, v):
        if v is not None and not 0 < v[0] <= v[1]:
            raise ValueError(f"scale must be [low, high] with 0 < low <= high, got {list(v)}")
        return v


def _as_text(v: Any) -> Any:
    """YAML numbers for a choice written as text (``threshold: 0.5``) become text, so choices are checked."""
    return str(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else v


class TrainParams(_Strict):
    backbone: str = Field("efficientnet_lite0", description="a name of robustct.models.BACKBONES")
    weights: str = Field("imagenet", description="imagenet | none | path to a backbone state dict")
    freeze_backbone: bool = True
    image_size: int = Field(160, ge=32, le=1024)
    dropout: float = Field(0.5, ge=0, lt=1)
    lr: float = Field(1e-3, gt=0, le=10)
    weight_decay: float = Field(0.0, ge=0, le=10)
    schedule: Literal["constant", "cosine"] = "constant"
    epochs: int = Field(20, ge=1, le=10_000)
    batch_size: int = Field(32, ge=1, le=4096)
    seed: int = 0
    threshold: Literal["0.5", "val_youden"] = "0.5"
    augmentation: Augmentation = Augmentation()
    lr_backbone: Optional[float] = Field(None, ge=0, le=10, description="backbone learning rate (discriminative); "
                                         "null = lr for all trainable parameters")
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    mixup_alpha: float = Field(0.0, ge=0, le=10, description="> 0: mixup (Zhang et al., ICLR 2018) with lam ~ "
                               "Beta(alpha, alpha) per batch, combined with label_smoothing; 0: off")
    drop_path: float = Field(0.0, ge=0, lt=1, description="stochastic depth rate (timm drop_path_rate; "
                             "efficientnet_lite backbones only): block k of n drops its residual branch with "
                             "probability drop_path * k / n while training; 0: off")
    sam_rho: float = Field(0.0, ge=0, le=10, description="> 0: sharpness-aware minimisation (Foret et al., ICLR 2021) "
                           "with this L2 radius in weight space (two forward-backward passes per batch: twice the "
                           "training time, inference unchanged); 0: off. Not with mixup")
    ema_decay: float = Field(0.0, ge=0, lt=1, description="weight EMA (Polyak averaging); 0: off. The EMA weights are "
                             "validated, selected and saved")
    checkpoint: Literal["best_val", "last"] = Field(
        "best_val", description="best_val: the epoch with the best validation accuracy | last: the last epoch")
    soup_size: int = Field(1, ge=1, le=16, description="uniform model soup (Wortsman et al., 2022): fine-tune this many "
                           "members from one initialisation (member k: data order, augmentation and dropout seeded "
                           "seed + k) and average their weights; 1: one model. Training time x soup_size, inference "
                           "cost unchanged")
    ensemble_size: int = Field(1, ge=1, le=16, description="deep ensemble (Lakshminarayanan et al., NeurIPS 2017): "
                               "train the whole recipe this many times with seeds seed, seed + 1, ... (initialisation, "
                               "data order, augmentation, dropout) on the same images; the saved model predicts the "
                               "members' mean probability. Training, inference and every attack on the baseline cost "
                               "x ensemble_size; 1: one model")
    soup_bn: Literal["average", "reestimate"] = Field(
        "average", description="BatchNorm running statistics of a soup: average (the members' mean, as every other "
        "weight) | reestimate (one pass over the training images, as SWA does)")
    head_warmup_epochs: int = Field(0, ge=0, le=1000, description="> 0: train the new head alone (backbone frozen, "
                                    "constant lr) for this many epochs before fine-tuning everything (LP-FT, Kumar "
                                    "et al., ICLR 2022); needs freeze_backbone: false")
    batchnorm: Literal["train", "eval"] = Field(
        "train", description="BatchNorm running statistics while fine-tuning: train (re-estimated from the batches) | "
        "eval (kept at the pretrained ones; the affine weights still train)")
    tta: Literal["none", "hflip"] = Field(
        "none", description="test-time augmentation built into the saved model: hflip = mean logits of the image and "
        "its mirror (every evaluation and attack sees it; twice the inference and attack cost) | none")
    cv_folds: int = Field(0, ge=0, le=20, description="> 0: patient-grouped k-fold CV of the recipe on train+val")
    cv_seed: int | None = Field(
        None, description="seed of the cross-validation's fold assignment; null = train.seed (then another "
        "train.seed also means other folds). Fix it to compare training seeds on the same folds")
    fit_on: Literal["train", "train_val"] = Field(
        "train", description="train: fit on train, validate on val | train_val: refit on train + val with a fixed "
        "schedule (checkpoint last, threshold 0.5; the validation numbers are then in-sample)")

    _threshold_text = field_validator("threshold", mode="before")(classmethod(lambda cls, v: _as_text(v)))

    @field_validator("backbone")
    @classmethod
    def _backbone(cls, v):
        if v not in BACKBONES:
            raise ValueError(f"unknown backbone {v!r}; valid: {', '.join(BACKBONES)}")
        return v

    @model_validator(mode="after")
    def _refit_selects_nothing(self):
        wrong = [f"checkpoint: last (got {self.checkpoint})"] * (self.checkpoint != "last") + \
            [f"threshold: \"0.5\" (got {self.threshold})"] * (self.threshold != "0.5")
        if self.fit_on == "train_val" and wrong:
            raise ValueError("fit_on: train_val trains on the validation images, so nothing may be chosen on them: "
                             "set " + " and ".join(wrong))
        return self

    @model_validator(mode="after")
    def _drop_path_needs_an_efficientnet(self):
        if self.drop_path and self.backbone not in DROP_PATH_BACKBONES:
            raise ValueError(f"drop_path (stochastic depth) is built for the efficientnet_lite backbones, not "
                             f"{self.backbone}: set drop_path: 0")
        return self

    @model_validator(mode="after")
    def _sam_needs_a_repeatable_loss(self):
        if self.sam_rho and self.mixup_alpha:
            raise ValueError("sam_rho > 0 recomputes each batch's loss at perturbed weights, which mixup would draw "
                             "afresh: set sam_rho: 0 or mixup_alpha: 0")
        return self

    @model_validator(mode="after")
    def _warmup_needs_a_trainable_backbone(self):
        if self.head_warmup_epochs and self.freeze_backbone:
            raise ValueError("head_warmup_epochs > 0 warms the head up before fine-tuning the backbone: set "
                             "freeze_backbone: false (or head_warmup_epochs: 0)")
        return self


class EvaluateParams(_Strict):
    bootstrap: int = Field(1000, ge=1, le=1_000_000, description="bootstrap resamples for 95 % intervals")
    seed: int = 0


class DenoiserParams(_Strict):
    """``defend.denoiser`` (method ``denoiser``): DnCNN shape, adversarial training pairs, training."""

    depth: int = Field(5, ge=2, le=64, description="DnCNN convolution layers")
    width: int = Field(32, ge=1, le=512, description="DnCNN channels")
    loss: Literal["logits", "pixel"] = Field(
        "logits", description="logits: L1 between classifier logits (Liao et al. LGD) | pixel: MSE to the clean image")
    epsilons: list[Epsilon] = Field(default_factory=lambda: [1 / 255, 2 / 255, 4 / 255],
                                    description="PGD budgets of the training pairs (one pair per image and budget)")
    attack_steps: int = Field(5, ge=1, le=1000, description="PGD steps making the pairs (against the frozen baseline)")
    clean_pairs: bool = Field(True, description="also train on (clean, clean) pairs")
    epochs: int = Field(10, ge=1, le=10_000)
    lr: float = Field(1e-3, gt=0, le=10)
    batch_size: int = Field(32, ge=1, le=4096)
    seed: int = 0


class InputTransformParams(_Strict):
    """``defend.input_transform`` (method ``input_transform``): the transform and how attacks see it."""

    kind: Literal["bit_depth", "jpeg", "median"] = "bit_depth"
    bits: int = Field(4, ge=1, le=8, description="bit_depth: 2**bits grey levels")
    quality: int = Field(75, ge=1, le=95, description="jpeg: fixed quality (when quality_range is null)")
    quality_range: Optional[list[int]] = Field(
        None, description="jpeg: [lo, hi] quality drawn per image and call (a random transform)")
    size: int = Field(3, ge=1, le=15, description="median: odd window side")
    bpda: bool = Field(True, description="backward = identity (BPDA, honest); false = the transform's own gradient")
    eot_samples: int = Field(1, ge=1, le=1000, description="draws averaged per forward when the transform is random")
    seed: int = 0

    @field_validator("quality_range")
    @classmethod
    def _qrange(cls, v):
        if v is not None and not (len(v) == 2 and 1 <= v[0] <= v[1] <= 95):
            raise ValueError(f"must be [lo, hi] with 1 <= lo <= hi <= 95, got {list(v)}")
        return v

    @field_validator("size")
    @classmethod
    def _odd(cls, v):
        if v % 2 == 0:
            raise ValueError(f"median window must be odd, got {v}")
        return v

    @property
    def random(self) -> bool:
        return self.kind == "jpeg" and self.quality_range is not None


class SmoothingParams(_Strict):
    """``defend.smoothing`` (method ``gaussian_smoothing``): noise, training and CERTIFY (Cohen et al. 2019)."""

    sigma: float = Field(0.25, gt=0, le=10, description="Gaussian noise std, [0, 1] pixel units")
    samples: int = Field(8, ge=1, le=100_000, description="noise draws averaged per forward of the soft smoothed model")
    seed: int = 0
    trainable_stages: Union[Literal["all"], int] = Field("all", description="backbone stages trained under noise")
    epochs: int = Field(10, ge=1, le=10_000)
    lr: float = Field(1e-4, gt=0, le=10)
    batch_size: int = Field(32, ge=1, le=4096)
    n0: int = Field(100, ge=1, description="CERTIFY: samples to guess the top class")
    n: int = Field(1000, ge=1, description="CERTIFY: samples to bound its probability")
    alpha: float = Field(0.001, gt=0, lt=0.5, description="CERTIFY: failure probability")
    subset: Optional[int] = Field(None, ge=1, description="CERTIFY: test images certified (null = all)")
    radii: list[float] = Field(default_factory=lambda: [0.0, 0.125, 0.25, 0.5, 0.75, 1.0],
                               description="L2 radii at which certified accuracy is reported")

    @field_validator("radii")
    @classmethod
    def _radii(cls, v):
        if any(r < 0 for r in v):
            raise ValueError("radii must be >= 0")
        return v


class DistillParams(_Strict):
    """``defend.distill``: knowledge distillation from the train stage's clean model (Hinton et al., 2015; with
    adversarial inputs ARD, Goldblum et al., 2020) in the clean prefit and the adversarial-training loss."""
    weight: float = Field(0.0, ge=0, le=1, description="w of (1-w) CE + w T^2 KL(teacher || student); 0: off")
    temperature: float = Field(1.0, gt=0, le=100, description="softmax temperature T of teacher and student")


class DefendParams(_Strict):
    """``defend``: adversarial training (robustct.defences.adversarial). Defaults: the recipe chosen in
    docs/defences.md (TRADES on a small BatchNorm CNN trained from scratch, resized to 64 px inside the model)."""
    method: str = Field("trades", description="a name of robustct.defences.METHODS: pgd_at | trades | fast_at")
    epsilon: Epsilon = Field(1 / 255, description="training and selection budget (L-inf, [0, 1] pixel units)")
    steps: int = Field(2, ge=1, le=1000, description="attack steps per training batch (fast_at: 1)")
    step_size: Optional[Epsilon] = Field(None, description="null = 2.5 * epsilon / steps (fast_at: 1.25 * epsilon)")
    epsilon_warmup: int = Field(5, ge=0, le=10_000,
                                description="epochs over which epsilon, step size and TRADES beta ramp up linearly")
    beta: float = Field(6.0, ge=0, le=100, description="TRADES weight of the KL term")
    adv_weight: float = Field(1.0, ge=0, le=1, description="pgd_at/fast_at: (1-w) CE(clean) + w CE(adversarial)")
    val_steps: int = Field(10, ge=1, le=1000, description="PGD steps of the validation attack for selection")
    select_on: Literal["robust", "mean"] = "robust"
    init: Literal["baseline", "new"] = Field("new", description="baseline: the train stage's model; new: backbone/weights")
    backbone: Optional[str] = Field("small_cnn_bn", description="init new: a BACKBONES name (null: the baseline's)")
    weights: str = Field("none", description="init new: imagenet | none | path of a backbone state dict")
    resize_to: Optional[int] = Field(64, ge=8, le=1024, description="init new: side the model resizes its input to")
    resize_mode: Literal["area", "bilinear"] = "area"
    dropout: float = Field(0.2, ge=0, le=1, description="init new: dropout before the head")
    prefit_epochs: int = Field(15, ge=0, le=10_000, description="clean full fine-tune epochs before adversarial training")
    prefit_lr: float = Field(3e-3, gt=0, le=10)
    trainable_stages: Union[Literal["all"], int] = Field("all", description="last N backbone stages trained, or all")
    batchnorm: Literal["eval", "train", "dual"] = Field(
        "dual", description="eval: statistics frozen | train | dual: separate clean/adversarial (AdvProp)")
    ema_decay: float = Field(0.99, ge=0, lt=1, description="weight EMA decay (0: off)")
    lr: float = Field(1e-3, gt=0, le=10)
    lr_decay: float = Field(1.0, gt=0, le=1, description="stage k from the top gets lr * lr_decay**k")
    weight_decay: float = Field(0.0, ge=0, le=10)
    schedule: Literal["constant", "cosine"] = "cosine"
    epochs: int = Field(15, ge=1, le=10_000)
    batch_size: int = Field(32, ge=1, le=4096)
    seed: int = 0
    threshold: Literal["0.5", "val_youden"] = "val_youden"
    augmentation: Augmentation = Augmentation(hflip=True, rotation_deg=10, translate=0.05, scale=[0.9, 1.1])
    co_check_images: int = Field(128, ge=1, le=100_000, description="fast_at: images of the per-epoch PGD check")
    co_check_drop: float = Field(0.2, gt=0, le=1, description="fast_at: stop when PGD accuracy falls this far")
    distill: DistillParams = DistillParams()
    denoiser: DenoiserParams = DenoiserParams()
    input_transform: InputTransformParams = InputTransformParams()
    smoothing: SmoothingParams = SmoothingParams()

    @field_validator("backbone")
    @classmethod
    def _backbone(cls, v):
        if v is not None and v not in BACKBONES:
            raise ValueError(f"unknown backbone {v!r}; valid: {', '.join(BACKBONES)}")
        return v

    _threshold_text = field_validator("threshold", mode="before")(classmethod(lambda cls, v: _as_text(v)))

    @field_validator("trainable_stages")
    @classmethod
    def _stages(cls, v):
        if isinstance(v, int) and v < 0:
            raise ValueError("must be >= 0 or 'all'")
        return v

    @field_validator("method")
    @classmethod
    def _method(cls, v):
        if v not in METHODS:
            raise ValueError(f"unknown defence method {v!r}; valid: {', '.join(METHODS)}")
        return v


# --- attack ---------------------------------------------------------------------------------------------
AttackProfile = create_model(
    "AttackProfile", __config__=ConfigDict(extra="forbid", strict=True),
    **{name: (spec.params, spec.params()) for name, spec in ATTACK_SPECS.items()},
)
"""One attack profile: the parameters of every registered attack (fields derived from the registry)."""

STRONG_PROFILE = {"pgd": {"steps": 50, "restarts": 5}, "bim": {"steps": 100}, "mim": {"steps": 100},
                  "apgd_ce": {"steps": 100, "restarts": 5}, "square": {"max_iter": 5000},
                  "cw_l2": {"max_iter": 1000, "binary_search_steps": 9, "subset": None},
                  "deepfool": {"max_iter": 100, "subset": None}, "fgsm_min_eps": {"epsilon_step": "0.25/255"}}
"""The ``strong`` profile's defaults (Croce & Hein / Carlini et al. style, for a GPU or a night)."""


class Profiles(_Strict):
    cpu: AttackProfile = AttackProfile()
    strong: AttackProfile = AttackProfile(**STRONG_PROFILE)


class TargetedParams(_Strict):
    attacks: list[str] = Field(default_factory=lambda: ["pgd"])
    scenarios: list[Literal["fraud", "missed_diagnosis"]] = Field(
        default_factory=lambda: ["fraud", "missed_diagnosis"],
        description="fraud: non_covid -> covid; missed_diagnosis: covid -> non_covid")
    epsilons: Optional[list[Epsilon]] = Field(
        None, description="budgets of the targeted attacks (null: attack.standard_epsilons); each costs a full sweep")

    @field_validator("attacks")
    @classmethod
    def _targetable(cls, v):
        ok = names(targeted=True)
        bad = [a for a in v if a not in ok]
        if bad:
            raise ValueError(f"{bad} cannot run targeted; valid: {', '.join(ok)}")
        return v


class SanityParams(_Strict):
    max_accuracy_at_largest_epsilon: float = Field(0.05, ge=0, le=1)
    tolerance_images: int = Field(1, ge=0)
    max_zero_gradient_fraction: float = Field(0.05, ge=0, le=1)


def _attack_names(v: list[str], allowed: tuple[str, ...], what: str) -> list[str]:
    problems = []
    for a in v:
        if a in NOT_APPLICABLE:
            problems.append(f"{a!r} does not apply ({NOT_APPLICABLE[a]})")
        elif a not in allowed:
            problems.append(f"unknown {what} {a!r}; valid: {', '.join(allowed)}")
    if problems:
        raise ValueError("; ".join(problems))
    return v


class AttackParams(_Strict):
    fgsm_paper_epsilons: list[Epsilon] = Field(default_factory=lambda: [k / 10 for k in range(11)])
    standard_epsilons: list[Epsilon] = Field(default_factory=lambda: [0.5 / 255, 1 / 255, 2 / 255, 4 / 255, 8 / 255],
                                             min_length=1)
    profile: Literal["cpu", "strong"] = Field("cpu", description="which of `profiles` every attack runs with")
    profiles: Profiles = Profiles()
    worst_case: list[str] = Field(default_factory=lambda: ["fgsm", "pgd", "apgd_ce", "square"], min_length=1,
                                  description="fixed-budget attacks of the worst-case cascade, cheapest first")
    suite: list[str] = Field(default_factory=lambda: list(names()),
                             description="attacks whose individual curves are reported (diagnostics, sanity)")
    targeted: TargetedParams = TargetedParams()
    perceptibility_epsilon: Epsilon = 2 / 255
    sanity: SanityParams = SanityParams()
    batch_size: int = Field(32, ge=1, le=4096)
    grid_examples: int = Field(4, ge=0, le=64)
    seed: int = 0

    @field_validator("worst_case")
    @classmethod
    def _worst(cls, v):
        return _attack_names(v, fixed_budget_names(), "fixed-budget L-inf attack")

    @field_validator("suite")
    @classmethod
    def _suite(cls, v):
        return _attack_names(v, names(), "attack")


# --- gate, promote, candidates ----------------------------------------------------------------------------
class CollapseParams(_Strict):
    min_covid_rate: float = Field(0.1, ge=0, le=1, description="lowest predicted-COVID rate on test")
    max_covid_rate: float = Field(0.9, ge=0, le=1, description="highest predicted-COVID rate on test")
    min_auc: float = Field(0.6, ge=0, le=1, description="AUC below this is a collapse")


class GateParams(_Strict):
    min_clean_accuracy: float = Field(0.70, ge=0, le=1)
    min_auc: float = Field(0.75, ge=0, le=1)
    min_robust_accuracy: float = Field(0.30, ge=0, le=1)
    attack: str = Field("worst_case", description="worst_case (every attack of attack.worst_case) or one attack name")
    epsilon: Epsilon = 1 / 255
    collapse: CollapseParams = CollapseParams()
    veto_flags: list[str] = Field(default_factory=lambda: list(VETO_FLAGS),
                                  description="sanity flags (gradient masking) that stop a candidate from passing")

    @field_validator("veto_flags")
    @classmethod
    def _flags(cls, v):
        bad = [f for f in v if f not in FLAG_NAMES]
        if bad:
            raise ValueError(f"unknown sanity flags {bad}; valid: {', '.join(FLAG_NAMES)}")
        return v

    @field_validator("attack")
    @classmethod
    def _attack(cls, v):
        allowed = ("worst_case",) + fixed_budget_names()
        if v not in allowed:
            raise ValueError(f"unknown gate attack {v!r}; valid: {', '.join(allowed)}")
        return v


class PromoteParams(_Strict):
    model_name: str = Field("covid-ct-classifier", min_length=1)


class CandidateParams(_Strict):
    model: str = Field(description="folder holding the candidate's model.pt and run.json (a stage output)")


class Params(_Strict):
    """The whole of ``params.yaml``."""

    data: DataParams = DataParams()
    validate_: ValidateParams = Field(ValidateParams(), alias="validate")
    split: SplitParams = SplitParams()
    train: TrainParams = TrainParams()
    evaluate: EvaluateParams = EvaluateParams()
    attack: AttackParams = AttackParams()
    defend: DefendParams = DefendParams()
    gate: GateParams = GateParams()
    promote: PromoteParams = PromoteParams()
    candidates: dict[str, CandidateParams] = Field(
        default_factory=lambda: {"baseline": CandidateParams(model="outputs/train"),
                                 "defended": CandidateParams(model="outputs/defend")})

    model_config = ConfigDict(extra="forbid", strict=True, populate_by_name=True)

    @model_validator(mode="after")
    def _ensemble_baseline_is_not_fine_tuned(self):
        """Refused before the K trainings, not after them: the defend stage cannot fine-tune an ensemble."""
        if self.train.ensemble_size > 1 and fine_tunes_baseline(self.defend.method, self.defend.init):
            raise ValueError(f"train.ensemble_size {self.train.ensemble_size} makes the baseline an ensemble, which "
                             f"defend.method {self.defend.method!r}"
                             f"{' with defend.init baseline' if self.defend.init == 'baseline' else ''} "
                             "would fine-tune: use defend.init: new, the denoiser or an input transform, or "
                             "train.ensemble_size: 1")
        return self

    @field_validator("candidates")
    @classmethod
    def _candidate_names(cls, v):
        if not v:
            raise ValueError("at least one candidate is needed")
        for name in v:
            if not name.replace("_", "").isalnum():
                raise ValueError(f"candidate name {name!r} must be letters, digits and _ (it names output folders)")
        return v


def read_yaml(path: str | Path) -> dict:
    """Read a YAML file the way DVC does (YAML 1.2 via ruamel): ``1e-5`` is a float, ``yes`` a string."""
    from ruamel.yaml import YAML  # noqa: PLC0415

    with Path(path).open() as fh:
        data = YAML(typ="safe", pure=True).load(fh)
    return data or {}


def _loc(err: dict) -> str:
    parts = [str(p) for p in err["loc"]
             if not (isinstance(p, str) and (p.startswith("function-") or p.startswith("literal[") or p in ("int", "float", "str")))]
    return ".".join(parts).replace("validate_", "validate")


def _format_error(err: dict) -> str:
    loc = _loc(err)
    msg = err["msg"].removeprefix("Value error, ")
    got = repr(err.get("input"))
    got = got if len(got) <= 60 else got[:57] + "..."
    if err["type"] == "extra_forbidden":
        return f"{loc}: unknown key{_valid_keys(err['loc'])}"
    if err["type"] == "literal_error":
        return f"{loc}: {got} is not a valid choice; {msg[0].lower() + msg[1:]}"
    if "input" in err and err["type"] != "missing" and "(got" not in msg and "epsilon" not in msg:
        return f"{loc}: {msg} (got {got})"
    return f"{loc}: {msg}"


def _merge_union_errors(errors: list[dict]) -> list[str]:
    """One line per key: the branches of a union (``'all'`` or an integer) are joined with ``or``."""
    by_loc: dict[str, list[str]] = {}
    for e in errors:
        line = _format_error(e)
        by_loc.setdefault(_loc(e), []).append(line.split(": ", 1)[1] if ": " in line else line)
    return [f"{loc}: " + " or ".join(dict.fromkeys(msgs)) for loc, msgs in by_loc.items()]


def _valid_keys(loc: tuple) -> str:
    model: Any = Params
    for part in loc[:-1]:
        fields = getattr(model, "model_fields", None)
        if not fields:
            return ""
        key = "validate_" if part == "validate" and model is Params else part
        if key not in fields:
            return ""
        ann = fields[key].annotation
        model = ann if isinstance(ann, type) and issubclass(ann, BaseModel) else None
        if model is None:
            return ""
    keys = [("validate" if k == "validate_" else k) for k in getattr(model, "model_fields", {})]
    return f"; valid: {', '.join(keys)}" if keys else ""


def check_params(params: dict) -> list[str]:
    """Every problem in ``params`` (empty when valid), one message each, led by its key path."""
    try:
        Params.model_validate(params)
    except ValidationError as exc:
        return _merge_union_errors(exc.errors())
    return []


def validated(params: dict) -> dict:
    """``params`` checked, with every default filled in and epsilons parsed (plain dict).

    Raises:
        ParamsError: listing every problem at once, each with its key path and the valid choices.
    """
    problems = check_params(params)
    if problems:
        raise ParamsError("\n  ".join(["invalid parameters:"] + problems))
    return Params.model_validate(params).model_dump(by_alias=True)


def load_params(path: str | Path = "params.yaml") -> dict:
    """Read and check ``params.yaml``; see :func:`validated`.

    Raises:
        FileNotFoundError: the file does not exist.
        ParamsError: one message listing every problem with its key path.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: parameters file not found; run from the repository root")
    try:
        return validated(read_yaml(path))
    except ParamsError as exc:
        raise ParamsError(f"{path}: {exc}") from None


def profile_config(attack: dict, name: str) -> dict:
    """The parameters of attack ``name`` in the active profile (``attack["profile"]``) of a validated section."""
    return dict(attack["profiles"][attack["profile"]][name])
