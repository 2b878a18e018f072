"""Adversarial attacks behind one interface.

Every attack takes its threat model in the constructor and exposes
``perturb(x, y) -> x_adv`` (the interface of fra31/auto-attack). Inputs and outputs are
float tensors of shape (N, C, H, W) in [0, 1] on the model's device; ``y`` holds int64
class indices of shape (N,): the true labels, or the target labels when the attack is
built with ``targeted=True``. Epsilon and step size are L-infinity budgets in [0, 1]
pixel units. Attacks put the model in eval mode for their duration and restore every
module's previous mode; they never change parameters, gradients or BatchNorm statistics.
Random starts draw from a private generator seeded in the constructor (global RNG
untouched) over the whole input at once, so results do not depend on ``batch_size``.
Evaluation attacks reseed it on every ``perturb`` call (the same call gives the same result);
a training adversary is given ``generator=``, an advancing generator, so every batch gets a
fresh random start while a run stays reproducible from its seed.

Success: untargeted, the prediction differs from ``y``; targeted, it equals ``y``.
With ``early_stop=True`` a sample that already succeeds receives no more gradient steps.

Gradient attacks (ours; math as in locuslab/fast_adversarial: init -> step -> project
to the epsilon-ball -> clamp to [0, 1]):
- FGSM: Goodfellow, Shlens & Szegedy, "Explaining and Harnessing Adversarial Examples", ICLR 2015.
- IterativeEpsilonFGSM: the reference paper's Algorithm 1 (grow epsilon by a step until the
  label flips), giving each image's minimal FGSM epsilon.
- BIM: Kurakin, Goodfellow & Bengio, "Adversarial Examples in the Physical World", 2017.
- PGD: Madry et al., "Towards Deep Learning Models Resistant to Adversarial Attacks", ICLR 2018.
- MIM: Dong et al., "Boosting Adversarial Attacks with Momentum", CVPR 2018.
- APGD (cross-entropy): Croce & Hein, "Reliable Evaluation of Adversarial Robustness with an
  Ensemble of Diverse Parameter-free Attacks", ICML 2020 (fra31/auto-attack).

Library attacks (adversarial-robustness-toolbox, wrapped behind the same interface):
- CarliniL2: Carlini & Wagner, "Towards Evaluating the Robustness of Neural Networks", S&P 2017.
- DeepFool: Moosavi-Dezfooli, Fawzi & Frossard, CVPR 2016.
- Square: Andriushchenko et al., "Square Attack: a query-efficient black-box adversarial
  attack via random search", ECCV 2020.
"""
from __future__ import annotations

import math
import random
from contextlib import contextmanager

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

DLR_NOT_APPLICABLE = (
    "APGD with the DLR loss (and the targeted DLR variant) needs at least 3 classes: DLR divides by "
    "z_pi1 - z_pi3, the gap between the largest and the third-largest logit. This classifier has 2 "
    "classes (non_covid, covid), so only the cross-entropy loss applies: use APGD(loss='ce')."
)
"""Why AutoAttack's APGD-DLR and APGD-T do not apply to this two-class problem."""


@contextmanager
def eval_mode(model: nn.Module):
    """Put ``model`` (and every submodule) in eval mode, restoring each module's mode after."""
    modes = {m: m.training for m in model.modules()}
    model.eval()
    try:
        yield model
    finally:
        for m, mode in modes.items():
            m.training = mode


