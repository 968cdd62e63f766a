"""f-divergence minimisation through the Fenchel dual (Nowozin, Cseke, Tomioka 2016).

D_f(P||Q) >= sup_T E_p[T(x)] - E_q[f*(T(x))], tight at T*(x) = f'(p(x)/q(x)). The critic
climbs the bound, the generator (Q) descends it. Two parametrisations of T, as in the lecture:
  I  ("Divergence minimization I"):  the critic outputs v(x) and T = g_f(v), with g_f mapping R
     into dom f* (f-GAN Table 2);
  II ("Divergence minimization II"): the critic outputs a density ratio r(x) = p/q > 0 and
     T = f'(r), so f*(T) = r f'(r) - f(r) (Fenchel-Young). We output log r, so r = e^v.
The divergence comes from the `divergence` config group (igm_cli/divergences.py).
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch
from torch import Tensor, nn

from igm_cli.divergences import Divergence, get_divergence
from igm_cli.errors import IgmError
from igm_cli.objectives.base import Objective, critic_outputs, r1_penalty
from igm_cli.registry import MODELS

GENERATOR_LOSSES = ("alternative", "saddle")
LOG_RATIO_LIMIT = 30.0  # |log r| <= 30 keeps e^v and f(e^v) finite in float32


def fenchel_bound(t_p: Tensor, f_star_q: Tensor) -> Tensor:
    """f-GAN eq. 6 from T on samples of P and f*(T) on samples of Q (each [B]); `igm estimate`
    maximises the same bound."""
    return t_p.mean() - f_star_q.mean()  # E_p[T] - E_q[f*(T)] <= D_f(P||Q)


class _FenchelDual(Objective, ABC):
    """Shared by both parametrisations: ``terms(v)`` gives (T, f*(T)) from the critic output."""

    def __init__(self, divergence: str | Divergence = "jensen_shannon",
                 generator_loss: str = "alternative", n_critic: int = 1, r1_gamma: float = 0.0,
                 r1_every: int = 1):
        if generator_loss not in GENERATOR_LOSSES:
            raise IgmError(f"unknown model.generator_loss '{generator_loss}'; "
                           f"choose from: {', '.join(GENERATOR_LOSSES)}")
        self.f = get_divergence(divergence) if isinstance(divergence, str) else divergence
        self.update = generator_loss
        self.n_critic = n_critic
        self.r1_gamma = r1_gamma  # zero-centred gradient penalty on real data; 0 = off
        self.r1_every = r1_every  # lazy: on every k-th step, γ·k (``r1_now``)

    @abstractmethod
    def terms(self, v: Tensor) -> tuple[Tensor, Tensor]:  # (T, f*(T)), each [B]
        ...

    def critic_loss(self, nets: nn.ModuleDict, real: Tensor, z: Tensor) -> Tensor:
        with torch.no_grad():
            fake = nets.generator(z)
        gamma = self.r1_now()
        real = real.detach().requires_grad_(gamma > 0)  # the caller's tensor untouched
        v_real, v_fake = critic_outputs(nets.critic, real, fake)
        t_real, _ = self.terms(v_real)
        _, f_star_fake = self.terms(v_fake)
        loss = -fenchel_bound(t_real, f_star_fake)  # -(E_p[T] - E_q[f*(T)])
        if gamma > 0:
            loss = loss + r1_penalty(v_real, real, gamma)
        return loss

    def generator_loss(self, nets: nn.ModuleDict, real: Tensor, z: Tensor) -> Tensor:
        t_fake, f_star_fake = self.terms(nets.critic(nets.generator(z)))
        if self.update == "saddle":
            return -f_star_fake.mean()  # min_θ E_p[T] - E_q[f*(T)]; E_p[T] does not depend on θ
        return -t_fake.mean()  # f-GAN §3.2: maximise E_q[T(G(z))] instead


# ----------------------------------------------------------------------------
# Parametrisation I (f-GAN §2.4): T = g_f(v).

@MODELS.register("fgan", "f-GAN, critic outputs v and T = g_f(v) (parametrisation I)")
class FGAN(_FenchelDual):
    def terms(self, v: Tensor) -> tuple[Tensor, Tensor]:
        return self.f.activation(v), self.f.f_star_of_activation(v)  # T = g_f(v), f*(g_f(v))


# ----------------------------------------------------------------------------
# Parametrisation II (lecture, "Divergence minimization II"): T = f'(r), r = p/q.

@MODELS.register("fgan_ratio", "f-GAN, critic outputs a ratio r and T = f'(r) (parametrisation II)")
class FGANRatio(_FenchelDual):
    def __init__(self, divergence: str | Divergence = "jensen_shannon", **kwargs):
        super().__init__(divergence, **kwargs)
        if self.f.name == "total_variation":  # T = f'(r) and f*(T) are constant in v (almost
            # everywhere): both losses have zero gradient, and nothing would train
            raise IgmError("model fgan_ratio cannot train with divergence=total_variation: "
                           "T = f'(r) = sign(r - 1)/2 is piecewise constant, so the critic and "
                           "the generator get zero gradient; use model=fgan (T = tanh(v)/2)")

    def terms(self, v: Tensor) -> tuple[Tensor, Tensor]:
        log_r = v.clamp(-LOG_RATIO_LIMIT, LOG_RATIO_LIMIT)
        r = log_r.exp()
        t = self.f.f_prime(r)  # T = f'(r)
        return t, r * t - self.f.f_of_log(log_r)  # f*(f'(r)) = r f'(r) - f(r)
