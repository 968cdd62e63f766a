"""Density-ratio matching (lecture "Ratio matching"; b-GAN, Uehara et al. 2016).

Two alternating steps: (i) fit r(x) ≈ p(x)/q(x) by least squares, L(r) = ½ E_q[r²] - E_p[r]
(uLSIF, Kanamori, Hido, Sugiyama 2009; minimiser r = p/q, the Bregman divergence of
f(u) = ½(u - 1)² up to a constant); (ii) move the generator to shrink D_f(P||Q) estimated
through r. The divergence comes from the `divergence` config group (igm_cli/divergences.py).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from igm_cli.divergences import Divergence, get_divergence
from igm_cli.errors import IgmError
from igm_cli.objectives.base import Objective, critic_outputs, r1_penalty
from igm_cli.registry import MODELS

RATIO_FLOOR = 1e-6  # r >= 1e-6 keeps log r, and f(r) for f with a log, finite


def ratio_from_output(v: Tensor) -> Tensor:
    """The density ratio r = softplus(v) >= RATIO_FLOOR from the critic's raw output v (softplus
    rather than exp: the least-squares fit is unbounded where q has no mass, and a linear tail
    grows more gently; the floor also covers softplus underflowing to 0 in float32)."""
    return F.softplus(v).clamp_min(RATIO_FLOOR)


def least_squares_ratio_loss(r_p: Tensor, r_q: Tensor) -> Tensor:
    """uLSIF's loss from r on samples of P and of Q (each [B]); `igm estimate method=ratio`
    fits its ratio with the same loss."""
    return 0.5 * r_q.pow(2).mean() - r_p.mean()  # ½ E_q[r²] - E_p[r], min at r = p/q


# ----------------------------------------------------------------------------
# Uehara, Sato, Suzuki, Nakayama, Matsuo 2016, "Generative Adversarial Nets from a Density Ratio
# Estimation Perspective" (b-GAN), with the least-squares (uLSIF) ratio fit.

@MODELS.register("ratio_matching", "b-GAN: least-squares density ratio r = p/q, then D_f through r")
class RatioMatching(Objective):
    """The critic outputs v(x) and r(x) = softplus(v(x)) >= 0 (``ratio_from_output``).

    Generator loss. We could not retrieve the b-GAN paper's full text offline (only its
    abstract), so we do not cite its equation; instead we use a loss whose gradient is exactly
    that of D_f(P||Q_θ) when r = p/q. D_f(P||Q_θ) = sup_T E_p[T] - E_{q_θ}[f*(T)], attained at
    T* = f'(p/q); by the envelope theorem its θ-gradient is that of -E_{q_θ}[f*(T*(x))] with T*
    held fixed. So the generator minimises -E_z[f*(f'(r(G(z))))] = -E_z[r f'(r) - f(r)] at
    r = r(G(z)) (Fenchel-Young), with the critic's weights frozen. The naive E_q[f(r(G(z)))]
    would not do: with r fixed it ignores that r = p/q itself moves with q. For Pearson χ²
    (f = (u - 1)², the default) the loss is -E_q[r²] + 1.
    """

    def __init__(self, divergence: str | Divergence = "pearson", n_critic: int = 1,
                 r1_gamma: float = 0.0, r1_every: int = 1):
        try:
            self.f = get_divergence(divergence) if isinstance(divergence, str) else divergence
        except IgmError as exc:
            raise IgmError(f"model.divergence: {exc}") from None
        if self.f.name == "total_variation":  # f*(f'(r)) is constant in r (almost everywhere)
            raise IgmError("model ratio_matching cannot train with model.divergence="
                           "total_variation: the generator loss -E_q[f*(f'(r))] = "
                           "-E_q[sign(r - 1)/2] is piecewise constant, so the generator gets "
                           "zero gradient; use model=fgan divergence=total_variation")
        self.n_critic = n_critic
        self.r1_gamma = r1_gamma  # zero-centred gradient penalty on real data; 0 = off
        self.r1_every = r1_every  # lazy: on every k-th step, γ·k (``r1_now``)

    def ratio(self, critic: nn.Module, x: Tensor) -> tuple[Tensor, Tensor]:
        """(r(x), v(x)), each [B]: the estimated ratio p/q and the critic's raw output."""
        v = critic(x)
        return ratio_from_output(v), v

    def critic_loss(self, nets: nn.ModuleDict, real: Tensor, z: Tensor) -> Tensor:
        with torch.no_grad():
            fake = nets.generator(z)
        gamma = self.r1_now()
        real = real.detach().requires_grad_(gamma > 0)  # the caller's tensor untouched
        v_real, v_fake = critic_outputs(nets.critic, real, fake)
        r_real, r_fake = ratio_from_output(v_real), ratio_from_output(v_fake)
        loss = least_squares_ratio_loss(r_real, r_fake)  # ½ E_q[r²] - E_p[r], min at r = p/q
        if gamma > 0:
            loss = loss + r1_penalty(v_real, real, gamma)
        return loss

    def generator_loss(self, nets: nn.ModuleDict, real: Tensor, z: Tensor) -> Tensor:
        r, _ = self.ratio(nets.critic, nets.generator(z))
        f_star = r * self.f.f_prime(r) - self.f.f_of_log(r.log())  # f*(f'(r)) = r f'(r) - f(r)
        return -f_star.mean()  # -E_q[f*(f'(r))]: the θ-gradient of D_f at r = p/q (envelope)