def input_gradient(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Gradient of the summed cross-entropy loss with respect to the input (not the weights).

    Returns:
        tensor shaped like ``x``.
    """
    x = x.detach().requires_grad_(True)
    loss = F.cross_entropy(model(x), y, reduction="sum")
    (grad,) = torch.autograd.grad(loss, x)
    return grad


def objective_gradient(model: nn.Module, x: torch.Tensor, y: torch.Tensor, targeted: bool = False):
    """The attacker's objective per sample and its input gradient.

    Untargeted: cross-entropy to the true label ``y`` (to maximise). Targeted: minus the
    cross-entropy to the target ``y`` (to maximise). The sum over samples is differentiated,
    so each sample's gradient does not depend on the others in the batch.

    Returns:
        (grad shaped like ``x``, objective (N,), logits (N, classes)), all detached.
    """
    x = x.detach().requires_grad_(True)
    logits = model(x)
    loss = F.cross_entropy(logits, y, reduction="none")
    obj = -loss if targeted else loss
    (grad,) = torch.autograd.grad(obj.sum(), x)
    return grad, obj.detach(), logits.detach()


def is_success(logits: torch.Tensor, y: torch.Tensor, targeted: bool = False) -> torch.Tensor:
    """Bool (N,): prediction equals the target (targeted) or differs from the label (untargeted)."""
    pred = logits.argmax(1)
    return pred == y if targeted else pred != y


def project_linf(x_adv: torch.Tensor, x: torch.Tensor, epsilon) -> torch.Tensor:
    """Project onto the L-infinity ball of radius ``epsilon`` (float or (N,1,1,1)) around ``x``, clamp to [0, 1]."""
    return torch.min(torch.max(x_adv, x - epsilon), x + epsilon).clamp_(0.0, 1.0)


def fgsm_from_sign(x: torch.Tensor, grad_sign: torch.Tensor, epsilon: float) -> torch.Tensor:
    """FGSM step from a precomputed gradient sign (lets a sweep reuse one gradient)."""
    return (x + epsilon * grad_sign).clamp(0.0, 1.0).detach()


class Attack:
    """Base class: threat model in the constructor, ``perturb(x, y) -> x_adv``.

    Args:
        model: classifier taking (N, C, H, W) float inputs in [0, 1], returning logits.
        epsilon: L-infinity budget in [0, 1] pixel units (``None`` for minimal-perturbation attacks).
        targeted: ``y`` passed to ``perturb`` holds target labels.
        batch_size: images per forward/backward pass (``None``: all at once).

    Raises:
        ValueError: epsilon outside [0, 1].
    """

    norm = "Linf"
    name = "attack"

    def __init__(self, model: nn.Module, epsilon: float | None, targeted: bool = False,
                 batch_size: int | None = None):
        if epsilon is not None and not 0.0 <= float(epsilon) <= 1.0:
            raise ValueError(f"epsilon must be in [0, 1] pixel units, got {epsilon} (use e.g. 2/255)")
        self.model = model
        self.epsilon = None if epsilon is None else float(epsilon)
        self.targeted = bool(targeted)
        self.batch_size = batch_size

    def config(self) -> dict:
        """The full threat model, for tracking."""
        return {"attack": self.name, "norm": self.norm, "epsilon": self.epsilon, "targeted": self.targeted}

    def perturb(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Adversarial images (N, C, H, W) float in [0, 1] for images ``x`` and labels/targets ``y`` (N,)."""
        x = x.detach()
        y = y.to(x.device)
        rand = self._draw(x)
        out = torch.empty_like(x)
        bs = self.batch_size or max(len(x), 1)
        with eval_mode(self.model):
            for i in range(0, len(x), bs):
                sl = slice(i, i + bs)
                out[sl] = self._perturb(x[sl], y[sl], None if rand is None else rand[:, sl])
        return out

    def _draw(self, x: torch.Tensor) -> torch.Tensor | None:
        """Random numbers for the whole input (shape (R, N, ...)), drawn before batching."""
        return None

    def _perturb(self, x, y, rand):
        raise NotImplementedError

    def __call__(self, x, y):
        return self.perturb(x, y)


class FGSM(Attack):
    """Fast Gradient Sign Method: ``x_adv = clamp(x + epsilon * sign(grad_x loss), 0, 1)``.

    Targeted: steps down the cross-entropy to the target instead.
    """

    name = "fgsm"

    def _perturb(self, x, y, rand):
        grad = objective_gradient(self.model, x, y, self.targeted)[0]
        return fgsm_from_sign(x, grad.sign(), self.epsilon)


class IterativeEpsilonFGSM(Attack):
    """The reference paper's Algorithm 1: FGSM with epsilon grown by ``epsilon_step`` until the label flips.

    One input gradient per image (its sign does not depend on epsilon); then one forward pass
    per epsilon for the images not yet flipped (early stop). ``perturb`` returns each image at its
    minimal epsilon (or at ``epsilon``, the largest tried, if it never flips).

    Args:
        epsilon: largest epsilon tried, [0, 1] pixel units.
        epsilon_step: grid step (> 0); epsilons tried are ``0, step, 2 step, ..., <= epsilon``.
    """

    name = "fgsm_min_eps"

    def __init__(self, model, epsilon=0.3, epsilon_step=1 / 255, targeted=False, batch_size=None):
        super().__init__(model, epsilon, targeted, batch_size)
        if not epsilon_step > 0:
            raise ValueError(f"epsilon_step must be > 0, got {epsilon_step}")
        self.epsilon_step = float(epsilon_step)
        self.grid = [k * self.epsilon_step for k in range(int(math.floor(self.epsilon / self.epsilon_step + 1e-9)) + 1)]

    def config(self):
        return {**super().config(), "epsilon_step": self.epsilon_step}

    def minimal_epsilon(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-image minimal epsilon on the grid (float (N,), ``inf`` if none up to ``epsilon``; 0 if
        already successful unperturbed) and the adversarial images at that epsilon."""
        x, y = x.detach(), y.to(x.device)
        eps_min = torch.full((len(x),), math.inf, device=x.device, dtype=torch.float64)
        out = torch.empty_like(x)
        bs = self.batch_size or max(len(x), 1)
        with eval_mode(self.model):
            for i in range(0, len(x), bs):
                xb, yb = x[i:i + bs], y[i:i + bs]
                sign = objective_gradient(self.model, xb, yb, self.targeted)[0].sign()
                e_min = torch.full((len(xb),), math.inf, device=x.device, dtype=torch.float64)
                adv = fgsm_from_sign(xb, sign, self.epsilon)
                for e in self.grid:
                    todo = torch.isinf(e_min)
                    if not todo.any():
                        break
                    xa = fgsm_from_sign(xb[todo], sign[todo], e)
                    with torch.no_grad():
                        ok = is_success(self.model(xa), yb[todo], self.targeted)
                    idx = todo.nonzero().squeeze(1)[ok]
                    e_min[idx] = e
                    adv[idx] = xa[ok]
                eps_min[i:i + bs], out[i:i + bs] = e_min, adv
        return eps_min, out

    def perturb(self, x, y):
        return self.minimal_epsilon(x, y)[1]


class _IterativeLinf(Attack):
    """Shared loop of the signed-gradient L-infinity attacks (BIM, PGD, MIM): restarts, early stop."""

    default_random_start = True

    def __init__(self, model, epsilon, steps=10, step_size=None, restarts=1, random_start=None,
                 early_stop=True, seed=0, targeted=False, batch_size=None, generator=None):
        super().__init__(model, epsilon, targeted, batch_size)
        if steps < 1 or restarts < 1:
            raise ValueError("steps and restarts must be >= 1")
        self.steps = int(steps)
        self.step_size = float(step_size) if step_size is not None else self._default_step()
        self.restarts = int(restarts)
        self.random_start = self.default_random_start if random_start is None else bool(random_start)
        self.early_stop = bool(early_stop)
        self.seed = int(seed)
        self.generator = generator

    def _default_step(self):
        return 2.5 * self.epsilon / self.steps

    def config(self):
        return {**super().config(), "steps": self.steps, "step_size": self.step_size, "restarts": self.restarts,
                "random_start": self.random_start, "early_stop": self.early_stop, "seed": self.seed}

    def _draw(self, x):
        if not (self.random_start and self.epsilon > 0):
            return None
        if self.generator is not None:  # training: advancing CPU generator, fresh start per call
            shape = (self.restarts, *x.shape)
            return (torch.rand(shape, generator=self.generator, dtype=x.dtype) * 2 - 1).to(x.device)
        gen = torch.Generator(device=x.device).manual_seed(self.seed)
        return torch.rand((self.restarts, *x.shape), generator=gen, device=x.device, dtype=x.dtype) * 2 - 1

    def _perturb(self, x, y, rand):
        best = x.clone()
        done = torch.zeros(len(x), dtype=torch.bool, device=x.device)
        for r in range(self.restarts):
            todo = ~done if self.early_stop else torch.ones_like(done)
            if not todo.any():
                break
            x0 = x[todo]
            start = project_linf(x0 + self.epsilon * rand[r][todo], x0, self.epsilon) if rand is not None else x0.clone()
            x_adv, ok = self._run(x0, y[todo], start)
            idx = todo.nonzero().squeeze(1)
            take = ok | ~done[idx]  # keep an earlier success, else the latest
            best[idx[take]] = x_adv[take]
            done[idx] |= ok
        return best

    def _direction(self, grad, state, sel):
        return grad.sign()

    def _run(self, x, y, x_adv):
        """Signed-gradient steps from ``x_adv``. With early stop, success is read from the logits of the
        same forward pass that gives the gradient, so a step costs one forward+backward over the
        images still unbroken, and broken images get no further steps."""
        state: dict = {"n": len(x)}
        sel = torch.arange(len(x), device=x.device)
        for _ in range(self.steps):
            grad, _, logits = objective_gradient(self.model, x_adv[sel], y[sel], self.targeted)
            if self.early_stop:
                keep = ~is_success(logits, y[sel], self.targeted)
                sel, grad = sel[keep], grad[keep]
                if len(sel) == 0:
                    break
            stepped = x_adv[sel] + self.step_size * self._direction(grad, state, sel)
            x_adv[sel] = project_linf(stepped, x[sel], self.epsilon)
        with torch.no_grad():
            ok = is_success(self.model(x_adv), y, self.targeted)
        return x_adv.detach(), ok


class BIM(_IterativeLinf):
    """Basic Iterative Method (iterative FGSM from ``x``, no random start), L-infinity.

    Args:
        epsilon: budget; steps: >= 1; step_size: ``None`` = ``2.5 * epsilon / steps``;
        early_stop, targeted, batch_size: as in :class:`PGD`.
    """

    name = "bim"
    default_random_start = False


class PGD(_IterativeLinf):
    """Projected gradient descent on the cross-entropy loss, L-infinity threat model.

    Args:
        model: classifier taking [0, 1] inputs.
        epsilon: L-infinity budget in [0, 1] pixel units.
        steps: number of gradient steps (>= 1).
        step_size: per-step size; ``None`` means ``2.5 * epsilon / steps`` (Madry et al.).
        restarts: independent random starts; a sample counts as broken if any restart breaks it.
        random_start: start uniformly in the epsilon-ball (else at ``x``).
        early_stop: stop updating samples once misclassified (evaluation); set False for
            adversarial training, which wants the loss maximised for every sample.
        seed: seed of the random start (a private generator reseeded on every ``perturb`` call, so
            evaluation is deterministic; global RNG untouched).
        targeted: ``y`` are target labels; minimises the cross-entropy to them.
        generator: a CPU ``torch.Generator`` for training adversaries: random starts are drawn from it
            and it advances, so each call (batch) gets a fresh start; ``seed`` is then unused.
    """

    name = "pgd"


class MIM(_IterativeLinf):
    """Momentum Iterative Method: ``g <- decay * g + grad / ||grad||_1`` (per sample), step ``sign(g)``.

    Args:
        decay: momentum factor mu (Dong et al.: 1.0).
        step_size: ``None`` = ``epsilon / steps`` (Dong et al.). Other args as in :class:`PGD`;
        no random start by default.
    """

    name = "mim"
    default_random_start = False

    def __init__(self, model, epsilon, steps=10, step_size=None, decay=1.0, **kw):
        self.decay = float(decay)
        super().__init__(model, epsilon, steps=steps, step_size=step_size, **kw)

    def _default_step(self):
        return self.epsilon / self.steps

    def config(self):
        return {**super().config(), "decay": self.decay}

    def _direction(self, grad, state, sel):
        if "g" not in state:  # momentum per image of the run, indexed by position
            state["g"] = torch.zeros((state["n"], *grad.shape[1:]), device=grad.device, dtype=grad.dtype)
        l1 = grad.abs().flatten(1).mean(1).clamp_min(1e-12).view(-1, *([1] * (grad.dim() - 1)))
        g = self.decay * state["g"][sel] + grad / l1
        state["g"][sel] = g
        return g.sign()


class APGD(_IterativeLinf):
    """Auto-PGD with the cross-entropy loss (APGD-CE), L-infinity: momentum 0.75, step size halved
    per sample at checkpoints when the loss oscillates or stops improving (Croce & Hein, 2020).

    Args:
        loss: ``"ce"`` only. ``"dlr"`` / ``"dlr-targeted"`` raise ValueError: see ``DLR_NOT_APPLICABLE``.
        rho: checkpoint condition (fraction of steps that must increase the loss), 0.75.
        Other args as in :class:`PGD`; step size is automatic (starts at ``2 * epsilon``).

    Raises:
        ValueError: loss other than ``"ce"``.
    """

    name = "apgd_ce"

    def __init__(self, model, epsilon, steps=10, restarts=1, loss="ce", rho=0.75, **kw):
        if loss != "ce":
            raise ValueError(f"APGD loss {loss!r} is not applicable. " + DLR_NOT_APPLICABLE)
        self.rho = float(rho)
        kw.pop("step_size", None)
        super().__init__(model, epsilon, steps=steps, step_size=2 * float(epsilon), restarts=restarts, **kw)

    def config(self):
        return {**super().config(), "loss": "ce", "rho": self.rho}

    def _run(self, x, y, x_adv):
        n, view = len(x), (-1,) + (1,) * (x.dim() - 1)
        k, k_min, decr = max(int(0.22 * self.steps), 1), max(int(0.06 * self.steps), 1), max(int(0.03 * self.steps), 1)
        eta = torch.full((n,), 2 * self.epsilon, device=x.device)
        grad, loss, logits = objective_gradient(self.model, x_adv, y, self.targeted)
        ok = is_success(logits, y, self.targeted)
        found = x_adv.clone()
        x_best, loss_best, grad_best = x_adv.clone(), loss.clone(), grad.clone()
        x_prev, loss_prev = x_adv.clone(), loss.clone()
        loss_best_last, reduced_last = loss_best.clone(), torch.zeros(n, dtype=torch.bool, device=x.device)
        increases, counter = torch.zeros(n, device=x.device), 0
        for i in range(self.steps):
            act = ~ok if self.early_stop else torch.ones_like(ok)
            if not act.any():
                break
            a = 0.75 if i > 0 else 1.0
            xa, xp, xo, e = x_adv[act], x_prev[act], x[act], eta[act].view(view)
            z = project_linf(xa + e * grad[act].sign(), xo, self.epsilon)
            x_new = project_linf(xa + a * (z - xa) + (1 - a) * (xa - xp), xo, self.epsilon)
            x_prev[act] = xa
            x_adv[act] = x_new
            g, lo, lg = objective_gradient(self.model, x_new, y[act], self.targeted)
            grad[act] = g
            increases[act] += (lo > loss_prev[act]).float()
            loss_prev[act] = lo
            succ = is_success(lg, y[act], self.targeted)
            idx = act.nonzero().squeeze(1)
            new_ok = idx[succ & ~ok[idx]]
            found[new_ok] = x_adv[new_ok]
            ok[idx] |= succ
            better = idx[lo > loss_best[idx]]
            x_best[better], loss_best[better], grad_best[better] = x_adv[better], loss_prev[better], grad[better]
            counter += 1
            if counter == k:
                oscillating = increases < self.rho * k
                no_improvement = ~reduced_last & (loss_best_last >= loss_best)
                reduce = oscillating | no_improvement
                reduced_last, loss_best_last = reduce, loss_best.clone()
                eta[reduce] /= 2
                x_adv[reduce], grad[reduce] = x_best[reduce], grad_best[reduce]
                counter, k = 0, max(k - decr, k_min)
                increases.zero_()
        out = torch.where(ok.view(view), found, x_best)
        return out.detach(), ok


class _ARTAttack(Attack):
    """Wraps an adversarial-robustness-toolbox evasion attack behind ``perturb(x, y)``.

    ART's numpy and Python global RNGs are seeded with ``seed`` for the call and restored after.
    The whole input goes to ART in one ``generate`` call (ART batches internally with ``batch_size``).
    """

    def __init__(self, model, epsilon, targeted=False, batch_size=None, seed=0):
        super().__init__(model, epsilon, targeted, batch_size)
        self.seed = int(seed)

    def config(self):
        return {**super().config(), "seed": self.seed, "library": "adversarial-robustness-toolbox"}

    def _art_attack(self, classifier):
        raise NotImplementedError

    def perturb(self, x, y):
        from art.estimators.classification import PyTorchClassifier  # noqa: PLC0415

        x = x.detach()
        if len(x) == 0:
            return x.clone()
        with eval_mode(self.model), torch.no_grad():
            n_classes = int(self.model(x[:1]).shape[1])
        clf = PyTorchClassifier(self.model, loss=nn.CrossEntropyLoss(), input_shape=tuple(x.shape[1:]),
                                nb_classes=n_classes, clip_values=(0.0, 1.0),
                                device_type="gpu" if x.is_cuda else "cpu")
        np_state, py_state = np.random.get_state(), random.getstate()
        params = list(self.model.parameters())
        grads = [p.grad for p in params]  # ART's loss gradients also fill parameter gradients: restore them
        np.random.seed(self.seed)
        random.seed(self.seed)
        try:
            with eval_mode(self.model):
                adv = self._art_attack(clf).generate(x.cpu().numpy(), y=np.eye(n_classes)[y.cpu().numpy()])
        finally:
            np.random.set_state(np_state)
            random.setstate(py_state)
            for p, g in zip(params, grads):
                p.grad = g
        return torch.from_numpy(adv).to(x.device, x.dtype).clamp_(0.0, 1.0)


class CarliniL2(_ARTAttack):
    """Carlini & Wagner L2 (ART ``CarliniL2Method``): minimal-L2 perturbation, no epsilon.

    Unsuccessful images come back unchanged (ART keeps the best success found, else ``x``).
    Args: confidence (kappa), learning_rate, binary_search_steps, max_iter, initial_const.
    """

    name = "cw_l2"
    norm = "L2"

    def __init__(self, model, targeted=False, confidence=0.0, learning_rate=0.01, binary_search_steps=5,
                 max_iter=10, initial_const=0.1, batch_size=None, seed=0):
        super().__init__(model, None, targeted, batch_size, seed)
        self.confidence, self.learning_rate = float(confidence), float(learning_rate)
        self.binary_search_steps, self.max_iter = int(binary_search_steps), int(max_iter)
        self.initial_const = float(initial_const)

    def config(self):
        return {**super().config(), "confidence": self.confidence, "learning_rate": self.learning_rate,
                "binary_search_steps": self.binary_search_steps, "max_iter": self.max_iter,
                "initial_const": self.initial_const}

    def _art_attack(self, clf):
        from art.attacks.evasion import CarliniL2Method  # noqa: PLC0415

        return CarliniL2Method(clf, confidence=self.confidence, targeted=self.targeted,
                               learning_rate=self.learning_rate, binary_search_steps=self.binary_search_steps,
                               max_iter=self.max_iter, initial_const=self.initial_const,
                               batch_size=self.batch_size or 64, verbose=False)


class DeepFool(_ARTAttack):
    """DeepFool (ART): iterative linearisation to the nearest decision boundary (L2), untargeted only.

    Args: max_iter; overshoot (ART ``epsilon``, relative overshoot past the boundary).

    Raises:
        ValueError: ``targeted=True`` (DeepFool is untargeted).
    """

    name = "deepfool"
    norm = "L2"

    def __init__(self, model, max_iter=20, overshoot=0.02, targeted=False, batch_size=None, seed=0):
        if targeted:
            raise ValueError("DeepFool is untargeted; use PGD/BIM/MIM/APGD/C&W with targeted=True")
        super().__init__(model, None, False, batch_size, seed)
        self.max_iter, self.overshoot = int(max_iter), float(overshoot)

    def config(self):
        return {**super().config(), "max_iter": self.max_iter, "overshoot": self.overshoot}

    def _art_attack(self, clf):
        from art.attacks.evasion import DeepFool as ArtDeepFool  # noqa: PLC0415

        return ArtDeepFool(clf, max_iter=self.max_iter, epsilon=self.overshoot, nb_grads=2,
                           batch_size=self.batch_size or 64, verbose=False)


class Square(_ARTAttack):
    """Square attack (ART), L-infinity, query-limited black box: uses only the model's outputs.

    Args: epsilon; max_iter (queries per image ~ max_iter); p_init; restarts.

    Raises:
        ValueError: ``targeted=True`` (ART's Square attack is untargeted).
    """

    name = "square"

    def __init__(self, model, epsilon, max_iter=100, p_init=0.8, restarts=1, targeted=False, batch_size=None,
                 seed=0):
        if targeted:
            raise ValueError("the Square attack (ART) is untargeted only")
        super().__init__(model, epsilon, False, batch_size, seed)
        self.max_iter, self.p_init, self.restarts = int(max_iter), float(p_init), int(restarts)

    def config(self):
        return {**super().config(), "max_iter": self.max_iter, "p_init": self.p_init, "restarts": self.restarts}

    def _art_attack(self, clf):
        from art.attacks.evasion import SquareAttack  # noqa: PLC0415

        return SquareAttack(clf, norm=np.inf, eps=self.epsilon, max_iter=self.max_iter, p_init=self.p_init,
                            nb_restarts=self.restarts, batch_size=self.batch_size or 128, verbose=False)

    def perturb(self, x, y):
        if self.epsilon == 0:
            return x.detach().clone()
        return project_linf(super().perturb(x, y), x.detach(), self.epsilon)


ATTACKS = {"fgsm": FGSM, "fgsm_min_eps": IterativeEpsilonFGSM, "bim": BIM, "pgd": PGD, "mim": MIM,
           "apgd_ce": APGD, "cw_l2": CarliniL2, "deepfool": DeepFool, "square": Square}
"""Every attack by its field-standard name."""

NOT_APPLICABLE = {"apgd_dlr": DLR_NOT_APPLICABLE, "apgd_t": DLR_NOT_APPLICABLE}
"""Attack names that exist in the literature but do not apply here, with the reason."""
