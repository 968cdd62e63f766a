"""Integral probability metrics with a Lipschitz critic: the Wasserstein GANs.

d_F(P, Q) = sup_{f in F} E_p[f] - E_q[f]; with F the 1-Lipschitz functions this is W1
(Kantorovich-Rubinstein). The critic f outputs a real number (no sigmoid) and climbs the bound;
the generator descends it. The two papers differ only in how they keep f (roughly) Lipschitz:
clipping every weight (WGAN) or penalising gradient norms away from 1 (WGAN-GP).
`igm estimate divergence=wasserstein` trains its critic on the same gap and penalty
(igm_cli/estimate.py), with the penalty one-sided.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from igm_cli.objectives.base import Objective, Phase, critic_outputs, gradient_norms
from igm_cli.parallel import uniform_rows
from igm_cli.registry import MODELS


def interpolate(real: Tensor, fake: Tensor) -> Tensor:
    """x̂ = εx + (1-ε)x̃ with one ε ~ U[0, 1] per sample (broadcast over the non-batch dims).
    With several processes each gets the ε one process would draw for its rows."""
    eps = uniform_rows(real.shape[0], real.device).view((-1,) + (1,) * (real.dim() - 1))
    return eps * real + (1 - eps) * fake


def wasserstein_gap(critic: nn.Module, real: Tensor, fake: Tensor) -> Tensor:
    """E_p f - E_q f: at most W1(P, Q) when f is 1-Lipschitz (Kantorovich-Rubinstein)."""
    f_real, f_fake = critic_outputs(critic, real, fake)
    return f_real.mean() - f_fake.mean()


def gradient_penalty(critic: nn.Module, real: Tensor, fake: Tensor,
                     one_sided: bool = False) -> Tensor:
    """The soft Lipschitz constraint on interpolates x̂ (``interpolate``).

    Two-sided (WGAN-GP, Gulrajani et al. 2017, eq. 3): E(||∇f(x̂)|| - 1)². It pushes every
    slope towards norm 1, so slope 0 is a barrier: a critic that starts with the wrong sign
    has to pay λ to turn round, and may stay the wrong way round (a negative W1 estimate).
    One-sided (WGAN-LP, Petzka, Fischer, Lukovnikov 2018, "On the regularization of Wasserstein
    GANs"): E max(0, ||∇f(x̂)|| - 1)², which only asks for ||∇f|| <= 1, all that the
    Kantorovich-Rubinstein dual needs."""
    x_hat = interpolate(real, fake).requires_grad_(True)
    excess = gradient_norms(critic(x_hat), x_hat) - 1  # [B]
    if one_sided:
        return excess.clamp_min(0).pow(2).mean()  # E_x̂ max(0, ||∇f(x̂)||₂ - 1)²
    return excess.pow(2).mean()  # E_x̂ (||∇f(x̂)||₂ - 1)²


class _WassersteinCritic(Objective):
    """The critic and generator losses both WGANs share."""

    def critic_loss(self, nets: nn.ModuleDict, real: Tensor, z: Tensor) -> Tensor:
        with torch.no_grad():
            fake = nets.generator(z)
        return -wasserstein_gap(nets.critic, real, fake)  # -(E_p f - E_q f)

    def generator_loss(self, nets: nn.ModuleDict, real: Tensor, z: Tensor) -> Tensor:
        return -nets.critic(nets.generator(z)).mean()  # min_θ E_p f - E_q f; E_p f is constant


# ----------------------------------------------------------------------------
# Arjovsky, Chintala, Bottou 2017, "Wasserstein GAN", Algorithm 1 (clip c = 0.01, n_critic = 5).

@MODELS.register("wgan", "Wasserstein GAN, critic weights clipped to [-c, c]")
class WGAN(_WassersteinCritic):
    """``warmup=True`` follows the authors' released code rather than Algorithm 1: 100 critic
    steps per generator step for the first 25 generator steps and on every 500th, so the
    critic is near its optimum before the generator trusts its gradient."""

    def __init__(self, clip: float = 0.01, n_critic: int = 5, warmup: bool = False):
        self.clip = clip
        self.n_critic = n_critic
        self.warmup = warmup

    def critic_steps(self, step: int) -> int:
        if self.warmup and (step < 25 or step % 500 == 0):
            return 100
        return self.n_critic

    def phases(self) -> list[Phase]:
        critic, generator = super().phases()
        critic.repeats = self.critic_steps
        return [critic, generator]

    @torch.no_grad()
    def after_step(self, phase: Phase, nets: nn.ModuleDict) -> None:
        if "critic" in phase.trains:
            for p in nets.critic.parameters():  # w <- clip(w, -c, c), biases included
                p.clamp_(-self.clip, self.clip)


# ----------------------------------------------------------------------------
# Gulrajani et al. 2017, "Improved Training of Wasserstein GANs", Algorithm 1
# (λ = 10, n_critic = 5).

@MODELS.register("wgan_gp", "Wasserstein GAN with gradient penalty λ E(||∇f(x̂)|| - 1)²")
class WGANGP(_WassersteinCritic):
    def __init__(self, gp_lambda: float = 10.0, n_critic: int = 5):
        self.gp_lambda = gp_lambda
        self.n_critic = n_critic

    def critic_loss(self, nets: nn.ModuleDict, real: Tensor, z: Tensor) -> Tensor:
        with torch.no_grad():
            fake = nets.generator(z)
        penalty = self.gp_lambda * gradient_penalty(nets.critic, real, fake)  # λ E(||∇f(x̂)|| - 1)²
        return -wasserstein_gap(nets.critic, real, fake) + penalty  # -(E_p f - E_q f) + penalty
