"""L-infinity gradient attacks behind one interface.

Every attack takes its threat model in the constructor and exposes
``perturb(x, y) -> x_adv`` (the interface of fra31/auto-attack). Inputs and outputs are
float tensors of shape (N, C, H, W) in [0, 1]; ``y`` holds int64 class indices of shape
(N,). Epsilon and step size are in [0, 1] pixel units. Attacks put the model in eval
mode for their duration and restore its previous mode; they never change parameters,
gradients or BatchNorm statistics.

Algorithms:
- FGSM: Goodfellow, Shlens & Szegedy, "Explaining and Harnessing Adversarial
  Examples", ICLR 2015.
- PGD: Madry et al., "Towards Deep Learning Models Resistant to Adversarial Attacks",
  ICLR 2018 (random start in the epsilon-ball, signed-gradient steps, projection).
"""
from __future__ import annotations

from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn


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


def project_linf(x_adv: torch.Tensor, x: torch.Tensor, epsilon: float) -> torch.Tensor:
    """Project onto the L-infinity ball of radius ``epsilon`` around ``x``, then clamp to [0, 1]."""
    return torch.min(torch.max(x_adv, x - epsilon), x + epsilon).clamp_(0.0, 1.0)


class Attack:
    """Base class: threat model in the constructor, ``perturb(x, y) -> x_adv``."""

    norm = "Linf"

    def __init__(self, model: nn.Module, epsilon: float):
        if not 0.0 <= float(epsilon) <= 1.0:
            raise ValueError(f"epsilon must be in [0, 1] pixel units, got {epsilon} (use e.g. 2/255)")
        self.model = model
        self.epsilon = float(epsilon)

    def config(self) -> dict:
        """The full threat model, for tracking."""
        return {"attack": type(self).__name__.lower(), "norm": self.norm, "epsilon": self.epsilon}

    def perturb(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def __call__(self, x, y):
        return self.perturb(x, y)


class FGSM(Attack):
    """Fast Gradient Sign Method: ``x_adv = clamp(x + epsilon * sign(grad_x loss), 0, 1)``."""

    def perturb(self, x, y):
        with eval_mode(self.model):
            sign = input_gradient(self.model, x, y).sign()
        return fgsm_from_sign(x, sign, self.epsilon)


def fgsm_from_sign(x: torch.Tensor, grad_sign: torch.Tensor, epsilon: float) -> torch.Tensor:
    """FGSM step from a precomputed gradient sign (lets a sweep reuse one gradient)."""
    return (x + epsilon * grad_sign).clamp(0.0, 1.0).detach()


class PGD(Attack):
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
        seed: seed of the random start (a private generator; global RNG untouched).
    """

    def __init__(self, model, epsilon, steps=10, step_size=None, restarts=1, random_start=True,
                 early_stop=True, seed=0):
        super().__init__(model, epsilon)
        if steps < 1 or restarts < 1:
            raise ValueError("steps and restarts must be >= 1")
        self.steps = int(steps)
        self.step_size = float(step_size) if step_size is not None else 2.5 * self.epsilon / self.steps
        self.restarts = int(restarts)
        self.random_start = bool(random_start)
        self.early_stop = bool(early_stop)
        self.seed = int(seed)

    def config(self):
        return {**super().config(), "steps": self.steps, "step_size": self.step_size, "restarts": self.restarts,
                "random_start": self.random_start, "early_stop": self.early_stop, "seed": self.seed}

    def perturb(self, x, y):
        x = x.detach()
        gen = torch.Generator(device=x.device).manual_seed(self.seed)
        best = x.clone()
        fooled = torch.zeros(len(x), dtype=torch.bool, device=x.device)
        with eval_mode(self.model):
            for _ in range(self.restarts):
                todo = ~fooled if self.early_stop else torch.ones_like(fooled)
                if not todo.any():
                    break
                x_adv, fooled_now = self._run(x[todo], y[todo], gen)
                idx = todo.nonzero().squeeze(1)
                take = fooled_now | ~fooled[idx]  # keep an earlier success, else the latest
                best[idx[take]] = x_adv[take]
                fooled[idx] |= fooled_now
        return best

    def _run(self, x, y, gen):
        if self.random_start and self.epsilon > 0:
            noise = torch.rand(x.shape, generator=gen, device=x.device, dtype=x.dtype) * 2 - 1
            x_adv = project_linf(x + self.epsilon * noise, x, self.epsilon)
        else:
            x_adv = x.clone()
        active = torch.ones(len(x), dtype=torch.bool, device=x.device)
        fooled = torch.zeros_like(active)
        for _ in range(self.steps):
            if self.early_stop:
                with torch.no_grad():
                    fooled = self.model(x_adv).argmax(1) != y
                active = ~fooled
                if not active.any():
                    return x_adv, fooled
            grad = input_gradient(self.model, x_adv[active], y[active])
            stepped = x_adv[active] + self.step_size * grad.sign()
            x_adv[active] = project_linf(stepped, x[active], self.epsilon)
        with torch.no_grad():
            fooled = self.model(x_adv).argmax(1) != y
        return x_adv.detach(), fooled


ATTACKS = {"fgsm": FGSM, "pgd": PGD}
